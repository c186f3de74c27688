"""The retraining job and the weekly schedule that runs it."""

from __future__ import annotations

from dagster import define_asset_job

from empathy_dag.defs.run_policies import TRAINING_POOL, TRANSIENT_RETRY, all_emotions_schedule
from empathy_dag.defs.selections import RETRAINING
from empathy_dag.settings import RUN_QUEUE_TAG, AutomationSettings

RETRAIN_JOB_NAME = "retrain_job"
# 03:00 on Sundays: retrains SFT + DPO on the current training data and runs the promotion gate, even when
# the retraining sensor's threshold was not reached. Off by default (local profile).
WEEKLY_RETRAIN_CRON = "0 3 * * 0"

retrain_job = define_asset_job(
    RETRAIN_JOB_NAME,
    selection=RETRAINING,
    description="SFT, DPO, evaluation and the promotion gate on the current training data.",
    op_retry_policy=TRANSIENT_RETRY,
    run_tags={RUN_QUEUE_TAG: TRAINING_POOL},
)


def build_weekly_retrain_schedule(settings: AutomationSettings | None = None):
    settings = settings or AutomationSettings.from_env()
    return all_emotions_schedule(
        "weekly_retrain_schedule",
        WEEKLY_RETRAIN_CRON,
        RETRAIN_JOB_NAME,
        settings.run_tags("schedule:weekly_retrain"),
        "Weekly SFT + DPO retraining, evaluation and promotion gate.",
    )
