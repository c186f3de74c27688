"""The review decisions job: re-read the whole decision inbox."""

from __future__ import annotations

from dagster import define_asset_job

from empathy_dag.defs.run_policies import TRANSIENT_RETRY
from empathy_dag.defs.selections import REVIEW_DECISION_TABLES
from empathy_dag.settings import RUN_QUEUE_TAG

REVIEW_JOB_NAME = "review_decisions_job"

review_decisions_job = define_asset_job(
    REVIEW_JOB_NAME,
    selection=REVIEW_DECISION_TABLES,
    description="Re-read every decision file of <landing>/reviews/ into review_decisions (and the "
    "agreement tables); review_decisions_sensor then rebuilds the emotions whose decisions changed.",
    op_retry_policy=TRANSIENT_RETRY,
    # Same queue as the landing runs: both write the warehouse, and the reviewed_dialogues runs that
    # follow must see this run's table.
    run_tags={RUN_QUEUE_TAG: "landing"},
)
