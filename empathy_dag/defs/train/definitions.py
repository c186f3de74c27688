"""The train stage's definitions: the checkpoints, the retraining job, its sensor and its weekly schedule."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.train import assets
from empathy_dag.defs.train.jobs import build_weekly_retrain_schedule, retrain_job
from empathy_dag.defs.train.sensors import build_retraining_sensor
from empathy_dag.settings import AUTOMATION_SETTINGS

defs = Definitions(
    assets=load_assets_from_modules([assets]),
    jobs=[retrain_job],
    sensors=[build_retraining_sensor(AUTOMATION_SETTINGS)],
    schedules=[build_weekly_retrain_schedule(AUTOMATION_SETTINGS)],
)
