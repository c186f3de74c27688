"""Jobs, sensors, schedules (and the promotion gate's asset + check), collected by
`empathy_dag.definitions`. Jobs whose assets do not exist yet are left out rather than breaking the
code location; the lists fill in as the stages define their assets."""

from pathlib import Path

from empathy_dag.automation import graph
from empathy_dag.automation.jobs import (
    landing_ingest_job,
    nightly_eval_job,
    retrain_job,
    review_decisions_job,
)
from empathy_dag.automation.promotion import build_promotion_definitions
from empathy_dag.automation.schedules import build_schedules
from empathy_dag.automation.sensors import (
    RUN_HISTORY_SENSORS,
    build_landing_sensor,
    build_retraining_sensor,
    build_review_decisions_sensor,
    build_review_inbox_sensor,
)
from empathy_dag.automation.settings import AutomationSettings
from empathy_dag.warehouse.sql_models import SQL_DIR

SETTINGS = AutomationSettings.from_env()

_landing = landing_ingest_job()
_retrain = retrain_job()
_nightly = nightly_eval_job()
_review = review_decisions_job()

JOBS: list = [j for j in (_landing, _retrain, _nightly, _review) if j is not None]

SENSORS: list = [*RUN_HISTORY_SENSORS]
if _landing is not None:
    SENSORS.append(build_landing_sensor(SETTINGS))
if _review is not None:
    SENSORS.append(build_review_inbox_sensor(SETTINGS))
    if _landing is not None:
        SENSORS.append(build_review_decisions_sensor(SETTINGS))
if _retrain is not None:
    SENSORS.append(build_retraining_sensor(SETTINGS))

SCHEDULES: list = build_schedules(_nightly and _nightly.name, _retrain and _retrain.name, SETTINGS)

# The promotion gate exists once the training stage defines dpo_checkpoint. The lead wires these into
# `Definitions(assets=[..., *automation.ASSETS], asset_checks=automation.ASSET_CHECKS)`.
ASSETS: list = []
ASSET_CHECKS: list = []
if graph.existing(["dpo_checkpoint"]):
    ASSETS, ASSET_CHECKS = build_promotion_definitions(has_leaderboard=(Path(SQL_DIR) / "leaderboard.sql").is_file())
