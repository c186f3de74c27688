"""Run policies the jobs and assets of several stages share.

- `TRANSIENT_RETRY` (3 retries, 10 s doubling with jitter) is the `op_retry_policy` of the automation jobs
  (landing, review decisions, retraining, nightly evaluation): it applies to each step that has no retry
  policy of its own, which covers the steps that fail transiently — reading the landing zone from S3 and
  DuckDB's single-writer lock in `landing_ingest_job`, loading model weights and tokenizers in `retrain_job`
  and `nightly_eval_job`. Steps that declare their own policy (e.g. `base_model`) keep it. A step that fails
  for a real reason fails 3 more times, which costs minutes, not hours: the delay grows 10 s, 20 s, 40 s.
- Concurrency: training steps belong to the pool `training` (`pool=TRAINING_POOL` on the training assets).
  The instance limits a pool; at most one training step at a time:
      dagster instance concurrency set training 1
  or in dagster.yaml (resources/dagster.yaml):  concurrency: {pools: {default_limit: 1}}
  The retraining runs also carry the run tag `empathy_dag/queue=training` (`settings.RUN_QUEUE_TAG`), which
  the run queue of resources/dagster.yaml limits to one run: a second retraining waits queued instead of
  starting.
- Cost attribution: every sensor and schedule run carries `team`, `cost_center` and `trigger` tags
  (`settings.AutomationSettings.run_tags`), copied into `run_history`.
"""

from __future__ import annotations

from datetime import timedelta

from dagster import (
    Backoff,
    DefaultScheduleStatus,
    FreshnessPolicy,
    Jitter,
    RetryPolicy,
    RunRequest,
    ScheduleDefinition,
    schedule,
)

from empathy_dag.defs.partitions import ALL_EMOTIONS_TAGS

TRAINING_POOL = "training"

TRANSIENT_RETRY = RetryPolicy(max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


def all_emotions_schedule(
    name: str, cron: str, job_name: str, tags: dict, description: str, timezone: str = "UTC"
) -> ScheduleDefinition:
    """A schedule whose runs cover every emotion partition, off until someone turns it on (UI Automation tab
    or `dagster schedule start <name>`). The partition-range tags are reserved, so they go on each RunRequest
    rather than on the schedule definition."""

    @schedule(
        name=name,
        cron_schedule=cron,
        job_name=job_name,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description=description,
    )
    def _schedule(context):
        return RunRequest(tags={**tags, **ALL_EMOTIONS_TAGS})

    return _schedule


# What the UI holds the schedules' products to (the asset's Freshness status, evaluated by the daemon): the
# nightly evaluation starts at 02:00 (evaluate/jobs.py) and the leaderboard it refreshes is due by 06:00; the
# weekly retraining starts Sunday 03:00 (train/jobs.py) and the promotion gate's decision (`promoted_model`)
# is due by 09:00. With the schedules off (the local default) both assets turn Failing once a deadline
# passes, which is the truth: nothing keeps them fresh then.
FRESHNESS_POLICIES: dict[str, FreshnessPolicy] = {
    "leaderboard": FreshnessPolicy.cron(deadline_cron="0 6 * * *", lower_bound_delta=timedelta(hours=4)),
    "promoted_model": FreshnessPolicy.cron(deadline_cron="0 9 * * 0", lower_bound_delta=timedelta(hours=6)),
}
