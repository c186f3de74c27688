"""What the automation jobs select, computed from the stage asset modules at import time so that the
jobs follow the pipeline as stages add assets, and so that a job whose assets do not exist yet (another
stage still being built) is simply not defined instead of breaking `dagster definitions validate`."""

from __future__ import annotations

from functools import lru_cache

from dagster import AssetKey, load_assets_from_modules

from empathy_dag.partitions import emotion_partitions

INGEST_KEYS = ("corpus_rows", "quarantine", "ingest_file_log")
TRAINING_KEYS = ("sft_checkpoint", "dpo_checkpoint")
# Per-emotion data assets the training stage reads (the retraining job refreshes nothing partitioned:
# the landing runs keep those current, one emotion at a time).
TRAINING_INPUT_KEYS = ("preference_pairs", "dataset_splits", "curated_dialogues")


def _stage_modules():
    from empathy_dag.curate import assets as curate_assets
    from empathy_dag.evaluate import assets as evaluate_assets
    from empathy_dag.generate import assets as generate_assets
    from empathy_dag.ingest import assets as ingest_assets
    from empathy_dag.pairs import assets as pairs_assets
    from empathy_dag.review import assets as review_assets
    from empathy_dag.train import assets as train_assets

    return [ingest_assets, generate_assets, curate_assets, review_assets, pairs_assets, train_assets,
            evaluate_assets]


@lru_cache(maxsize=1)
def stage_asset_graph():
    # The graph alone (no resources needed): what `Definitions` builds internally.
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph

    return AssetGraph.from_assets(load_assets_from_modules(_stage_modules()))


@lru_cache(maxsize=1)
def evaluate_stage_keys() -> tuple[str, ...]:
    from empathy_dag.evaluate import assets as evaluate_assets

    keys = set()
    for a in load_assets_from_modules([evaluate_assets]):
        keys.update(k.to_user_string() for k in a.keys)
    return tuple(sorted(keys))


def existing(names) -> list[str]:
    graph = stage_asset_graph()
    have = {k.to_user_string() for k in graph.get_all_asset_keys()}
    return [n for n in names if n in have]


def _descendants(graph, key: AssetKey) -> set[AssetKey]:
    out: set[AssetKey] = set()
    frontier = [key]
    while frontier:
        for child in graph.get(frontier.pop()).child_keys:
            if child not in out:
                out.add(child)
                frontier.append(child)
    return out


def _is_emotion_partitioned(graph, key: AssetKey) -> bool:
    return graph.get(key).partitions_def == emotion_partitions


@lru_cache(maxsize=1)
def landing_partitioned_keys() -> tuple[str, ...]:
    """Emotion-partitioned assets reachable from `corpus_rows` through emotion-partitioned assets only
    (situations, dialogues, curated_dialogues, splits, pairs...), in topological order. Partitioned
    assets below an unpartitioned one (e.g. per-emotion evaluation of a checkpoint) are not data work
    of a new file and stay out."""
    graph = stage_asset_graph()
    start = AssetKey("corpus_rows")
    if not graph.has(start):
        return ()
    below_corpus = _descendants(graph, start)
    # Unpartitioned assets fed by the corpus (checkpoints, merged sets): a partitioned asset reading one
    # is evaluation of a trained artifact, not data work of a new file. Unpartitioned data inputs that
    # are not downstream of a checkpoint (the review stage's `review_decisions`) do not count: the
    # per-emotion data they feed (reviewed_dialogues -> dataset_splits -> pairs) is landing work.
    checkpoints = {k for k in below_corpus if k.to_user_string() in TRAINING_KEYS}
    after_training = checkpoints.union(*(_descendants(graph, k) for k in checkpoints))
    trained = {k for k in below_corpus if graph.get(k).partitions_def is None and k in after_training}

    def data_asset(key: AssetKey) -> bool:
        return _is_emotion_partitioned(graph, key) and not (set(graph.get(key).parent_keys) & trained)

    found: list[AssetKey] = []
    frontier = [c for c in graph.get(start).child_keys if data_asset(c)]
    seen = set(frontier)
    while frontier:
        key = frontier.pop(0)
        found.append(key)
        for child in graph.get(key).child_keys:
            if child not in seen and data_asset(child):
                seen.add(child)
                frontier.append(child)
    order = {k: i for i, k in enumerate(graph.toposorted_asset_keys)}
    return tuple(k.to_user_string() for k in sorted(found, key=lambda k: order[k]))


def landing_job_keys() -> list[str]:
    return [*existing(INGEST_KEYS), *landing_partitioned_keys()]


def affected_partitions(touched: list[str], source: str = "corpus_rows") -> dict[str, set[str]]:
    """Per landing asset, the partitions a change in the `touched` emotions of `source` (an asset
    outside the landing job's partitioned part: the corpus, or the review decisions) reaches, following
    each edge's partition mapping (identity for most; the pairs stage maps an emotion to its opposite
    too). Assets the change does not reach map to an empty set."""
    graph = stage_asset_graph()
    keys = [AssetKey(k) for k in landing_partitioned_keys()]
    in_job = set(keys)
    out: dict[AssetKey, set[str]] = {}
    for key in keys:
        node = graph.get(key)
        reach: set[str] = set()
        for parent in node.parent_keys:
            if parent not in in_job:
                if parent == AssetKey(source):
                    reach |= set(touched)
                continue
            mapping = graph.get_partition_mapping(key, parent)
            subset = emotion_partitions.subset_with_partition_keys(sorted(out[parent]))
            down = mapping.get_downstream_partitions_for_partitions(subset, emotion_partitions, emotion_partitions)
            reach |= set(down.get_partition_keys())
        out[key] = reach
    return {k.to_user_string(): v for k, v in out.items()}


def training_job_selection_keys() -> list[str]:
    """Unpartitioned assets between the per-emotion training data and the checkpoints (e.g. a merged
    training set), plus the checkpoints; the job adds everything downstream (evaluation, leaderboard,
    promoted_model) by selection."""
    graph = stage_asset_graph()
    train = [AssetKey(k) for k in existing(TRAINING_KEYS)]
    if not train:
        return []
    ancestors: set[AssetKey] = set()
    frontier = list(train)
    while frontier:
        key = frontier.pop()
        for parent in graph.get(key).parent_keys:
            if parent not in ancestors and graph.has(parent) and graph.get(parent).partitions_def is None:
                ancestors.add(parent)
                frontier.append(parent)
    data_inputs = set(landing_job_keys())
    # Only the unpartitioned glue that reads the per-emotion data (not base_model or taxonomy).
    glue = {
        a for a in ancestors
        if any(p.to_user_string() in data_inputs for p in graph.get(a).parent_keys)
        and a.to_user_string() not in INGEST_KEYS
    }
    return sorted({k.to_user_string() for k in train} | {k.to_user_string() for k in glue})
