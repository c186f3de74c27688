"""The landing job: ingest, then the per-emotion data assets of the emotions a landing file touches (the
landing sensor sets the partition or partition range of each run)."""

from __future__ import annotations

from dagster import define_asset_job

from empathy_dag.defs.run_policies import TRANSIENT_RETRY
from empathy_dag.defs.selections import LANDING_DATA
from empathy_dag.settings import RUN_QUEUE_TAG

LANDING_JOB_NAME = "landing_ingest_job"

landing_ingest_job = define_asset_job(
    LANDING_JOB_NAME,
    selection=LANDING_DATA,
    description="Ingest the corpus and rebuild the per-emotion data assets of the emotions a landing "
    "file touches (the sensor sets the partition or partition range).",
    op_retry_policy=TRANSIENT_RETRY,
    run_tags={RUN_QUEUE_TAG: "landing"},
)
