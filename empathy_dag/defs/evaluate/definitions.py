"""The evaluate stage's definitions: the metric assets, the nightly evaluation job and its schedule."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.evaluate import assets
from empathy_dag.defs.evaluate.jobs import build_nightly_eval_schedule, nightly_eval_job
from empathy_dag.settings import AUTOMATION_SETTINGS

defs = Definitions(
    assets=load_assets_from_modules([assets]),
    jobs=[nightly_eval_job],
    schedules=[build_nightly_eval_schedule(AUTOMATION_SETTINGS)],
)
