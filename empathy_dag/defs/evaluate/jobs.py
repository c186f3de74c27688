"""The nightly re-evaluation job and its schedule."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetKey, AssetSelection, define_asset_job

from empathy_dag.defs.promotion.assets import CHECKPOINT_SCORECARD_CHECK
from empathy_dag.defs.run_policies import TRANSIENT_RETRY, all_emotions_schedule
from empathy_dag.defs.selections import EVALUATION, TRAINING_CHECKPOINT_KEYS
from empathy_dag.settings import AutomationSettings

NIGHTLY_EVAL_JOB_NAME = "nightly_eval_job"
# 02:00 every day: re-evaluates the models, the promoted one included, and refreshes the leaderboard, so
# that a metric or evaluation-data change shows up the next morning. Off by default (local profile).
NIGHTLY_EVAL_CRON = "0 2 * * *"

nightly_eval_job = define_asset_job(
    NIGHTLY_EVAL_JOB_NAME,
    # ... and each checkpoint's own "is it better?" check, so the checkpoint's page shows tonight's paired
    # comparison, not the one from the run that trained it (the checkpoint is not re-trained).
    selection=EVALUATION
    | AssetSelection.checks(
        *[AssetCheckKey(AssetKey(k), CHECKPOINT_SCORECARD_CHECK) for k in TRAINING_CHECKPOINT_KEYS]
    ),
    description="Re-evaluate the models (the promoted one included), refresh the leaderboard and the "
    "checkpoints' scorecard checks.",
    op_retry_policy=TRANSIENT_RETRY,
)


def build_nightly_eval_schedule(settings: AutomationSettings | None = None):
    settings = settings or AutomationSettings.from_env()
    return all_emotions_schedule(
        "nightly_eval_schedule",
        NIGHTLY_EVAL_CRON,
        NIGHTLY_EVAL_JOB_NAME,
        settings.run_tags("schedule:nightly_eval"),
        "Nightly evaluation of the promoted model (and the other models) + leaderboard.",
    )
