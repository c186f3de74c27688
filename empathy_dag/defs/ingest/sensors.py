"""The landing-zone sensor: validates new files of the landing zone and asks for runs of the landing job
over just the emotions each file touches (and, through the pairs' opposite-emotion mapping, the emotions
that read them). Which assets and partitions a change reaches is read from the asset graph Dagster hands
the sensor (`context.repository_def.asset_graph`), resolved against the landing job's selection."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

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
from empathy_dag.defs.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, emotion_partitions
from empathy_dag.defs.selections import INGEST_STEP_KEYS, LANDING_DATA
from empathy_dag.defs.warehouse.resource import Warehouse
from empathy_dag.ingest.landing import (
    LandingCursor,
    LandingDecision,
    LocalLandingZone,
    S3LandingZone,
    contiguous_ranges,
    run_key_for,
    scan_landing_zone,
    utc_now,
)
from empathy_dag.resources import CorpusSources
from empathy_dag.settings import LANDING_EMOTIONS_TAG, LANDING_FILE_TAG, LANDING_SHA_TAG, AutomationSettings
from empathy_dag.taxonomy import default_taxonomy
from empathy_dag.warehouse.tables import append_landing_log


def landing_partitioned_keys(asset_graph) -> list[AssetKey]:
    """The landing job's emotion-partitioned assets (its selection less the ingest step), in topological
    order. `asset_graph`: the repository's (`context.repository_def.asset_graph` in a sensor)."""
    selected = LANDING_DATA.resolve(asset_graph)
    order = {k: i for i, k in enumerate(asset_graph.toposorted_asset_keys)}
    keys = [
        k
        for k in selected
        if k.to_user_string() not in INGEST_STEP_KEYS
        and asset_graph.get(k).partitions_def == emotion_partitions
    ]
    return sorted(keys, key=lambda k: order[k])


def affected_partitions(
    asset_graph, touched: Iterable[str], source: str = "corpus_rows"
) -> dict[str, set[str]]:
    """Per landing asset, the partitions a change in the `touched` emotions of `source` (an asset outside the
    landing job's partitioned part: the corpus, or the review decisions) reaches, following each edge's
    partition mapping (identity for most; the pairs stage maps an emotion to its opposite too). Assets the
    change does not reach map to an empty set."""
    keys = landing_partitioned_keys(asset_graph)
    in_job = set(keys)
    out: dict[AssetKey, set[str]] = {}
    for key in keys:
        reach: set[str] = set()
        for parent in asset_graph.get(key).parent_keys:
            if parent not in in_job:
                if parent == AssetKey(source):
                    reach |= set(touched)
                continue
            mapping = asset_graph.get_partition_mapping(key, parent)
            subset = emotion_partitions.subset_with_partition_keys(sorted(out[parent]))
            down = mapping.get_downstream_partitions_for_partitions(
                subset, emotion_partitions, emotion_partitions
            )
            reach |= set(down.get_partition_keys())
        out[key] = reach
    return {k.to_user_string(): v for k, v in out.items()}


def _range_request(rng: tuple[str, str], run_key: str, tags: dict, asset_selection=None) -> RunRequest:
    if rng[0] == rng[1]:
        return RunRequest(
            run_key=run_key,
            job_name=LANDING_JOB_NAME,
            partition_key=rng[0],
            tags=tags,
            asset_selection=asset_selection,
        )
    return RunRequest(
        run_key=run_key,
        job_name=LANDING_JOB_NAME,
        asset_selection=asset_selection,
        tags={**tags, PARTITION_RANGE_START_TAG: rng[0], PARTITION_RANGE_END_TAG: rng[1]},
    )


def emotion_run_requests(
    asset_graph, touched: list[str], *, source: str, run_key: str, tags: dict, whole_job: bool
) -> list[RunRequest]:
    """Runs of the landing job for a change to the `touched` emotions of `source`: one run per
    contiguous range of the touched emotions, over the whole job (`whole_job`: a new corpus file) or
    over just the assets the change reaches; then, for assets whose partition mapping reaches further
    (preference pairs of the emotions whose opposite was touched), one run per extra range over just
    those assets. The landing job's run queue (limit 1, FIFO) runs them in this order, so the extra
    runs read the touched emotions already rebuilt."""
    order = default_taxonomy().labels
    reach = {
        k: parts for k, parts in affected_partitions(asset_graph, touched, source=source).items() if parts
    }
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


def landing_run_requests(
    asset_graph, decision: LandingDecision, settings: AutomationSettings
) -> list[RunRequest]:
    """The runs a landing event asks for: the emotions of a new content, plus those of the content a
    replaced or deleted file held (none for a rejected file, a copy, a skipped path)."""
    if not decision.rebuild:
        return []
    tags = settings.run_tags(
        "landing_zone",
        **{
            LANDING_FILE_TAG: decision.file.name[:200],
            LANDING_SHA_TAG: decision.sha256,
            LANDING_EMOTIONS_TAG: ",".join(decision.rebuild),
            "dagster/max_runtime": str(settings.landing_max_runtime_s),
        },
    )
    return emotion_run_requests(
        asset_graph,
        decision.rebuild,
        source="corpus_rows",
        run_key=decision.run_key_base or decision.sha256,
        tags=tags,
        whole_job=True,
    )


def landing_zone(corpus_sources: CorpusSources, settings: AutomationSettings, subfolder: str = ""):
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
    def _landing_sensor(
        context: SensorEvaluationContext, corpus_sources: CorpusSources, warehouse: Warehouse
    ):
        zone = landing_zone(corpus_sources, settings)
        cursor = LandingCursor.load(context.cursor)
        decisions, new_cursor = scan_landing_zone(
            zone,
            cursor,
            taxonomy=default_taxonomy(),
            limits=corpus_sources.limits(),
            settle_seconds=settings.settle_seconds,
        )
        if not decisions:
            return SensorResult(skip_reason=SkipReason("no new landing files"), cursor=new_cursor.dump())
        requests = []
        for d in decisions:
            reqs = landing_run_requests(context.repository_def.asset_graph, d, settings)
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
