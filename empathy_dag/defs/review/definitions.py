"""The review stage's definitions: the assets, the review decisions job and the two review sensors."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.review import assets
from empathy_dag.defs.review.jobs import review_decisions_job
from empathy_dag.defs.review.sensors import build_review_decisions_sensor, build_review_inbox_sensor
from empathy_dag.settings import AUTOMATION_SETTINGS

defs = Definitions(
    assets=load_assets_from_modules([assets]),
    jobs=[review_decisions_job],
    sensors=[
        build_review_inbox_sensor(AUTOMATION_SETTINGS),
        build_review_decisions_sensor(AUTOMATION_SETTINGS),
    ],
)
