"""Operations: the run-history sensors."""

from dagster import Definitions

from empathy_dag.defs.ops.sensors import RUN_HISTORY_SENSORS

defs = Definitions(sensors=RUN_HISTORY_SENSORS)
