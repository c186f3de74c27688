"""Assets of the evaluate stage: generations of every system on the test split, external predictions,
the Epitome classifiers, one DuckDB table per metric (rows per system, emotion and item), judge-human
agreement and a chart of the leaderboard (the leaderboard itself is `dbt_like_sql/leaderboard*.sql`).

Each metric asset loads its model once per run and scores every system and emotion in that run."""

import time
from collections import Counter
from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from empathy_dag.curate.classifier import is_saved_any, load_emotion_classifier
from empathy_dag.defs.evaluate.resources import EvaluationConfig
from empathy_dag.defs.generate.resources import TextGenerator, served_generator
from empathy_dag.defs.io_managers import per_partition
from empathy_dag.defs.metadata import column_schema_metadata, markdown_table, png_markdown
from empathy_dag.defs.partitions import emotion_partitions, single_run
from empathy_dag.defs.warehouse.resource import WAREHOUSE_SCHEMA, Warehouse, write_table
from empathy_dag.evaluate import scorecard
from empathy_dag.evaluate.evaluation_set import (
    EVALUATION_SET_SCHEMA,
    build_evaluation_set,
    coverage,
    from_test_split,
    read_external_test_file,
)
from empathy_dag.evaluate.items import (
    ITEM_SCHEMA,
    ExternalPredictionSpec,
    dialogue_text,
    empty_items,
    read_external_predictions,
    read_human_ratings,
    unmatched_ratings,
    with_history_column,
)
from empathy_dag.evaluate.metrics.agreement import judge_human_agreement as agreement
from empathy_dag.evaluate.metrics.alignment import (
    alignment_conversation,
    alignment_rows,
    choose_namer,
    namer_texts,
)
from empathy_dag.evaluate.metrics.bertscore import (
    NOT_SCORED_NO_JA_BACKBONE,
    backbone_for,
    bertscore,
    load_scorer,
)
from empathy_dag.evaluate.metrics.diversity import diversity_scores
from empathy_dag.evaluate.metrics.encoder import SentenceEncoder
from empathy_dag.evaluate.metrics.epitome import (
    diff_epitome,
    epitome_fingerprint,
    load_epitome_classifier,
    save_epitome,
    saved_metrics,
    seeker_side,
    train_epitome_from_options,
)
from empathy_dag.evaluate.metrics.judge import (
    JUDGE_SCORING_MODES,
    digit_probabilities,
    expected_score,
    load_rubrics,
    log_judge_progress,
    parse_score,
)
from empathy_dag.evaluate.metrics.retention import mmlu_accuracy, perplexity, read_mmlu_csv
from empathy_dag.evaluate.metrics.valence import (
    VALENCE_LANGUAGES,
    load_nrc_vad,
    vad_difference_rows,
    valence_rows,
)
from empathy_dag.generate.engine import GenerationSettings, load_generator, log_progress
from empathy_dag.models import folder_written_aside, load_causal_lm, sha256_tree
from empathy_dag.plots import figure_png, pyplot
from empathy_dag.resources import ModelStore
from empathy_dag.taxonomy import default_taxonomy
from empathy_dag.text_classifier import read_id_file
from empathy_dag.train.data import messages

GROUP = "evaluate"
CHECKPOINTS = {"base": None, "sft": "sft_checkpoint", "dpo": "dpo_checkpoint"}
# The model behind each pipeline system, for the scorecard's "which model is this row" columns.
SYSTEM_ASSETS = {
    "base": "base_model",
    "sft": "sft_checkpoint",
    "dpo": "dpo_checkpoint",
    "promoted": "promoted_model",
}
PROMOTED = "promoted"


# ------------------------------------------------------------------------------------------ helpers


def read_items(warehouse: Warehouse) -> pl.DataFrame:
    with warehouse.connect() as conn:
        return conn.execute(
            f"SELECT * FROM {WAREHOUSE_SCHEMA}.evaluation_items ORDER BY system, emotion, item_id"
        ).pl()


def system_weights(
    system: str, evaluation: EvaluationConfig, model_store: ModelStore
) -> tuple[str, str | None]:
    """(model folder or hub id, adapter folder or None) of a system that has weights here."""
    for extra in evaluation.extra_systems:
        if extra.name == system:
            return extra.source, extra.adapter
    if system not in CHECKPOINTS and system != PROMOTED:
        raise ValueError(f"unknown system {system!r}: use base, sft, dpo or an extra_systems entry")
    base = fetch_folder(model_store, "base_model")
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base} has no model: materialize base_model first")
    if system == PROMOTED:
        pointer = promoted_pointer(model_store)
        if pointer is None:
            raise FileNotFoundError("no promoted model yet: promoted_model has not promoted a checkpoint")
        return str(base), str(fetch_folder(model_store, f"promoted/{pointer['sha256'][:16]}"))
    adapter = CHECKPOINTS[system]
    if adapter is None:
        return str(base), None
    folder = fetch_folder(model_store, adapter)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} has no PEFT adapter: materialize {adapter} first")
    return str(base), str(folder)


def fetch_folder(model_store: ModelStore, name: str) -> Path:
    """The local folder of a model, downloaded first when the store publishes to S3."""
    return model_store.fetch(name)


def promoted_pointer(model_store: ModelStore) -> dict | None:
    """The promotion gate's pointer file (path, sha256 of the promoted adapter), None before the first
    promotion."""
    import json

    path = model_store.folder("promoted_model") / "pointer.json"
    if not path.is_file():
        return None
    pointer = json.loads(path.read_text())
    return pointer if pointer.get("sha256") else None


def systems_with_weights(evaluation: EvaluationConfig, model_store: ModelStore | None = None) -> list[str]:
    """The configured systems, plus the promoted model (when one exists and `compare_with_promoted`), so
    a candidate is compared with it on the same items."""
    systems = [*evaluation.systems, *(e.name for e in evaluation.extra_systems)]
    if (
        model_store is not None
        and evaluation.compare_with_promoted
        and PROMOTED not in systems
        and promoted_pointer(model_store) is not None
    ):
        systems.append(PROMOTED)
    return systems


def system_identity(context: AssetExecutionContext, system: str, source: str, adapter: str | None) -> dict:
    """Which model a system's replies came from: the asset, its materialization (run id, storage id)
    and the sha256 it recorded, so a scorecard row ties to exactly one checkpoint."""
    asset_name = SYSTEM_ASSETS.get(system)
    info = {
        "model_asset": asset_name or "",
        "model_path": adapter or source,
        "model_sha256": "",
        "model_run_id": "",
    }
    if asset_name is None:
        return info
    event = context.instance.get_latest_materialization_event(AssetKey(asset_name))
    if event is None or event.asset_materialization is None:
        return info
    meta = event.asset_materialization.metadata
    sha = meta.get("sha256") or meta.get("candidate_sha256")
    info.update(model_sha256=str(sha.value) if sha is not None else "", model_run_id=event.run_id)
    return info


def model_source(spec: str, model_store: ModelStore) -> str:
    return str(fetch_folder(model_store, "base_model")) if spec == "base_model" else spec


def load_engine(
    source: str, adapter: str | None, text_generator: TextGenerator, served_model: str | None = None
):
    """A generator for any (model, adapter), with the engine settings (dtype, device, batch size,
    response cache) of the shared `text_generator` resource; or, with `served_model`, that model on the
    text_generator's OpenAI-compatible server (same cache folder, keyed by the served name)."""

    if served_model:
        return served_generator(text_generator, served_model)
    return load_generator(
        source,
        adapter=adapter,
        dtype=text_generator.dtype,
        device=text_generator.device,
        batch_size=text_generator.batch_size,
        cache_dir=text_generator.cache_dir if text_generator.use_cache else None,
        allow_hub=text_generator.allow_hub,
        trust_remote_code=text_generator.trust_remote_code,
    )


def listener_conversation(speaker_utterance: str, system_prompt: str | None) -> list[dict]:
    """Exactly the prompt format SFT and DPO train on (`empathy_dag.train.data.messages`), so a tuned
    model is evaluated on the kind of input it learned from."""

    return messages(speaker_utterance, system_prompt)


def summary_by_system(frame: pl.DataFrame, columns: list[str]) -> MetadataValue:
    cols = [c for c in columns if c in frame.columns]
    if not frame.height or not cols:
        return MetadataValue.md("(no rows)")
    agg = frame.group_by("system").agg(pl.len().alias("items"), *[pl.col(c).mean().round(4) for c in cols])
    return markdown_table(agg.sort("system"), max_rows=50)


# ------------------------------------------------------------------------------------- generations


@asset(
    group_name=GROUP,
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    io_manager_key="parquet_io_manager",
    ins={"dataset_splits": AssetIn()},
    code_version="evaluation-set-v1",
    kinds={"parquet"},
    metadata=column_schema_metadata(EVALUATION_SET_SCHEMA),
    check_specs=[
        AssetCheckSpec(
            "every_emotion_evaluated",
            asset="evaluation_set",
            description="Each emotion has at least `min_items_per_emotion` evaluation items.",
        )
    ],
    description="The held-out items every system is scored on, per emotion: the complete test dialogues of "
    "dataset_splits (whose per-emotion minimum reaches every emotion) and any external test files "
    "(`external_test_files`, any format ingest reads). Item ids are content hashes: adding data never "
    "reshuffles existing items.",
)
def evaluation_set(context: AssetExecutionContext, evaluation: EvaluationConfig, dataset_splits):
    taxonomy = default_taxonomy()
    external, files = [], []
    for path in evaluation.external_test_files:
        frame, info = read_external_test_file(path, taxonomy)
        external.append(frame)
        files.append(info)
    external_items = pl.concat(external) if external else None
    splits = per_partition(context, dataset_splits)
    frames = {}
    for emotion in context.partition_keys:
        parts = [from_test_split(splits.get(emotion, pl.DataFrame()))]
        if external_items is not None:
            parts.append(external_items.filter(pl.col("emotion") == emotion))
        frames[emotion] = build_evaluation_set(parts, evaluation.max_items_per_emotion)
    cov = coverage(frames, evaluation.min_items_per_emotion)
    context.log.info(
        f"evaluation_set: {cov['items']} items over {len(frames)} emotions; below "
        f"{evaluation.min_items_per_emotion}: {cov['below_minimum'] or 'none'}"
    )
    yield Output(
        frames,
        metadata={
            "dagster/row_count": cov["items"],
            "items_per_emotion": MetadataValue.json(cov["per_emotion"]),
            "items_per_source": MetadataValue.json(cov["per_source"]),
            "items_per_language": MetadataValue.json(cov["per_language"]),
            "items_per_origin": MetadataValue.json(cov["per_origin"]),
            "external_test_files": MetadataValue.json(files),
            "items_fingerprint": scorecard.items_fingerprint(
                i for f in frames.values() for i in f["item_id"].to_list()
            ),
        },
    )
    yield AssetCheckResult(
        check_name="every_emotion_evaluated",
        passed=not cov["below_minimum"],
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "min_items_per_emotion": evaluation.min_items_per_emotion,
            "below_minimum": MetadataValue.json(cov["below_minimum"]),
            "emotions": len(frames),
        },
    )


@asset(
    group_name=GROUP,
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    io_manager_key="parquet_io_manager",
    ins={"evaluation_set": AssetIn()},
    deps=[AssetKey("base_model"), AssetKey("sft_checkpoint"), AssetKey("dpo_checkpoint")],
    code_version="test-generations-v2",
    kinds={"pytorch", "parquet"},
    description="Replies of every system (base, SFT, DPO, the promoted model when there is one, and extra "
    "models) to the speaker turns of the evaluation set, through the batched, cached generation engine. "
    "Each model loads once per run; each row names the model (asset, sha256, materialization) it came from.",
)
def test_generations(
    context: AssetExecutionContext,
    evaluation: EvaluationConfig,
    model_store: ModelStore,
    text_generator: TextGenerator,
    evaluation_set,
):

    sets = per_partition(context, evaluation_set)
    nonempty = [sets[e] for e in context.partition_keys if e in sets and sets[e].height]
    prompts = pl.concat(nonempty) if nonempty else None
    settings = GenerationSettings(
        max_new_tokens=evaluation.max_new_tokens,
        temperature=evaluation.temperature,
        top_p=evaluation.top_p,
        do_sample=evaluation.temperature > 0,
        seed=evaluation.seed,
    )
    per_system, stats = [], {}
    for system in systems_with_weights(evaluation, model_store):
        if prompts is None:
            break
        source, adapter = system_weights(system, evaluation, model_store)
        identity = system_identity(context, system, source, adapter)
        served = evaluation.served_models.get(system)
        generator = load_engine(source, adapter, text_generator, served)
        where = f"served model {served!r}" if served else f"{source} + {adapter}"
        context.log.info(f"{system}: {prompts.height} prompts on {where}")
        replies = generator.generate(
            [listener_conversation(u, evaluation.system_prompt) for u in prompts["speaker_utterance"]],
            settings,
            progress=log_progress(context.log),
        )
        stats[system] = {"cache_id": generator.cache_id, **identity, **getattr(generator, "last_stats", {})}
        generated = prompts.select(
            "item_id",
            pl.lit(system).alias("system"),
            pl.lit("pipeline").alias("origin"),
            "emotion",
            "language",
            "situation",
            "speaker_utterance",
            "reference",
            pl.Series("prediction", replies, dtype=pl.String),
            pl.lit("", dtype=pl.String).alias("history"),  # two-turn dialogues
            "source_dialogue_id",
            pl.lit(identity["model_sha256"]).alias("model_sha256"),
            pl.lit(identity["model_run_id"]).alias("model_run_id"),
        )
        failed = sorted({e.index for e in getattr(generator, "last_errors", [])})
        if failed:
            # A prompt the server gave no usable reply for has no prediction: it is left out (never scored as
            # an empty reply, which would count against the system), so the paired comparisons use the items
            # both systems answered. Count, ids and the first error are in metadata.
            stats[system]["failed_item_ids"] = generated["item_id"].gather(failed).to_list()[:50]
            generated = (
                generated.with_row_index("_position")
                .filter(~pl.col("_position").is_in(failed))
                .drop("_position")
            )
            context.log.warning(
                f"{system}: {len(failed)} prompts got no usable reply from the server and are "
                f"left out of its scores: {stats[system].get('first_error', '')}"
            )
        per_system.append(generated)
    allrows = pl.concat(per_system) if per_system else None
    frames = {}
    for emotion in context.partition_keys:
        if allrows is None:
            frames[emotion] = empty_items().with_columns(
                *[pl.lit(None, dtype=pl.String).alias(c) for c in GENERATION_EXTRA_COLUMNS]
            )
            continue
        frames[emotion] = allrows.filter(pl.col("emotion") == emotion).select(
            *ITEM_SCHEMA, *GENERATION_EXTRA_COLUMNS
        )
    return Output(
        frames,
        metadata={
            "dagster/row_count": sum(f.height for f in frames.values()),
            "systems": MetadataValue.json(stats),
            # Prompts a server gave no usable reply for (bad JSON, no choices), over every system: not in the table.
            "failed_prompts": sum(int(s.get("failed_prompts", 0)) for s in stats.values()),
            "settings": MetadataValue.json(settings.as_dict()),
            "preview": markdown_table(
                allrows.select("system", "emotion", "speaker_utterance", "prediction")
                if allrows is not None
                else empty_items(),
                max_rows=9,
            ),
        },
    )


GENERATION_EXTRA_COLUMNS = ("source_dialogue_id", "model_sha256", "model_run_id")


@asset(
    group_name=GROUP,
    io_manager_key="parquet_io_manager",
    code_version="external-predictions-v2",  # v2: per-file options, history
    kinds={"parquet"},
    description="Predictions made outside this pipeline (CSV/JSONL of context, reference, prediction, "
    "emotion, system; or any file read as it is through `external_predictions`: separator, column map, "
    "one system per file, its item ids, earlier turns) so that any model is scored side by side with base, "
    "SFT and DPO. Every file is checked before anything is stored.",
)
def external_predictions(context: AssetExecutionContext, evaluation: EvaluationConfig) -> Output:
    taxonomy = default_taxonomy()
    frames, files = [], []
    specs = [ExternalPredictionSpec(p) for p in evaluation.external_prediction_files]
    specs += [ExternalPredictionSpec(**f.model_dump()) for f in evaluation.external_predictions]
    # every file is read (and checked) before anything is returned: a bad file stores nothing
    for spec in specs:
        frame, info = read_external_predictions(spec, taxonomy)
        frames.append(frame)
        files.append(info)
    items = pl.concat(frames) if frames else empty_items()
    items = items.unique(subset=["system", "item_id"], keep="first", maintain_order=True)
    return Output(
        items,
        metadata={
            "dagster/row_count": items.height,
            "files": MetadataValue.json(files),
            "systems": MetadataValue.json(sorted(items["system"].unique().to_list())),
            "preview": markdown_table(
                items.select("system", "emotion", "speaker_utterance", "prediction"), max_rows=8
            ),
        },
    )


@multi_asset(
    specs=[
        AssetSpec(
            "evaluation_items",
            group_name=GROUP,
            kinds={"duckdb"},
            metadata={"warehouse_tables": ["evaluation_items"]},
            deps=[AssetKey("test_generations"), AssetKey("external_predictions")],
            description="Every (system, item) to score: the pipeline's test generations (whichever "
            "emotion partitions exist) and the external predictions, in one DuckDB table.",
        ),
        AssetSpec(
            "evaluation_systems",
            group_name=GROUP,
            kinds={"duckdb"},
            metadata={"warehouse_tables": ["evaluation_systems"]},
            deps=[AssetKey("test_generations"), AssetKey("external_predictions")],
            description="The systems scored, their item counts and which one is the leaderboard's "
            "baseline (`baseline_system`, 'base' by default).",
        ),
    ],
    code_version="evaluation-items-v2",  # v2: history column
    pool="duckdb_warehouse",
    can_subset=False,
)
def evaluation_items(context: AssetExecutionContext, evaluation: EvaluationConfig, warehouse: Warehouse):
    frames, identities = [], []
    for name in ("test_generations", "external_predictions"):
        frame = warehouse.read_asset_frame(name)
        if frame is not None and frame.height:
            frames.append(with_history_column(frame).select(list(ITEM_SCHEMA)).cast(ITEM_SCHEMA))
            identities.append(
                frame.select(
                    "system",
                    *[
                        pl.col(c).cast(pl.String)
                        if c in frame.columns
                        else pl.lit(None, dtype=pl.String).alias(c)
                        for c in ("model_sha256", "model_run_id")
                    ],
                ).unique("system")
            )
    items = pl.concat(frames) if frames else empty_items()
    dupes = items.height - items.unique(subset=["system", "item_id"]).height
    if dupes:
        raise ValueError(
            f"{dupes} (system, item) pairs appear twice: an external system shares a name "
            "with a pipeline system"
        )
    names = items["system"].unique().sort().to_list()
    baseline, why = scorecard.resolve_baseline(names, evaluation.baseline_system, evaluation.systems)
    if why:
        context.log.warning(why)
    systems = (
        items.group_by("system", "origin")
        .agg(pl.len().alias("items"))
        .with_columns((pl.col("system") == baseline).alias("is_baseline"))
        .sort("system")
    )
    if identities:
        systems = systems.join(pl.concat(identities).unique("system"), on="system", how="left")
    else:
        systems = systems.with_columns(
            pl.lit(None, dtype=pl.String).alias("model_sha256"),
            pl.lit(None, dtype=pl.String).alias("model_run_id"),
        )
    systems = systems.with_columns(
        pl.lit(scorecard.items_fingerprint(items["item_id"].to_list())).alias("items_fingerprint")
    )
    items_table = write_table(warehouse, "evaluation_items", items)
    systems_table = write_table(warehouse, "evaluation_systems", systems)
    yield MaterializeResult(
        asset_key="evaluation_items",
        metadata={
            **items_table,
            "dagster/row_count": items.height,
            "emotions": items["emotion"].n_unique(),
            "preview": markdown_table(
                items.select("system", "origin", "emotion", "speaker_utterance", "prediction")
            ),
        },
    )
    yield MaterializeResult(
        asset_key="evaluation_systems",
        metadata={
            **systems_table,
            "dagster/row_count": systems.height,
            "systems": markdown_table(systems, max_rows=50),
            "baseline_system": baseline or "none",
            "baseline_note": why or "as configured",
        },
    )


# ------------------------------------------------------------------------------ Epitome classifiers

EPITOME_KEYS = {m: f"epitome_{m}_classifier" for m in ("er", "ip", "ex")}
CLASSIFIER_FILES = ("*.safetensors", "*.json")
EPITOME_CODE_VERSION = "epitome-classifiers-v2"  # v2: fine-tuned cross-encoders, split grouped by seeker post


@multi_asset(
    specs=[
        AssetSpec(
            key,
            group_name=GROUP,
            kinds={"pytorch", "safetensors"},
            description=f"Epitome {m.upper()} level classifier (0/1/2): `epitome_encoder` fine-tuned on the "
            "(seeker post, response) pair with transformers' Trainer (or the linear model, "
            "`epitome_model=linear`); held-out macro-F1 (split grouped by seeker post) next to the "
            "published RoBERTa figure in metadata. Reused, not retrained, while its data and options "
            "are unchanged.",
        )
        for m, key in EPITOME_KEYS.items()
    ],
    code_version=EPITOME_CODE_VERSION,
    can_subset=False,
)
def epitome_classifiers(
    context: AssetExecutionContext, evaluation: EvaluationConfig, model_store: ModelStore
):
    """One multi-asset so the seeker posts, shared by the three mechanisms, are encoded once."""
    import tempfile

    from dagster import DataVersion

    options = evaluation.epitome_options()
    holdout = read_id_file(evaluation.epitome_holdout_ids) if evaluation.epitome_holdout_ids else None
    encoder = None
    for mechanism, key in EPITOME_KEYS.items():
        fingerprint = epitome_fingerprint(
            evaluation.epitome_dir, mechanism, options, EPITOME_CODE_VERSION, evaluation.epitome_holdout_ids
        )
        # Nothing published yet (first run on S3) is not an error here: it just means "train".
        folder = model_store.fetch(key, missing_ok=True)
        metrics = saved_metrics(folder)
        reused = bool(metrics and metrics.get("fingerprint") == fingerprint)
        if not reused:
            if options["model"] == "linear" and encoder is None:
                encoder = SentenceEncoder(
                    evaluation.epitome_encoder,
                    max_length=evaluation.epitome_max_length,
                    device=evaluation.device,
                )
            with tempfile.TemporaryDirectory() as work:
                clf, metrics = train_epitome_from_options(
                    mechanism, options, work, encoder=encoder, holdout_ids=holdout
                )
            metrics["fingerprint"] = fingerprint
            with folder_written_aside(folder) as tmp:
                save_epitome(clf, tmp, metrics)
            model_store.persist(key)
        context.log.info(
            f"{key}: held-out macro-F1 {metrics['heldout_macro_f1']:.3f} "
            f"{metrics['heldout_macro_f1_ci95']} (published {metrics['published_roberta_macro_f1']}, "
            f"majority {metrics['majority_baseline_macro_f1']:.3f}){' reused' if reused else ''}"
        )
        yield MaterializeResult(
            asset_key=key,
            data_version=DataVersion(fingerprint),
            metadata={
                "path": MetadataValue.path(str(folder)),
                "sha256": sha256_tree(folder, CLASSIFIER_FILES),
                "reused": reused,
                "model": options["model"],
                "backbone": metrics.get("backbone", options["encoder"]),
                "heldout_macro_f1": round(metrics["heldout_macro_f1"], 4),
                "heldout_macro_f1_ci95": MetadataValue.json(metrics["heldout_macro_f1_ci95"]),
                "published_roberta_macro_f1": metrics["published_roberta_macro_f1"],
                "heldout_f1_per_level": MetadataValue.json(metrics["heldout_f1_per_level"]),
                "heldout_accuracy": round(metrics["heldout_accuracy"], 4),
                "majority_baseline_macro_f1": round(metrics["majority_baseline_macro_f1"], 4),
                "confusion_0_1_2": MetadataValue.json(metrics["confusion"]),
                "split": metrics["split"],
                "train_rows": metrics["train_rows"],
                "heldout_rows": metrics["heldout_rows"],
                "train_test_overlap_seeker_posts": metrics["train_test_overlap_seeker_posts"],
                "train_test_overlap_ids": metrics["train_test_overlap_ids"],
                "holdout_ids": MetadataValue.json(
                    {
                        k: metrics[k]
                        for k in ("holdout_ids_given", "holdout_ids_not_in_data", "left_out_same_seeker_post")
                        if k in metrics
                    }
                    | {
                        "heldout_ids_sha256": metrics.get("heldout_ids_sha256"),
                        "file": evaluation.epitome_holdout_ids,
                    }
                ),
                "train_seconds": metrics.get("train_seconds"),
            },
        )


# ---------------------------------------------------------------------------------------- metrics

METRIC_ASSET = {"group_name": GROUP, "kinds": {"duckdb"}, "pool": "duckdb_warehouse"}


def _metric_asset(name: str, description: str, extra_deps: list[str] = (), version: str = "v1"):
    return asset(
        name=name,
        code_version=f"{name}-{version}",
        description=description,
        metadata={"warehouse_tables": [name]},
        deps=[AssetKey("evaluation_items"), *map(AssetKey, extra_deps)],
        **METRIC_ASSET,
    )


def _keys(items: pl.DataFrame) -> pl.DataFrame:
    return items.select("system", "origin", "emotion", "language", "item_id")


@_metric_asset(
    "metric_bertscore",
    "BERTScore P/R/F1 of each prediction against its reference (bert-score; "
    "embedded all-MiniLM-L6-v2 with 6 layers by default; EmPO used roberta-large layer 17, no idf, "
    "no baseline rescaling). Japanese items use `bertscore_model_ja`, or are not scored without it.",
    version="v2",
)  # v2: Japanese never on the English backbone
def metric_bertscore(context: AssetExecutionContext, evaluation: EvaluationConfig, warehouse: Warehouse):
    items = read_items(warehouse)
    load_seconds = score_seconds = 0.0
    parts, backbones, not_scored = [], {}, {}
    score_cols = ("bertscore_precision", "bertscore_recall", "bertscore_f1")
    # One group per backbone: English (and any other language) on the default one, Japanese on
    # bertscore_model_ja, or not scored at all (NULL, with the reason as its backbone).
    plan = {
        lang: backbone_for(
            lang,
            evaluation.bertscore_model,
            evaluation.bertscore_num_layers,
            evaluation.bertscore_model_ja,
            evaluation.bertscore_num_layers_ja,
        )
        for lang in sorted(set(items["language"].to_list()))
    }
    for backbone in dict.fromkeys(plan.values()):
        frame = items.filter(pl.col("language").is_in([lang for lang, b in plan.items() if b == backbone]))
        if not frame.height:
            continue
        if backbone is None:
            for lang in set(frame["language"].to_list()):
                not_scored[lang] = int((frame["language"] == lang).sum())
            parts.append(
                _keys(frame).with_columns(
                    *[pl.lit(None, dtype=pl.Float64).alias(c) for c in score_cols],
                    pl.lit(NOT_SCORED_NO_JA_BACKBONE).alias("backbone"),
                )
            )
            continue
        model, layers = backbone
        loading = time.perf_counter()
        scorer = load_scorer(
            model,
            layers,
            evaluation.bertscore_batch_size,
            device=evaluation.device,
            allow_hub=evaluation.allow_hub,
        )
        load_seconds += time.perf_counter() - loading
        scoring = time.perf_counter()
        scores = bertscore(scorer, frame["prediction"].to_list(), frame["reference"].to_list())
        score_seconds += time.perf_counter() - scoring
        label = f"{model} (layers={layers})"
        for lang in sorted(set(frame["language"].to_list())):
            backbones[lang] = label
        parts.append(
            _keys(frame).with_columns(
                pl.Series("bertscore_precision", scores["precision"]),
                pl.Series("bertscore_recall", scores["recall"]),
                pl.Series("bertscore_f1", scores["f1"]),
                pl.lit(label).alias("backbone"),
            )
        )
    table = (
        pl.concat(parts)
        if parts
        else _keys(items).with_columns(
            *[pl.lit(None, dtype=pl.Float64).alias(c) for c in score_cols],
            pl.lit(None, dtype=pl.String).alias("backbone"),
        )
    )
    table_md = write_table(warehouse, "metric_bertscore", table)
    if not_scored:
        context.log.warning(
            f"BERTScore left out {not_scored} items ({NOT_SCORED_NO_JA_BACKBONE}): set "
            "bertscore_model_ja to a multilingual model to score them"
        )
    scored = table.filter(pl.col("bertscore_f1").is_not_null()).height
    return MaterializeResult(
        metadata={
            **table_md,
            "dagster/row_count": table.height,
            "backbones": MetadataValue.json(backbones),
            # scoring only: the model load is reported on its own (once per run, whatever the partitions)
            "pairs_per_s": round(scored / score_seconds, 1) if score_seconds > 0 else 0.0,
            "load_seconds": round(load_seconds, 2),
            # Always 0: a Japanese item is scored with bertscore_model_ja or not at all.
            "japanese_items_on_english_backbone": 0,
            "not_scored": MetadataValue.json(
                {lang: {"items": n, "reason": NOT_SCORED_NO_JA_BACKBONE} for lang, n in not_scored.items()}
            ),
            "by_system": summary_by_system(table, list(score_cols)),
        }
    )


# The Epitome classifiers learn from English Reddit posts: an item in another language gets NULL (left out of
# every mean and interval), never a level predicted by a model that cannot read it.
EPITOME_LANGUAGES = ("en",)


@_metric_asset(
    "metric_epitome",
    "Epitome ER/IP/EX levels (0/1/2) of prediction and reference, with the "
    "squared difference per item; its mean is EmPO's diff-Epitome (lower is better). English items "
    "only (NULL for other languages: the classifiers are trained on English Reddit).",
    extra_deps=list(EPITOME_KEYS.values()),
    version="v2",
)
def metric_epitome(
    context: AssetExecutionContext,
    evaluation: EvaluationConfig,
    warehouse: Warehouse,
    model_store: ModelStore,
):

    items = read_items(warehouse)
    folders = {m: fetch_folder(model_store, k) for m, k in EPITOME_KEYS.items()}
    missing = [EPITOME_KEYS[m] for m, f in folders.items() if not any(f.glob("*.safetensors"))]
    if missing:
        # A machine without the Epitome data (a fresh laptop) still gets a scorecard: the table is
        # written empty, so the leaderboard builds, and the metadata says why it is empty.
        columns = {
            f"{m}_{c}": (pl.Float64 if c == "squared_diff" else pl.Int64)
            for m in EPITOME_KEYS
            for c in ("prediction", "reference", "squared_diff")
        }
        table = (
            _keys(items).clear().with_columns(*[pl.lit(None, dtype=t).alias(c) for c, t in columns.items()])
        )
        table_md = write_table(warehouse, "metric_epitome", table)
        context.log.warning(f"metric_epitome skipped: {missing} not materialized (Epitome data absent?)")
        return MaterializeResult(
            metadata={
                **table_md,
                "dagster/row_count": 0,
                "skipped": True,
                "reason": f"classifiers not materialized: {', '.join(missing)}",
            }
        )
    classifiers = {m: load_epitome_classifier(folder, evaluation.device) for m, folder in folders.items()}
    encoders: dict[tuple, SentenceEncoder] = {}
    table = _keys(items).with_row_index("item_row")
    in_scope = items["language"].is_in(EPITOME_LANGUAGES)
    scored_items = items.filter(in_scope)
    scored_rows = table.filter(in_scope)["item_row"]
    not_scored = items.filter(~in_scope).group_by("language").len().sort("language")
    for m, clf in classifiers.items():
        enc_key = (clf.encoder, clf.max_length)
        # a classifier that chose tf-idf only (embedding_weight 0) needs no encoder at all
        if clf.needs_sentence_encoder and enc_key not in encoders:
            encoders[enc_key] = SentenceEncoder(
                clf.encoder, max_length=clf.max_length, device=evaluation.device
            )
        enc = encoders.get(enc_key)
        # the seeker side is what the response answers: the earlier turns, when a file gives them, then the turn
        seekers = seeker_side(
            scored_items["speaker_utterance"].to_list(),
            scored_items["history"].to_list() if "history" in scored_items.columns else None,
        )
        pred = clf.predict(enc, seekers, scored_items["prediction"].to_list()) if scored_items.height else []
        ref = clf.predict(enc, seekers, scored_items["reference"].to_list()) if scored_items.height else []
        levels = pl.DataFrame(
            {
                "item_row": scored_rows,
                f"{m}_prediction": pl.Series(pred, dtype=pl.Int64),
                f"{m}_reference": pl.Series(ref, dtype=pl.Int64),
            }
        )
        levels = levels.with_columns(
            ((pl.col(f"{m}_prediction") - pl.col(f"{m}_reference")) ** 2)
            .cast(pl.Float64)
            .alias(f"{m}_squared_diff")
        )
        table = table.join(levels, on="item_row", how="left", maintain_order="left")
    table = table.drop("item_row")
    table_md = write_table(warehouse, "metric_epitome", table)
    scored = table.filter(pl.col(f"{next(iter(classifiers))}_prediction").is_not_null())
    overall = {
        m: diff_epitome(scored[f"{m}_prediction"], scored[f"{m}_reference"]) if scored.height else None
        for m in classifiers
    }
    return MaterializeResult(
        metadata={
            **table_md,
            "dagster/row_count": table.height,
            "not_scored": MetadataValue.json(
                {
                    r["language"]: {
                        "items": r["len"],
                        "reason": f"Epitome classifiers are trained on {', '.join(EPITOME_LANGUAGES)} only",
                    }
                    for r in not_scored.iter_rows(named=True)
                }
            ),
            "classifier_sha256": MetadataValue.json(
                {m: sha256_tree(f, CLASSIFIER_FILES) for m, f in folders.items()}
            ),
            "diff_epitome_all_systems": MetadataValue.json(overall),
            "by_system": summary_by_system(
                table, [f"{m}_{c}" for m in classifiers for c in ("prediction", "squared_diff")]
            ),
        }
    )


@_metric_asset(
    "metric_valence",
    "VADER compound of the prediction and of the speaker turn and their "
    "difference; with an NRC-VAD lexicon, EmPO's |max V/A/D(prediction) - max V/A/D(reference)|. English "
    "only (NULL for other languages).",
    version="v2",
)
def metric_valence(context: AssetExecutionContext, evaluation: EvaluationConfig, warehouse: Warehouse):
    items = read_items(warehouse)
    languages = items["language"].to_list()
    rows = valence_rows(items["prediction"].to_list(), items["speaker_utterance"].to_list(), languages)
    cols = {"vader_response": pl.Float64, "vader_speaker": pl.Float64, "vader_difference": pl.Float64}
    table = pl.concat([_keys(items), pl.DataFrame(rows, schema=cols)], how="horizontal")
    vad_cols = {"diff_valence": pl.Float64, "diff_arousal": pl.Float64, "diff_dominance": pl.Float64}
    if evaluation.nrc_vad_path:
        lexicon = load_nrc_vad(evaluation.nrc_vad_path)
        vad = vad_difference_rows(
            items["prediction"].to_list(), items["reference"].to_list(), lexicon, languages
        )
        table = pl.concat([table, pl.DataFrame(vad, schema=vad_cols)], how="horizontal")
    else:
        table = table.with_columns(*[pl.lit(None, dtype=t).alias(c) for c, t in vad_cols.items()])
    table_md = write_table(warehouse, "metric_valence", table)
    return MaterializeResult(
        metadata={
            **table_md,
            "dagster/row_count": table.height,
            "nrc_vad": evaluation.nrc_vad_path or "not configured",
            "lexicon_languages": MetadataValue.json(list(VALENCE_LANGUAGES)),
            # NULL, left out of the means: the lexicons are English, and VADER's 0.0 on Japanese is not neutral.
            "not_scored_no_lexicon": MetadataValue.json(
                dict(Counter(lang for lang in languages if lang not in VALENCE_LANGUAGES))
            ),
            "by_system": summary_by_system(table, [*cols, *vad_cols]),
        }
    )


@_metric_asset(
    "metric_diversity",
    "distinct-1/2, n-gram entropy and share of unique responses per system, "
    "per emotion and over all emotions ('all'); words in every language (MeCab for Japanese).",
    version="v2",
)
def metric_diversity(context: AssetExecutionContext, warehouse: Warehouse):
    items = read_items(warehouse)
    rows = []
    for (system, language), frame in items.group_by("system", "language", maintain_order=True):
        groups = [("all", frame)] + [(e, f) for (e,), f in frame.group_by("emotion", maintain_order=True)]
        for emotion, sub in groups:
            rows.append(
                {
                    "system": system,
                    "language": language,
                    "emotion": emotion,
                    "responses": sub.height,
                    **diversity_scores(sub["prediction"].to_list(), language),
                }
            )
    schema = {
        "system": pl.String,
        "language": pl.String,
        "emotion": pl.String,
        "responses": pl.Int64,
        "distinct_1": pl.Float64,
        "distinct_2": pl.Float64,
        "entropy_1": pl.Float64,
        "entropy_2": pl.Float64,
        "unique_share": pl.Float64,
    }
    table = pl.DataFrame(rows, schema=schema).sort("system", "language", "emotion")
    table_md = write_table(warehouse, "metric_diversity", table)
    return MaterializeResult(
        metadata={
            **table_md,
            "dagster/row_count": table.height,
            "overall": markdown_table(table.filter(pl.col("emotion") == "all"), max_rows=50),
        }
    )


def _generation_settings(max_new_tokens: int):
    return GenerationSettings(
        max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, do_sample=False, seed=0
    )


def _subsample(items: pl.DataFrame, n: int) -> pl.DataFrame:
    """n items, the same for every system (paired comparisons need the same items), spread over the
    emotions: round-robin over emotions in item-id (hash) order, so a cap below the set size still
    reaches every emotion before it takes a second item of any."""
    if not n:
        return items
    keep = (
        items.select("item_id", "emotion")
        .unique()
        .sort("item_id")
        .with_columns(pl.col("item_id").cum_count().over("emotion").alias("_rank"))
        .sort("_rank", "item_id")
        .head(n)["item_id"]
    )
    return items.filter(pl.col("item_id").is_in(keep.implode()))


def _probability_verdict(probs: list[float]) -> tuple[str, int, float]:
    """(reply column: "1:0.05 2:0.10 ...", the most likely score, the expected score) of P(score = 1..5)."""

    return (
        " ".join(f"{k + 1}:{p:.2f}" for k, p in enumerate(probs)),
        max(range(5), key=probs.__getitem__) + 1,
        expected_score(probs),
    )


@_metric_asset(
    "metric_judge",
    "LLM-as-a-judge scores 1-5 for fluency, general empathy and emotion-specific "
    "empathy (rubric in assets/rubrics); a reply without a score is a parse failure: score NULL, "
    "counted in metadata. Each item is judged with its language's rubric.",
    extra_deps=["base_model"],
    version="v2",
)
def metric_judge(
    context: AssetExecutionContext,
    evaluation: EvaluationConfig,
    warehouse: Warehouse,
    model_store: ModelStore,
    text_generator: TextGenerator,
):

    if evaluation.judge_scoring not in JUDGE_SCORING_MODES:
        raise ValueError(
            f"judge_scoring must be one of {JUDGE_SCORING_MODES}, got {evaluation.judge_scoring!r}"
        )
    rubrics = load_rubrics(evaluation.judge_rubric)
    rubric = rubrics["en"]
    items = (
        _subsample(read_items(warehouse), evaluation.judge_max_items)
        if evaluation.judge_enabled
        else read_items(warehouse).head(0)
    )
    # Each item is judged with its own language's rubric; one in a language without a rubric is left out
    # (and counted), never judged with the English rubric.
    unjudged = items.filter(~pl.col("language").is_in(list(rubrics)))
    items = items.filter(pl.col("language").is_in(list(rubrics)))
    schema = {
        "system": pl.String,
        "origin": pl.String,
        "emotion": pl.String,
        "language": pl.String,
        "item_id": pl.String,
        "dimension": pl.String,
        "reply": pl.String,
        "score": pl.Int64,
        "expected_score": pl.Float64,
    }
    rows, source = [], model_source(evaluation.judge_model, model_store)
    request_errors = []  # prompts a served judge gave no usable reply for (PromptError)
    if items.height:
        convs, keys = [], []
        for it in items.iter_rows(named=True):
            for dim in rubric.dimensions:
                convs.append(
                    rubrics[it["language"]].conversation(
                        dim,
                        emotion=it["emotion"],
                        situation=it["situation"],
                        speaker_utterance=dialogue_text(it["speaker_utterance"], it.get("history")),
                        response=it["prediction"],
                    )
                )
                keys.append((it, dim))
        served_judge = evaluation.served_models.get("judge")
        if served_judge:
            # The judge on the text_generator's server: `generate` mode parses a written score,
            # `probabilities` reads the first token's top logprobs (a server without them: a clear
            # LogprobsUnsupported error naming `generate` mode). Prompts with no usable reply are counted.
            judge = load_engine(source, evaluation.judge_adapter, text_generator, served_judge)
            source = f"served:{served_judge}"
            if evaluation.judge_scoring == "probabilities":
                probs = judge.digit_probabilities(convs, progress=log_progress(context.log))
                verdicts = [_probability_verdict(ps) if ps is not None else ("", None, None) for ps in probs]
            else:
                replies = judge.generate(convs, _generation_settings(6), progress=log_progress(context.log))
                verdicts = [(r, parse_score(r), None) for r in replies]
            request_errors = list(judge.last_errors)
        elif evaluation.judge_scoring == "probabilities":
            model, tokenizer = load_causal_lm(
                source,
                adapter=evaluation.judge_adapter,
                device=evaluation.device,
                allow_hub=evaluation.allow_hub,
            )
            # On a CPU the dimensions of one (system, item) share their prompt up to the question: that
            # prefix is computed once (matmuls are as efficient at batch 1 there). On a GPU, batches of
            # whole prompts keep the device busy.
            on_cpu = model.device.type == "cpu"
            context.log.info(
                f"judge: {len(convs)} prompts ({items.height} items x {len(rubric.dimensions)} "
                f"dimensions) on {source}, "
                + ("shared prefix per item" if on_cpu else f"batch {evaluation.judge_batch_size}")
            )
            probs = digit_probabilities(
                model,
                tokenizer,
                convs,
                batch_size=evaluation.judge_batch_size,
                progress=log_judge_progress(context.log),
                groups=[(it["system"], it["item_id"]) for it, _ in keys] if on_cpu else None,
            )
            verdicts = [_probability_verdict(ps) for ps in probs]
        else:
            judge = load_engine(source, evaluation.judge_adapter, text_generator)
            replies = judge.generate(convs, _generation_settings(6), progress=log_progress(context.log))
            verdicts = [(r, parse_score(r), None) for r in replies]
        for (it, dim), (reply, score, expected) in zip(keys, verdicts):
            rows.append(
                {k: it[k] for k in ("system", "origin", "emotion", "language", "item_id")}
                | {
                    "dimension": dim,
                    "reply": reply,
                    "score": score,
                    "expected_score": expected if expected is not None else (float(score) if score else None),
                }
            )
    table = pl.DataFrame(rows, schema=schema)
    table_md = write_table(warehouse, "metric_judge", table)
    failures = (
        table.filter(pl.col("score").is_null())
        .group_by("system", "dimension")
        .len()
        .sort("system", "dimension")
    )
    return MaterializeResult(
        metadata={
            **table_md,
            "dagster/row_count": table.height,
            "judge_model": source,
            "rubric": rubric.name,
            "rubric_sha256": rubric.sha256,
            "enabled": evaluation.judge_enabled,
            "scoring": evaluation.judge_scoring,
            "rubrics_by_language": MetadataValue.json(
                {lang: {"name": r.name, "sha256": r.sha256} for lang, r in rubrics.items()}
            ),
            "not_judged_no_rubric": MetadataValue.json(dict(Counter(unjudged["language"].to_list()))),
            "parse_failures": int(table["score"].is_null().sum()),
            # Of those, prompts a served judge gave no usable reply for (bad JSON, no choices, no logprobs).
            "request_errors": len(request_errors),
            "request_errors_by_kind": MetadataValue.json(dict(Counter(e.kind for e in request_errors))),
            **({"first_request_error": request_errors[0].message[:500]} if request_errors else {}),
            "parse_failure_rate": round(float(table["score"].is_null().mean()), 4) if table.height else 0.0,
            "parse_failures_by_system": markdown_table(failures, max_rows=50),
            "mean_scores": markdown_table(
                table.group_by("system", "dimension")
                .agg(pl.col("score").mean().round(3), pl.col("score").is_null().sum().alias("failures"))
                .sort("system", "dimension"),
                max_rows=50,
            ),
        }
    )


@_metric_asset(
    "metric_alignment",
    "Emotional alignment (EmplifAI): a namer reads situation and dialogue "
    "(earlier turns, speaker turn + prediction) and names the speaker's emotion: an LLM (EmplifAI's "
    "protocol) or the emotion classifier (`alignment_namer`; the classifier by default for a small base "
    "model); scored against the gold label by BERTScore F1 of the label strings, exact match and Ekman "
    "group. Each item is asked about in its language; Japanese names are read back too.",
    extra_deps=["base_model", "emotion_classifier"],
    version="v3",
)  # v3: Japanese prompt and names
def metric_alignment(
    context: AssetExecutionContext,
    evaluation: EvaluationConfig,
    warehouse: Warehouse,
    model_store: ModelStore,
    text_generator: TextGenerator,
):

    taxonomy = default_taxonomy()
    items = with_history_column(read_items(warehouse))
    items = (
        _subsample(items, evaluation.alignment_max_items) if evaluation.alignment_enabled else items.head(0)
    )
    schema = {
        "alignment_reply": pl.String,
        "named_emotion": pl.String,
        "alignment_bertscore_f1": pl.Float64,
        "alignment_exact": pl.Float64,
        "alignment_ekman": pl.Float64,
    }
    source = model_source(evaluation.alignment_model, model_store)
    classifier_folder = model_store.fetch("emotion_classifier", missing_ok=True)
    served_namer = evaluation.served_models.get("alignment_namer")
    # A served namer is there to name emotions: `auto` picks it (the small-local-model rule does not apply).
    setting = "llm" if served_namer and evaluation.alignment_namer == "auto" else evaluation.alignment_namer
    namer, why = choose_namer(
        setting, source if Path(source).is_dir() else None, is_saved_any(classifier_folder)
    )
    context.log.info(f"alignment namer: {namer} ({why})")
    rows, request_errors = [], 0
    if items.height:
        if namer == "classifier":
            classifier = load_emotion_classifier(classifier_folder)
            replies = classifier.predict(
                namer_texts(
                    *(items[c].to_list() for c in ("situation", "history", "speaker_utterance", "prediction"))
                )
            )
        else:
            model = load_engine(source, None, text_generator, served_namer)
            # each item is asked about in its own language (parse_emotion reads names in any of them)
            convs = [
                alignment_conversation(s, u, p, taxonomy.labels, h, lang)
                for s, u, p, h, lang in items.select(
                    "situation",
                    "speaker_utterance",
                    "prediction",
                    "history",
                    pl.col("language").fill_null("en"),
                ).iter_rows()
            ]
            replies = model.generate(convs, _generation_settings(8), progress=log_progress(context.log))
            request_errors = len(getattr(model, "last_errors", []))
        scorer = load_scorer(
            evaluation.bertscore_model,
            evaluation.bertscore_num_layers,
            evaluation.bertscore_batch_size,
            device=evaluation.device,
            allow_hub=evaluation.allow_hub,
        )
        rows = alignment_rows(replies, items["emotion"].to_list(), taxonomy, scorer)
    table = pl.concat([_keys(items), pl.DataFrame(rows, schema=schema)], how="horizontal").with_columns(
        pl.lit(namer).alias("namer")
    )
    table_md = write_table(warehouse, "metric_alignment", table)
    return MaterializeResult(
        metadata={
            **table_md,
            "dagster/row_count": table.height,
            "enabled": evaluation.alignment_enabled,
            "namer": namer,
            "namer_reason": why,
            "alignment_model": source if namer == "llm" else str(classifier_folder),
            "unparsed_replies": int(table["named_emotion"].is_null().sum()),
            "request_errors": request_errors,
            "by_system": summary_by_system(
                table, ["alignment_bertscore_f1", "alignment_exact", "alignment_ekman"]
            ),
        }
    )


@asset(
    group_name=GROUP,
    deps=[AssetKey("metric_judge"), AssetKey("evaluation_items")],
    code_version="judge-human-agreement-v2",
    kinds={"duckdb", "scipy"},
    pool="duckdb_warehouse",
    metadata={"warehouse_tables": ["judge_human_agreement"]},
    description="How well the LLM judge agrees with human raters (CSV: item, system, dimension, rater, "
    "score; columns and dimension names mapped by config): Spearman, Kendall and Pearson with bootstrap 95% "
    "confidence intervals per dimension, next to Krippendorff's alpha between the raters (the ceiling).",
)
def judge_human_agreement(context: AssetExecutionContext, evaluation: EvaluationConfig, warehouse: Warehouse):
    with warehouse.connect() as conn:
        judge = conn.execute(
            f"SELECT item_id, system, dimension, score FROM {WAREHOUSE_SCHEMA}.metric_judge"
        ).pl()
    human = pl.DataFrame()
    unmatched_dimensions: list[str] = []
    if evaluation.human_ratings_path:
        human = read_human_ratings(
            evaluation.human_ratings_path,
            separator=evaluation.human_ratings_separator,
            columns=evaluation.human_ratings_columns,
            dimension_map=evaluation.human_ratings_dimension_map,
            system=evaluation.human_ratings_system,
        )
        # checked before anything is written: ratings of items nobody predicted are an error, not a silent drop
        unmatched_ratings(human, read_items(warehouse), evaluation.human_ratings_path)
        unmatched_dimensions = sorted(
            set(human["dimension"].unique().to_list()) - set(judge["dimension"].unique().to_list())
        )
        if unmatched_dimensions:
            context.log.warning(
                f"human dimensions {unmatched_dimensions} match no judge dimension: map them with "
                "human_ratings_dimension_map"
            )
    rows = (
        agreement(judge.to_dicts(), human.to_dicts(), n_resamples=evaluation.agreement_bootstrap)
        if human.height
        else []
    )
    schema = {"dimension": pl.String, "pairs": pl.Int64, "raters": pl.Int64}
    for m in ("spearman", "kendall", "pearson"):
        schema.update({m: pl.Float64, f"{m}_ci_low": pl.Float64, f"{m}_ci_high": pl.Float64})
    schema.update(
        {
            "rater_alpha": pl.Float64,
            "rater_alpha_ci_low": pl.Float64,
            "rater_alpha_ci_high": pl.Float64,
            "units_rated_twice": pl.Int64,
        }
    )
    table = pl.DataFrame(rows, schema=schema)
    table_md = write_table(warehouse, "judge_human_agreement", table)
    return MaterializeResult(
        metadata={
            **table_md,
            "dagster/row_count": table.height,
            "human_ratings": evaluation.human_ratings_path or "not configured",
            "human_rows": human.height,
            "dimension_map": MetadataValue.json(evaluation.human_ratings_dimension_map),
            "unmatched_dimensions": MetadataValue.json(unmatched_dimensions),
            "agreement": markdown_table(table.with_columns(pl.selectors.float().round(3)), max_rows=20),
        }
    )


@asset(
    group_name=GROUP,
    deps=[AssetKey("base_model"), AssetKey("sft_checkpoint"), AssetKey("dpo_checkpoint")],
    code_version="metric-retention-v2",
    kinds={"pytorch", "duckdb"},
    pool="duckdb_warehouse",
    metadata={"warehouse_tables": ["metric_retention"]},
    description="Retention of general ability per system with weights here: perplexity on a held-out general "
    "text (assets/retention) and, when `mmlu_csv` is set, zero-shot accuracy on that MMLU-format CSV.",
)
def metric_retention(
    context: AssetExecutionContext,
    evaluation: EvaluationConfig,
    warehouse: Warehouse,
    model_store: ModelStore,
):

    text = Path(evaluation.retention_text).read_text(encoding="utf-8")
    mmlu = read_mmlu_csv(evaluation.mmlu_csv) if evaluation.mmlu_csv else []
    rows = []
    for system in systems_with_weights(evaluation, model_store):
        source, adapter = system_weights(system, evaluation, model_store)
        model, tokenizer = load_causal_lm(
            source, adapter=adapter, device=evaluation.device, allow_hub=evaluation.allow_hub
        )
        start = time.perf_counter()
        rows.append(
            {
                "system": system,
                "perplexity": perplexity(model, tokenizer, text),
                "mmlu_accuracy": mmlu_accuracy(model, tokenizer, mmlu) if mmlu else None,
                "mmlu_questions": len(mmlu),
                "text_tokens": len(tokenizer(text).input_ids),
                "seconds": time.perf_counter() - start,
            }
        )
        del model
    schema = {
        "system": pl.String,
        "perplexity": pl.Float64,
        "mmlu_accuracy": pl.Float64,
        "mmlu_questions": pl.Int64,
        "text_tokens": pl.Int64,
        "seconds": pl.Float64,
    }
    table = pl.DataFrame(rows, schema=schema)
    table_md = write_table(warehouse, "metric_retention", table)
    return MaterializeResult(
        metadata={
            **table_md,
            "dagster/row_count": table.height,
            "text": evaluation.retention_text,
            "mmlu_csv": evaluation.mmlu_csv or "not configured",
            "retention": markdown_table(table.with_columns(pl.selectors.float().round(3)), max_rows=20),
        }
    )


# ------------------------------------------------------------------------------------------ scorecard

SCORECARD_TABLES = ("metric_item_scores", "metric_scores", "metric_comparisons", "scorecard_history")


def _read_optional_tables(warehouse: Warehouse, names) -> dict[str, pl.DataFrame | None]:
    with warehouse.connect() as conn:
        present = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [WAREHOUSE_SCHEMA]
            ).fetchall()
        }
        return {
            n: conn.execute(f'SELECT * FROM {WAREHOUSE_SCHEMA}."{n}"').pl() if n in present else None
            for n in names
        }


def _append_history(warehouse: Warehouse, rows: pl.DataFrame, run_id: str) -> int:
    """Earlier evaluations are kept: one row per (run, system, metric) over all emotions, so successive
    checkpoints can be followed; a replayed run replaces its own rows only."""
    with warehouse.connect() as conn:
        conn.register("_history", rows.to_arrow())
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {WAREHOUSE_SCHEMA}.scorecard_history AS "
            "SELECT * FROM _history WHERE false"
        )
        conn.execute(f"DELETE FROM {WAREHOUSE_SCHEMA}.scorecard_history WHERE run_id = ?", [run_id])
        conn.execute(f"INSERT INTO {WAREHOUSE_SCHEMA}.scorecard_history BY NAME SELECT * FROM _history")
        conn.unregister("_history")
        return conn.execute(f"SELECT count(*) FROM {WAREHOUSE_SCHEMA}.scorecard_history").fetchone()[0]


@multi_asset(
    specs=[
        AssetSpec(
            "metric_item_scores",
            group_name=GROUP,
            kinds={"duckdb"},
            metadata={
                "warehouse_tables": ["metric_item_scores"],
                **column_schema_metadata(scorecard.ITEM_SCORE_SCHEMA),
            },
            deps=[AssetKey("evaluation_items"), *[AssetKey(t) for t in scorecard.METRIC_TABLES]],
            description="Every per-item score in long form (system, emotion, item, metric, value), from "
            "whichever metric tables exist; the missing ones are listed in metadata.",
        ),
        AssetSpec(
            "metric_scores",
            group_name=GROUP,
            kinds={"duckdb", "scipy"},
            metadata={
                "warehouse_tables": ["metric_scores"],
                **column_schema_metadata(scorecard.SUMMARY_SCHEMA),
            },
            deps=[AssetKey("metric_item_scores")],
            description="Per system, emotion ('all' = every item) and metric: n, mean, standard error and "
            "a seeded 95% bootstrap interval over items (scipy.stats.bootstrap); set metrics (distinct-n, "
            "entropy) resample the replies. Fewer than 2 items: n and value, no interval.",
        ),
        AssetSpec(
            "metric_comparisons",
            group_name=GROUP,
            kinds={"duckdb", "scipy"},
            metadata={
                "warehouse_tables": ["metric_comparisons", "scorecard_history"],
                **column_schema_metadata(scorecard.COMPARISON_SCHEMA),
            },
            deps=[AssetKey("metric_item_scores"), AssetKey("evaluation_systems")],
            description="Every system against the baseline and against the promoted model, on the same "
            "items: mean difference, paired-bootstrap 95% interval, paired permutation p-value, "
            "Benjamini-Hochberg adjusted p per (system, reference, emotion, language), verdict better / worse / "
            "inconclusive, and `regression` (worse with confidence beyond the margin). Appends the "
            "overall rows to `scorecard_history`.",
        ),
    ],
    code_version="scorecard-v3",  # v2: per-language rows (column `language`); v3: half-sample intervals of set metrics
    pool="duckdb_warehouse",
    can_subset=False,
)
def scorecard_tables(context: AssetExecutionContext, evaluation: EvaluationConfig, warehouse: Warehouse):
    from datetime import UTC, datetime

    start = time.perf_counter()
    tables = _read_optional_tables(
        warehouse, [*scorecard.METRIC_TABLES, "evaluation_items", "evaluation_systems"]
    )
    items = tables.pop("evaluation_items")
    systems = tables.pop("evaluation_systems")
    if items is None or systems is None:
        raise ValueError(
            "evaluation_items / evaluation_systems do not exist: materialize evaluation_items first"
        )
    long, missing = scorecard.item_scores(tables)
    if missing:
        context.log.info(f"scorecard without {missing}: never materialized (switched off or not selected)")
    settings = evaluation.scorecard_settings()
    summaries = scorecard.metric_summaries(
        long, settings, items=items, retention=tables.get("metric_retention")
    )
    baseline = next(iter(systems.filter(pl.col("is_baseline"))["system"].to_list()), None)
    references = {"baseline": baseline} if baseline else {}
    if PROMOTED in set(systems["system"].to_list()):
        references["promoted"] = PROMOTED
    comparisons = scorecard.paired_comparisons(long, references, settings, items=items)
    written = {
        name: write_table(warehouse, name, frame)
        for name, frame in (
            ("metric_item_scores", long),
            ("metric_scores", summaries),
            ("metric_comparisons", comparisons),
        )
    }

    is_overall = (pl.col("emotion") == scorecard.ALL) & (pl.col("language") == scorecard.ALL)
    overall = summaries.filter(is_overall).drop("language")  # scorecard_history keeps its columns
    by_language = summaries.filter(
        (pl.col("emotion") == scorecard.ALL) & (pl.col("language") != scorecard.ALL)
    )
    vs_base = comparisons.filter((pl.col("versus_role") == "baseline") & is_overall).select(
        "system",
        "metric",
        pl.col("delta").alias("delta_vs_baseline"),
        pl.col("delta_ci_low").alias("delta_ci_low"),
        pl.col("delta_ci_high").alias("delta_ci_high"),
        pl.col("p_adjusted").alias("p_adjusted"),
        pl.col("verdict").alias("verdict_vs_baseline"),
    )
    identity = systems.select("system", "model_sha256", "model_run_id", "items_fingerprint")
    history = (
        overall.join(identity, on="system", how="left")
        .join(vs_base, on=["system", "metric"], how="left")
        .with_columns(
            pl.lit(context.run.run_id).alias("run_id"),
            pl.lit(datetime.now(UTC).replace(tzinfo=None)).alias("evaluated_at"),
            pl.lit(baseline, dtype=pl.String).alias("baseline_system"),
        )
    )
    kept = _append_history(warehouse, history, context.run.run_id)
    seconds = round(time.perf_counter() - start, 2)
    no_interval = summaries.filter(pl.col("ci_low").is_null() & (pl.col("n") > 0))
    verdicts = (
        dict(comparisons.filter(is_overall).group_by("verdict").len().iter_rows())
        if comparisons.height
        else {}
    )
    context.log.info(
        f"scorecard: {summaries.height} summaries, {comparisons.height} paired comparisons in "
        f"{seconds} s; overall verdicts {verdicts}"
    )
    yield MaterializeResult(
        asset_key="metric_item_scores",
        metadata={
            **written["metric_item_scores"],
            "dagster/row_count": long.height,
            "missing_metric_tables": MetadataValue.json(missing),
            "metrics": MetadataValue.json(sorted(long["metric"].unique().to_list())),
        },
    )
    yield MaterializeResult(
        asset_key="metric_scores",
        metadata={
            **written["metric_scores"],
            "dagster/row_count": summaries.height,
            "confidence_level": settings.confidence_level,
            "bootstrap_resamples": settings.n_resamples,
            "bootstrap_method": settings.bootstrap_method,
            "seed": settings.seed,
            "rows_without_interval": no_interval.height,
            "why_no_interval": MetadataValue.json(
                dict(no_interval.group_by("interval_note").len().iter_rows())
            ),
            "overall": markdown_table(
                overall.select("system", "metric", "n", "value", "ci_low", "ci_high").with_columns(
                    pl.selectors.float().round(4)
                ),
                max_rows=80,
            ),
            "languages": MetadataValue.json(sorted(set(by_language["language"].to_list()))),
            "by_language": markdown_table(
                by_language.select(
                    "language", "system", "metric", "n", "value", "ci_low", "ci_high"
                ).with_columns(pl.selectors.float().round(4)),
                max_rows=120,
            ),
        },
    )
    yield MaterializeResult(
        asset_key="metric_comparisons",
        metadata={
            **written["metric_comparisons"],
            "dagster/row_count": comparisons.height,
            "references": MetadataValue.json(references),
            "alpha": settings.alpha,
            "correction": "Benjamini-Hochberg per (system, reference, emotion, language)",
            "test": "paired permutation (two-sided), paired bootstrap interval",
            "overall_verdicts": MetadataValue.json(verdicts),
            "scorecard_history_rows": kept,
            "seconds": seconds,
            "overall": markdown_table(
                comparisons.filter(is_overall)
                .select(
                    "system",
                    "versus",
                    "metric",
                    "n",
                    "delta",
                    "delta_ci_low",
                    "delta_ci_high",
                    "p_adjusted",
                    "verdict",
                )
                .with_columns(pl.selectors.float().round(4)),
                max_rows=80,
            ),
        },
    )


# ------------------------------------------------------------------------------------ leaderboard chart

CHART_METRICS = (
    "bertscore_f1",
    "diff_epitome_er",
    "diff_epitome_ip",
    "diff_epitome_ex",
    "judge_general_empathy",
    "alignment_exact",
)


def leaderboard_chart_png(leaderboard: pl.DataFrame, metrics: tuple[str, ...] = CHART_METRICS) -> bytes:
    """One panel per metric: a bar per system over all emotions, then per emotion, each with its 95%
    bootstrap interval as an error bar (no bar where an emotion has too few items for one)."""
    import numpy as np

    plt = pyplot()

    data = leaderboard.filter(pl.col("metric").is_in(list(metrics)) & pl.col("value").is_not_null())
    shown = [m for m in metrics if m in set(data["metric"].to_list())]
    fig, axes = plt.subplots(len(shown) or 1, 1, figsize=(13, 2.8 * max(len(shown), 1)), squeeze=False)
    for ax, metric in zip(axes[:, 0], shown):
        sub = data.filter(pl.col("metric") == metric)
        emotions = ["all"] + sorted(e for e in sub["emotion"].unique().to_list() if e != "all")
        systems = sorted(sub["system"].unique().to_list())
        width = 0.8 / max(len(systems), 1)
        for i, system in enumerate(systems):
            rows = {r["emotion"]: r for r in sub.filter(pl.col("system") == system).iter_rows(named=True)}
            values = np.array([rows[e]["value"] if e in rows else np.nan for e in emotions], dtype=float)
            low = np.array(
                [
                    rows[e]["ci_low"] if e in rows and rows[e]["ci_low"] is not None else np.nan
                    for e in emotions
                ],
                dtype=float,
            )
            high = np.array(
                [
                    rows[e]["ci_high"] if e in rows and rows[e]["ci_high"] is not None else np.nan
                    for e in emotions
                ],
                dtype=float,
            )
            err = np.vstack([np.nan_to_num(values - low, nan=0.0), np.nan_to_num(high - values, nan=0.0)])
            ax.bar(
                np.arange(len(emotions)) + i * width,
                values,
                width,
                yerr=np.clip(err, 0, None),
                capsize=1.5,
                error_kw={"elinewidth": 0.6},
                label=system,
            )
        ax.axvline(0.5 + 0.4 - width / 2, color="grey", lw=0.5)
        ax.set_title(
            metric
            + ("  (lower is better)" if metric.startswith("diff_") else "")
            + "  - mean and 95% bootstrap interval",
            fontsize=10,
        )
        ax.set_xticks(
            np.arange(len(emotions)) + 0.4 - width / 2, emotions, rotation=45, ha="right", fontsize=8
        )
        ax.legend(fontsize=7, ncol=len(systems))
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no metrics yet", ha="center")
    return figure_png(fig, dpi=80)


@asset(
    group_name=GROUP,
    deps=[AssetKey("leaderboard")],
    code_version="leaderboard-chart-v2",
    kinds={"duckdb", "matplotlib"},
    pool="duckdb_warehouse",
    description="The leaderboard per emotion as a bar chart (one panel per headline metric), shown in the "
    "materialization metadata, with the overall system x metric table.",
)
def leaderboard_chart(context: AssetExecutionContext, warehouse: Warehouse, model_store: ModelStore):
    with warehouse.connect() as conn:
        board = conn.execute(f"SELECT * FROM {WAREHOUSE_SCHEMA}.leaderboard").pl()
    # The chart is per emotion over every language; the per-language rows are in leaderboard_by_language.
    board = board.filter(pl.col("language") == "all") if "language" in board.columns else board
    png = leaderboard_chart_png(board)
    path = Path(model_store.root).parent / "reports" / "leaderboard_per_emotion.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    overall = (
        board.filter(pl.col("emotion") == "all")
        .select("system", "metric", "n", "value", "ci_low", "ci_high", "delta", "p_adjusted", "verdict")
        .sort("metric", "system")
    )
    return MaterializeResult(
        metadata={
            "chart": png_markdown(png, "leaderboard per emotion"),
            "chart_path": MetadataValue.path(str(path)),
            "overall": markdown_table(overall.with_columns(pl.selectors.float().round(4)), max_rows=60),
            "regressions": int(board["regression"].fill_null(False).sum()),
            "verdicts_overall": MetadataValue.json(
                dict(
                    board.filter((pl.col("emotion") == "all") & pl.col("verdict").is_not_null())
                    .group_by("verdict")
                    .len()
                    .iter_rows()
                )
            ),
        }
    )
