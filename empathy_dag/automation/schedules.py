"""Schedules. Both are defined and off by default in the local profile (`DefaultScheduleStatus.STOPPED`):
turn them on in the UI (Automation tab) or with `dagster schedule start <name>`.

- `nightly_eval_schedule` (02:00 every day): re-evaluates the models, the promoted one included, and
  refreshes the leaderboard, so that a metric or evaluation-data change shows up the next morning.
- `weekly_retrain_schedule` (03:00 on Sundays): retrains SFT + DPO on the current training data and runs
  the promotion gate, even when the retraining sensor's threshold was not reached."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition

from empathy_dag.automation.settings import AutomationSettings

NIGHTLY_EVAL_CRON = "0 2 * * *"
WEEKLY_RETRAIN_CRON = "0 3 * * 0"


def build_schedules(eval_job_name: str | None, retrain_job_name: str | None,
                    settings: AutomationSettings | None = None, timezone: str = "UTC") -> list[ScheduleDefinition]:
    settings = settings or AutomationSettings.from_env()
    out = []
    if eval_job_name:
        out.append(ScheduleDefinition(
            name="nightly_eval_schedule", cron_schedule=NIGHTLY_EVAL_CRON, job_name=eval_job_name,
            execution_timezone=timezone, default_status=DefaultScheduleStatus.STOPPED,
            tags=settings.run_tags("schedule:nightly_eval"),
            description="Nightly evaluation of the promoted model (and the other models) + leaderboard.",
        ))
    if retrain_job_name:
        out.append(ScheduleDefinition(
            name="weekly_retrain_schedule", cron_schedule=WEEKLY_RETRAIN_CRON, job_name=retrain_job_name,
            execution_timezone=timezone, default_status=DefaultScheduleStatus.STOPPED,
            tags=settings.run_tags("schedule:weekly_retrain"),
            description="Weekly SFT + DPO retraining, evaluation and promotion gate.",
        ))
    return out
