"""Schedules. Both are defined and off by default in the local profile (`DefaultScheduleStatus.STOPPED`):
turn them on in the UI (Automation tab) or with `dagster schedule start <name>`.

- `nightly_eval_schedule` (02:00 every day): re-evaluates the models, the promoted one included, and
  refreshes the leaderboard, so that a metric or evaluation-data change shows up the next morning.
- `weekly_retrain_schedule` (03:00 on Sundays): retrains SFT + DPO on the current training data and runs
  the promotion gate, even when the retraining sensor's threshold was not reached."""

from __future__ import annotations

from datetime import timedelta

from dagster import DefaultScheduleStatus, FreshnessPolicy, RunRequest, ScheduleDefinition, schedule

from empathy_dag.automation.settings import AutomationSettings
from empathy_dag.partitions import ALL_EMOTIONS_TAGS

NIGHTLY_EVAL_CRON = "0 2 * * *"
WEEKLY_RETRAIN_CRON = "0 3 * * 0"

# What the UI holds the schedules' products to (the asset's Freshness status, evaluated by the daemon):
# the nightly evaluation starts at 02:00 and the leaderboard it refreshes is due by 06:00; the weekly
# retraining starts Sunday 03:00 and the promotion gate's decision (`promoted_model`) is due by 09:00.
# With the schedules off (the local default) both assets turn Failing once a deadline passes, which is
# the truth: nothing keeps them fresh then.
FRESHNESS_POLICIES: dict[str, FreshnessPolicy] = {
    "leaderboard": FreshnessPolicy.cron(deadline_cron="0 6 * * *", lower_bound_delta=timedelta(hours=4)),
    "promoted_model": FreshnessPolicy.cron(deadline_cron="0 9 * * 0", lower_bound_delta=timedelta(hours=6)),
}


def _all_emotions_schedule(name: str, cron: str, job_name: str, tags: dict, timezone: str,
                           description: str) -> ScheduleDefinition:
    """A schedule whose runs cover every emotion partition. The partition-range tags are reserved, so
    they go on each RunRequest rather than on the schedule definition."""

    @schedule(name=name, cron_schedule=cron, job_name=job_name, execution_timezone=timezone,
              default_status=DefaultScheduleStatus.STOPPED, description=description)
    def _schedule(context):
        return RunRequest(tags={**tags, **ALL_EMOTIONS_TAGS})

    return _schedule


def build_schedules(eval_job_name: str | None, retrain_job_name: str | None,
                    settings: AutomationSettings | None = None, timezone: str = "UTC") -> list[ScheduleDefinition]:
    settings = settings or AutomationSettings.from_env()
    out = []
    if eval_job_name:
        out.append(_all_emotions_schedule(
            "nightly_eval_schedule", NIGHTLY_EVAL_CRON, eval_job_name, settings.run_tags("schedule:nightly_eval"),
            timezone, "Nightly evaluation of the promoted model (and the other models) + leaderboard.",
        ))
    if retrain_job_name:
        out.append(_all_emotions_schedule(
            "weekly_retrain_schedule", WEEKLY_RETRAIN_CRON, retrain_job_name,
            settings.run_tags("schedule:weekly_retrain"), timezone,
            "Weekly SFT + DPO retraining, evaluation and promotion gate.",
        ))
    return out
