"""The review stage's sensors: the decision inbox (<landing>/reviews/) and the per-emotion rebuild that
follows a change of decisions."""

from __future__ import annotations

import hashlib
import json

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from empathy_dag.defs.ingest.jobs import LANDING_JOB_NAME
from empathy_dag.defs.ingest.sensors import emotion_run_requests, landing_zone
from empathy_dag.defs.review.jobs import REVIEW_JOB_NAME
from empathy_dag.ingest.landing import REVIEWS_SUBFOLDER, LandingCursor, scan_review_inbox
from empathy_dag.resources import CorpusSources
from empathy_dag.review.decisions import changed_emotions
from empathy_dag.settings import LANDING_EMOTIONS_TAG, REVIEW_FILES_TAG, AutomationSettings

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
        zone = landing_zone(corpus_sources, settings, REVIEWS_SUBFOLDER)
        change, cursor = scan_review_inbox(
            zone, LandingCursor.load(context.cursor), settle_seconds=settings.settle_seconds
        )
        if change is None:
            return SensorResult(skip_reason=SkipReason("no new review decision files"), cursor=cursor.dump())
        context.log.info(f"review inbox: changed {sorted(change.changed)}, removed {change.removed}")
        files = json.dumps({"changed": change.changed, "removed": change.removed}, sort_keys=True)
        tags = settings.run_tags("review_inbox", **{REVIEW_FILES_TAG: files[:1000]})
        return SensorResult(
            run_requests=[RunRequest(run_key=change.run_key, tags=tags)], cursor=cursor.dump()
        )

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
            return SensorResult(
                skip_reason=SkipReason("no emotion's review decisions changed"),
                cursor=json.dumps(after, sort_keys=True),
            )
        state = hashlib.sha256(json.dumps([before, after], sort_keys=True).encode()).hexdigest()[:32]
        tags = settings.run_tags("review_decisions", **{LANDING_EMOTIONS_TAG: ",".join(emotions)})
        requests = emotion_run_requests(
            context.repository_def.asset_graph,
            emotions,
            source="review_decisions",
            run_key=f"reviewed:{state}",
            tags=tags,
            whole_job=False,
        )
        context.log.info(f"review decisions changed for {emotions}: {len(requests)} runs")
        return SensorResult(run_requests=requests, cursor=json.dumps(after, sort_keys=True))

    return _review_decisions_sensor
