"""Jobs started by the automation layer, and the run policies they carry.

Run policies (where they are attached):
- `TRANSIENT_RETRY` (3 retries, 10 s doubling with jitter) is the `op_retry_policy` of every job here:
  it applies to each step that has no retry policy of its own, which covers the steps that fail
  transiently — reading the landing zone from S3 and DuckDB's single-writer lock in `landing_ingest_job`,
  loading model weights and tokenizers in `retrain_job` and `nightly_eval_job`. Steps that declare their
  own policy (e.g. `base_model`) keep it. A step that fails for a real reason fails 3 more times, which
  costs minutes, not hours: the delay grows 10 s, 20 s, 40 s.
- Concurrency: training steps belong to the pool `training` (declared with `pool="training"` on the
  training assets). The instance limits a pool; at most one training step at a time:
      dagster instance concurrency set training 1
  or in dagster.yaml (resources/dagster.yaml):  concurrency: {pools: {default_limit: 1}}
  The retraining runs also carry the run tag `empathy_dag/queue=training`, which the run queue of
  resources/dagster.yaml limits to one run: a second retraining waits queued instead of starting.
- Cost attribution: every sensor and schedule run carries `team`, `cost_center` and `trigger` tags
  (`AutomationSettings.run_tags`), copied into `run_history`.
"""

from __future__ import annotations

from dagster import AssetCheckKey, AssetKey, AssetSelection, Backoff, Jitter, RetryPolicy, define_asset_job

from empathy_dag.automation import graph
from empathy_dag.automation.promotion import CHECKPOINT_SCORECARD_CHECK
from empathy_dag.automation.settings import RUN_QUEUE_TAG

TRAINING_POOL = "training"

TRANSIENT_RETRY = RetryPolicy(max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)

LANDING_JOB_NAME = "landing_ingest_job"
REVIEW_JOB_NAME = "review_decisions_job"
REVIEW_KEYS = ("review_decisions", "review_quarantine", "review_agreement", "reviewer_pair_agreement",
               "reviewer_acceptance")
RETRAIN_JOB_NAME = "retrain_job"
NIGHTLY_EVAL_JOB_NAME = "nightly_eval_job"


def landing_ingest_job():
    keys = graph.landing_job_keys()
    if not keys:
        return None
    return define_asset_job(
        LANDING_JOB_NAME,
        selection=AssetSelection.assets(*keys),
        description="Ingest the corpus and rebuild the per-emotion data assets of the emotions a landing "
        "file touches (the sensor sets the partition or partition range).",
        op_retry_policy=TRANSIENT_RETRY,
        run_tags={RUN_QUEUE_TAG: "landing"},
    )


def review_decisions_job():
    keys = graph.existing(REVIEW_KEYS)
    if "review_decisions" not in keys:
        return None
    return define_asset_job(
        REVIEW_JOB_NAME,
        selection=AssetSelection.assets(*keys),
        description="Re-read every decision file of <landing>/reviews/ into review_decisions (and the "
        "agreement tables); review_decisions_sensor then rebuilds the emotions whose decisions changed.",
        op_retry_policy=TRANSIENT_RETRY,
        # Same queue as the landing runs: both write the warehouse, and the reviewed_dialogues runs that
        # follow must see this run's table.
        run_tags={RUN_QUEUE_TAG: "landing"},
    )


def retrain_job():
    keys = graph.training_job_selection_keys()
    if not keys:
        return None
    return define_asset_job(
        RETRAIN_JOB_NAME,
        selection=AssetSelection.assets(*keys) | AssetSelection.assets(*graph.existing(graph.TRAINING_KEYS)).downstream(),
        description="SFT, DPO, evaluation and the promotion gate on the current training data.",
        op_retry_policy=TRANSIENT_RETRY,
        run_tags={RUN_QUEUE_TAG: TRAINING_POOL},
    )


def nightly_eval_job():
    keys = graph.evaluate_stage_keys()
    if not keys:
        return None
    return define_asset_job(
        NIGHTLY_EVAL_JOB_NAME,
        # The evaluation stage and what reads it (leaderboard SQL models, promotion): never training.
        selection=AssetSelection.assets(*keys).downstream()
        - AssetSelection.assets(*graph.existing(graph.TRAINING_KEYS))
        # ... and each checkpoint's own "is it better?" check, so the checkpoint's page shows tonight's
        # paired comparison, not the one from the run that trained it (the checkpoint is not re-trained).
        | AssetSelection.checks(*[AssetCheckKey(AssetKey(k), CHECKPOINT_SCORECARD_CHECK)
                                  for k in graph.existing(graph.TRAINING_KEYS)]),
        description="Re-evaluate the models (the promoted one included), refresh the leaderboard and the "
        "checkpoints' scorecard checks.",
        op_retry_policy=TRANSIENT_RETRY,
    )
