"""The ingest stage's definitions: the assets, the landing job and the landing-zone sensor."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.ingest import assets
from empathy_dag.defs.ingest.jobs import landing_ingest_job
from empathy_dag.defs.ingest.sensors import build_landing_sensor
from empathy_dag.settings import AUTOMATION_SETTINGS

defs = Definitions(
    assets=load_assets_from_modules([assets]),
    jobs=[landing_ingest_job],
    sensors=[build_landing_sensor(AUTOMATION_SETTINGS)],
)
