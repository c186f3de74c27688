"""Metric functions of the evaluation stage. Each is pure (lists in, numbers out) and importable
without Dagster; the assets in `empathy_dag.defs.evaluate.assets` only load models once and write rows."""
