"""Sensors: the landing zone, the review inbox, run history, and retraining on new training pairs."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_status_sensor,
    sensor,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from empathy_dag.automation import graph
from empathy_dag.automation.jobs import LANDING_JOB_NAME, RETRAIN_JOB_NAME, REVIEW_JOB_NAME
from empathy_dag.automation.landing import (
    REVIEWS_SUBFOLDER,
    LandingCursor,
    LandingDecision,
    LocalLandingZone,
    S3LandingZone,
    contiguous_ranges,
    run_key_for,
    scan_landing_zone,
    scan_review_inbox,
    utc_now,
)
from empathy_dag.automation.retraining import count_unseen_train_pairs, read_train_pair_ids
from empathy_dag.automation.settings import (
    LANDING_EMOTIONS_TAG,
    LANDING_FILE_TAG,
    LANDING_SHA_TAG,
    RETRAIN_FILES_TAG,
    RETRAIN_FINGERPRINT_TAG,
    RETRAIN_NEW_PAIRS_TAG,
    REVIEW_FILES_TAG,
    AutomationSettings,
)
from empathy_dag.automation.tables import append_landing_log, upsert
from empathy_dag.partitions import ALL_EMOTIONS_TAGS
from empathy_dag.resources import CorpusSources
from empathy_dag.review.decisions import changed_emotions
from empathy_dag.taxonomy import default_taxonomy
from empathy_dag.warehouse.resource import Warehouse


def _range_request(rng: tuple[str, str], run_key: str, tags: dict, asset_selection=None) -> RunRequest:
    if rng[0] == rng[1]:
        return RunRequest(run_key=run_key, job_name=LANDING_JOB_NAME, partition_key=rng[0], tags=tags,
                          asset_selection=asset_selection)
    return RunRequest(
        run_key=run_key, job_name=LANDING_JOB_NAME, asset_selection=asset_selection,
        tags={**tags, ASSET_PARTITION_RANGE_START_TAG: rng[0], ASSET_PARTITION_RANGE_END_TAG: rng[1]},
    )


def emotion_run_requests(touched: list[str], *, source: str, run_key: str, tags: dict,
                         whole_job: bool) -> list[RunRequest]:
    """Runs of the landing job for a change to the `touched` emotions of `source`: one run per
    contiguous range of the touched emotions, over the whole job (`whole_job`: a new corpus file) or
    over just the assets the change reaches; then, for assets whose partition mapping reaches further
    (preference pairs of the emotions whose opposite was touched), one run per extra range over just
    those assets. The landing job's run queue (limit 1, FIFO) runs them in this order, so the extra
    runs read the touched emotions already rebuilt."""
    order = default_taxonomy().labels
    reach = {k: parts for k, parts in graph.affected_partitions(touched, source=source).items() if parts}
    main_selection = None if whole_job else [AssetKey(k) for k in reach]
    ranges = contiguous_ranges(touched, order)
    requests = [_range_request(r, run_key_for(run_key, r, len(ranges)), tags, main_selection) for r in ranges]
    spill: dict[frozenset, list[str]] = {}
    for key, parts in reach.items():
        extra = frozenset(parts - set(touched))
        if extra:
            spill.setdefault(extra, []).append(key)
    for extra, keys in sorted(spill.items(), key=lambda kv: sorted(kv[0])):
        selection = [AssetKey(k) for k in keys]
        for rng in contiguous_ranges(sorted(extra), order):
            requests.append(_range_request(rng, f"{run_key}:spill:{rng[0]}..{rng[1]}", tags, selection))
    return requests


def landing_run_requests(decision: LandingDecision, settings: AutomationSettings) -> list[RunRequest]:
    """The runs a landing event asks for: the emotions of a new content, plus those of the content a
    replaced or deleted file held (none for a rejected file, a copy, a skipped path)."""
    if not decision.rebuild:
        return []
    tags = settings.run_tags(
        "landing_zone",
        **{LANDING_FILE_TAG: decision.file.name[:200], LANDING_SHA_TAG: decision.sha256,
           LANDING_EMOTIONS_TAG: ",".join(decision.rebuild),
           # Run monitoring fails a landing run past this (resources/dagster.yaml): a run whose worker
           # died stays STARTED otherwise, and the landing queue (limit 1) behind it never moves.
           "dagster/max_runtime": os.environ.get("EMPATHY_DAG_LANDING_MAX_RUNTIME_S", "14400")},
    )
    return emotion_run_requests(decision.rebuild, source="corpus_rows",
                                run_key=decision.run_key_base or decision.sha256, tags=tags, whole_job=True)


def _landing_zone(corpus_sources: CorpusSources, settings: AutomationSettings, subfolder: str = ""):
    """The S3 prefix of the aws profile (`corpus_sources.landing_s3_uri`, which `ingest_corpus` syncs
    into landing_dir before reading) or of EMPATHY_DAG_LANDING_S3_URI; else the local folder. With
    `subfolder`, that subfolder of it (the review inbox)."""
    uri = getattr(corpus_sources, "landing_s3_uri", "") or settings.landing_s3_uri
    if uri:
        endpoint = getattr(corpus_sources, "endpoint_url", "") or settings.s3_endpoint_url
        return S3LandingZone.from_uri(f"{uri.rstrip('/')}/{subfolder}/" if subfolder else uri, endpoint)
    if subfolder:  # the review inbox: its readers take top-level files only
        return LocalLandingZone(Path(corpus_sources.landing_dir) / subfolder, max_depth=1)
    return LocalLandingZone(Path(corpus_sources.landing_dir))


def build_landing_sensor(
    settings: AutomationSettings | None = None,
    name: str = "landing_zone_sensor",
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> SensorDefinition:
    settings = settings or AutomationSettings.from_env()

    @sensor(
        name=name,
        job_name=LANDING_JOB_NAME,
        minimum_interval_seconds=settings.landing_interval_s,
        default_status=default_status,
        description="Validates new files of the landing zone and rebuilds only the emotions they touch. "
        "run_key = content sha256; outcomes in the warehouse table landing_log.",
    )
    def _landing_sensor(context: SensorEvaluationContext, corpus_sources: CorpusSources, warehouse: Warehouse):
        zone = _landing_zone(corpus_sources, settings)
        cursor = LandingCursor.load(context.cursor)
        decisions, new_cursor = scan_landing_zone(
            zone, cursor, taxonomy=default_taxonomy(), limits=corpus_sources.limits(),
            settle_seconds=settings.settle_seconds,
        )
        if not decisions:
            return SensorResult(skip_reason=SkipReason("no new landing files"), cursor=new_cursor.dump())
        requests = []
        for d in decisions:
            reqs = landing_run_requests(d, settings)
            d.run_keys = [r.run_key for r in reqs]
            requests.extend(reqs)
            context.log.info(f"{d.file.name}: {d.outcome}, emotions={d.emotions}, reasons={d.reasons}")
        # Logged before the cursor moves: a crash here replays the tick, and the keyed upsert and the
        # run keys make the replay a no-op.
        detected = utc_now()
        with warehouse.connect() as conn:
            append_landing_log(conn, [d.log_row(detected) for d in decisions])
        return SensorResult(run_requests=requests, cursor=new_cursor.dump())

    return _landing_sensor


# ---------------------------------------------------------------- review decisions
#
# Two steps, because which emotions a decision file touches is only known once its item ids are
# resolved against the curated dialogues, which is what `review_decisions` does:
# 1. review_inbox_sensor: a decision file added, replaced or removed in <landing>/reviews/ -> one run of
#    review_decisions_job (the asset re-reads the whole inbox).
# 2. review_decisions_sensor: review_decisions' per-emotion fingerprints differ from those it last acted
#    on -> runs of the landing job over reviewed_dialogues and what it feeds, for those emotions only.


def build_review_inbox_sensor(
    settings: AutomationSettings | None = None,
    name: str = "review_inbox_sensor",
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> SensorDefinition:
    settings = settings or AutomationSettings.from_env()

    @sensor(
        name=name,
        job_name=REVIEW_JOB_NAME,
        minimum_interval_seconds=settings.landing_interval_s,
        default_status=default_status,
        description="Re-reads the review decisions when a file of <landing>/reviews/ is added, replaced or "
        "removed. run_key = a hash of the change.",
    )
    def _review_inbox_sensor(context: SensorEvaluationContext, corpus_sources: CorpusSources):
        zone = _landing_zone(corpus_sources, settings, REVIEWS_SUBFOLDER)
        change, cursor = scan_review_inbox(zone, LandingCursor.load(context.cursor),
                                           settle_seconds=settings.settle_seconds)
        if change is None:
            return SensorResult(skip_reason=SkipReason("no new review decision files"), cursor=cursor.dump())
        context.log.info(f"review inbox: changed {sorted(change.changed)}, removed {change.removed}")
        files = json.dumps({"changed": change.changed, "removed": change.removed}, sort_keys=True)
        tags = settings.run_tags("review_inbox", **{REVIEW_FILES_TAG: files[:1000]})
        return SensorResult(run_requests=[RunRequest(run_key=change.run_key, tags=tags)], cursor=cursor.dump())

    return _review_inbox_sensor


def build_review_decisions_sensor(
    settings: AutomationSettings | None = None,
    name: str = "review_decisions_sensor",
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> SensorDefinition:
    """The cursor holds the per-emotion decision fingerprints last acted on (none at first, so decisions
    that exist when the sensor is turned on are applied once). Comparing states rather than reacting to
    each materialization means that several review runs between two ticks still rebuild every emotion
    that any of them changed, and a run that changed nothing rebuilds nothing."""
    settings = settings or AutomationSettings.from_env()

    @sensor(
        name=name,
        job_name=LANDING_JOB_NAME,
        minimum_interval_seconds=settings.landing_interval_s,
        default_status=default_status,
        description="Rebuilds reviewed_dialogues (and the splits and pairs it feeds) for the emotions whose "
        "review decisions changed.",
    )
    def _review_decisions_sensor(context: SensorEvaluationContext):
        event = context.instance.get_latest_materialization_event(AssetKey("review_decisions"))
        if event is None or event.asset_materialization is None:
            return SkipReason("review_decisions not materialized yet")
        entry = event.asset_materialization.metadata.get("decision_fingerprints")
        after = dict(entry.value) if entry is not None else {}
        before = json.loads(context.cursor) if context.cursor else {}
        emotions = changed_emotions(before, after)
        if not emotions:
            return SensorResult(skip_reason=SkipReason("no emotion's review decisions changed"),
                                cursor=json.dumps(after, sort_keys=True))
        state = hashlib.sha256(json.dumps([before, after], sort_keys=True).encode()).hexdigest()[:32]
        tags = settings.run_tags("review_decisions", **{LANDING_EMOTIONS_TAG: ",".join(emotions)})
        requests = emotion_run_requests(emotions, source="review_decisions", run_key=f"reviewed:{state}",
                                        tags=tags, whole_job=False)
        context.log.info(f"review decisions changed for {emotions}: {len(requests)} runs")
        return SensorResult(run_requests=requests, cursor=json.dumps(after, sort_keys=True))

    return _review_decisions_sensor


# ---------------------------------------------------------------- run history


def _step_error(event) -> str:
    """`step: root cause message` (the user's exception, not Dagster's wrapper around it)."""
    err = getattr(event.event_specific_data, "error", None)
    while err is not None and err.cause is not None:
        err = err.cause
    message = err.message.strip().splitlines()[0][:300] if err is not None and err.message else ""
    return f"{event.step_key}: {message}"


def run_history_row(instance, run, status: str) -> dict:
    record = instance.get_run_record_by_id(run.run_id)
    start = getattr(record, "start_time", None)
    end = getattr(record, "end_time", None)
    materializations = instance.get_records_for_run(
        run_id=run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=10_000
    ).records
    assets, partitions = set(), set()
    for rec in materializations:
        event = rec.event_log_entry.dagster_event
        if event is None:
            continue
        assets.add(event.asset_key.to_user_string())
        if event.partition:
            partitions.add(event.partition)
    error = None
    if status == "FAILURE":
        failures = instance.get_records_for_run(
            run_id=run.run_id, of_type=DagsterEventType.STEP_FAILURE, limit=5
        ).records
        error = "; ".join(_step_error(r.event_log_entry.dagster_event) for r in failures) or None

    def ts(v):
        return datetime.fromtimestamp(v, UTC).replace(tzinfo=None) if v else None

    return {
        "run_id": run.run_id, "job_name": run.job_name, "status": status,
        "started_at": ts(start), "ended_at": ts(end),
        "duration_s": (end - start) if start and end else None,
        "assets": sorted(assets), "partitions": sorted(partitions),
        "n_materializations": len(materializations),
        "trigger": (run.tags or {}).get("trigger"),
        "tags": {k: v for k, v in (run.tags or {}).items()},
        "error": error,
    }


def _build_run_history_sensor(status: DagsterRunStatus, name: str):
    @run_status_sensor(
        run_status=status, name=name, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
        description=f"Writes one row per {status.value.lower()} run into the warehouse table run_history.",
    )
    def _sensor(context: RunStatusSensorContext, warehouse: Warehouse):
        row = run_history_row(context.instance, context.dagster_run, status.value)
        with warehouse.connect() as conn:
            upsert(conn, "run_history", [row])

    return _sensor


run_history_success_sensor = _build_run_history_sensor(DagsterRunStatus.SUCCESS, "run_history_success_sensor")
run_history_failure_sensor = _build_run_history_sensor(DagsterRunStatus.FAILURE, "run_history_failure_sensor")
run_history_canceled_sensor = _build_run_history_sensor(DagsterRunStatus.CANCELED, "run_history_canceled_sensor")
RUN_HISTORY_SENSORS = [run_history_success_sensor, run_history_failure_sensor, run_history_canceled_sensor]


# ---------------------------------------------------------------- retraining


def _landing_files_since(instance, since: float | None) -> list[str]:
    """Landing files whose runs succeeded after the checkpoint was trained: why new pairs exist."""
    from dagster import RunsFilter

    runs = instance.get_runs(filters=RunsFilter(job_name=LANDING_JOB_NAME, statuses=[DagsterRunStatus.SUCCESS]),
                             limit=200)
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
        name=name, job_name=job_name, minimum_interval_seconds=settings.retrain_interval_s,
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
            **{RETRAIN_NEW_PAIRS_TAG: str(unseen), RETRAIN_FINGERPRINT_TAG: fingerprint,
               RETRAIN_FILES_TAG: json.dumps(files)[:1000]},
        )
        return RunRequest(run_key=f"retrain:{fingerprint}", tags={**tags, **ALL_EMOTIONS_TAGS})

    return _retraining_sensor
