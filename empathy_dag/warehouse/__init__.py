"""Warehouse stage: the DuckDB file that holds tables and metric rows, and the dbt-like SQL models."""
