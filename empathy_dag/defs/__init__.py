"""The definitions layer: one folder per stage, each owning that stage's assets, checks, jobs, sensors,
schedules and resources, and exposing them as one `Definitions` in its `definitions.py`.
`empathy_dag.definitions` merges the stages (`Definitions.merge`) and adds the profile's resources.

The logic these call lives one layer down, in the Dagster-free stage packages (`empathy_dag.ingest`,
`empathy_dag.train`, ...): a module here may import them, never the other way round."""
