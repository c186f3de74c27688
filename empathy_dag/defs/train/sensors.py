"""Retraining on new training pairs."""

from __future__ import annotations

import json

from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from empathy_dag.defs.ingest.jobs import LANDING_JOB_NAME
from empathy_dag.defs.partitions import ALL_EMOTIONS_TAGS
from empathy_dag.defs.train.jobs import RETRAIN_JOB_NAME
from empathy_dag.defs.warehouse.resource import Warehouse
from empathy_dag.settings import (
    LANDING_FILE_TAG,
    RETRAIN_FILES_TAG,
    RETRAIN_FINGERPRINT_TAG,
    RETRAIN_NEW_PAIRS_TAG,
    AutomationSettings,
)
from empathy_dag.train.retraining import count_unseen_train_pairs, read_train_pair_ids


def _landing_files_since(instance, since: float | None) -> list[str]:
    """Landing files whose runs succeeded after the checkpoint was trained: why new pairs exist."""
    runs = instance.get_runs(
        filters=RunsFilter(job_name=LANDING_JOB_NAME, statuses=[DagsterRunStatus.SUCCESS]), limit=200
    )
    files = []
    for run in runs:
        record = instance.get_run_record_by_id(run.run_id)
        if since is None or (record and record.end_time and record.end_time > since):
            name = run.tags.get(LANDING_FILE_TAG)
            if name and name not in files:
                files.append(name)
    return sorted(files)


def build_retraining_sensor(
    settings: AutomationSettings | None = None,
    name: str = "retraining_sensor",
    job_name: str = RETRAIN_JOB_NAME,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    """Launches retraining when the train pairs that the latest dpo_checkpoint has not seen reach the
    threshold. The comparison uses data versions, not `AutomationCondition.eager()` (which re-fires
    without a data change, dagster#22850/#25439): the checkpoint's materialization records
    `n_train_pairs` and `pairs_fingerprint`; the run_key is the current fingerprint, so one state of
    the training data starts at most one retraining, whatever the number of ticks."""
    settings = settings or AutomationSettings.from_env()

    @sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=settings.retrain_interval_s,
        default_status=default_status,
        description=f"Retrains (SFT + DPO + evaluation + promotion gate) when at least "
        f"{settings.retrain_min_new_pairs} train pairs are new to the current dpo_checkpoint.",
    )
    def _retraining_sensor(context: SensorEvaluationContext, warehouse: Warehouse):
        pair_ids = read_train_pair_ids(warehouse.parquet_base_dir)
        if not pair_ids:
            return SkipReason("no preference_pairs written yet")
        event = context.instance.get_latest_materialization_event(AssetKey("dpo_checkpoint"))
        metadata, trained_at = {}, None
        if event is not None and event.asset_materialization is not None:
            metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
            trained_at = event.timestamp
        unseen, fingerprint = count_unseen_train_pairs(pair_ids, metadata)
        if unseen < settings.retrain_min_new_pairs:
            return SkipReason(f"{unseen} new train pairs, threshold {settings.retrain_min_new_pairs}")
        files = _landing_files_since(context.instance, trained_at)
        tags = settings.run_tags(
            "new_training_pairs",
            **{
                RETRAIN_NEW_PAIRS_TAG: str(unseen),
                RETRAIN_FINGERPRINT_TAG: fingerprint,
                RETRAIN_FILES_TAG: json.dumps(files)[:1000],
            },
        )
        return RunRequest(run_key=f"retrain:{fingerprint}", tags={**tags, **ALL_EMOTIONS_TAGS})

    return _retraining_sensor
