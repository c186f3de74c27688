"""Curate stage: the dialogues that may train a model, after filtering.

CONTRACT: `curated_dialogues` is partitioned per emotion; its frame has every column of `dialogues`
plus `origin` ("corpus" for ingested rows, "synthetic" for generated ones) and `generator` (model id
for synthetic rows, null otherwise). Downstream stages (pairs, train, evaluate) read only this.

Every row goes through the filters of `curate/filters.py` (`curate_partitions`): ingested rows and
synthetic rows (from `synthetic_dialogues`, when materialized) alike, each under its source's policy
(`CurateConfig.source_skip_filters`; no policy may skip the empty check or dedup). Duplicates are found
across sources and across every partition of the run (main_job runs all 28 in one step). What the
filters drop lands in `filter_report` with the filter, the reason and the source. The
emotion-consistency filter uses the `emotion_classifier` model folder when it exists."""

from typing import Literal

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)
from pydantic import Field

from empathy_dag.curate.classifier import (
    NGRAM_ENCODER,
    classifier_fingerprint,
    is_saved_any,
    load_emotion_classifier,
    saved_classifier_metrics,
    train_emotion_classifier,
    train_finetuned_emotion_classifier,
)
from empathy_dag.curate.filters import (
    CURATION_REPORT_SCHEMA,
    DEFAULT_LENGTH_BOUNDS,
    DEFAULT_SOURCE_POLICIES,
    FILTER_ORDER,
    CurationPolicy,
    FilterConfig,
    curate_partitions,
)
from empathy_dag.defs.io_managers import per_partition
from empathy_dag.defs.metadata import frame_metadata, markdown_table
from empathy_dag.defs.partitions import emotion_partitions, single_run
from empathy_dag.models import EMBEDDED_MINILM, folder_written_aside, sha256_tree
from empathy_dag.resources import ModelStore
from empathy_dag.taxonomy import default_taxonomy
from empathy_dag.text_classifier import FineTuneSettings, read_id_file

# v3: filter_report keeps the dialogue fields; v4: every source filtered (per-source policy), dedup across
# partitions, length bounds per language (max 2,000 en), filter_report has `source`; v5: unsafe-word lists per
# language with [any turn] / [reply] sections (the speaker's own account is not dropped for its words)
CURATE_CODE_VERSION = "curate-v5"
CLASSIFIER_CODE_VERSION = "emotion-classifier-v2"  # v2: fine-tuned multi-label encoder by default
CLASSIFIER_FOLDER = "emotion_classifier"

# Columns of `dialogues` (ingest/corpus.py::dialogues_frame), the schema synthetic rows are mapped onto.
DIALOGUE_COLUMNS = {
    "dialogue_id": pl.String,
    "situation_id": pl.String,
    "emotion": pl.String,
    "language": pl.String,
    "domain": pl.String,
    "situation": pl.String,
    "speaker_utterance": pl.String,
    "listener_reply": pl.String,
    "source": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
}


def with_origin(frame: pl.DataFrame, origin: str, generator: str | None = None) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit(origin).alias("origin"), pl.lit(generator, dtype=pl.String).alias("generator")
    )


def synthetic_as_dialogues(synthetic: pl.DataFrame, corpus_schema: dict | None = None) -> pl.DataFrame:
    """Synthetic rows on the `dialogues` schema (+ origin, generator). Their ids were computed with
    `ingest.records.situation_id/dialogue_id` when generated, so they dedupe like ingested rows."""
    schema = dict(corpus_schema or DIALOGUE_COLUMNS)
    if synthetic.height == 0:
        return with_origin(pl.DataFrame(schema=schema), "synthetic")
    out = synthetic.with_columns(
        pl.lit("synthetic").alias("source"),
        (pl.lit("synthetic:") + pl.col("prompt_version")).alias("source_file")
        if "prompt_version" in synthetic.columns
        else pl.lit("synthetic").alias("source_file"),
        pl.lit(None, dtype=pl.Int64).alias("source_line"),
    )
    cols = [
        pl.col(c).cast(t) if c in out.columns else pl.lit(None, dtype=t).alias(c) for c, t in schema.items()
    ]
    return out.select(*cols, pl.lit("synthetic").alias("origin"), pl.col("generator").cast(pl.String))


def filtered_as_dialogues(report: pl.DataFrame, curated_schema: dict) -> pl.DataFrame:
    """`filter_report` rows as curated_dialogues rows (same columns, in order) plus `filter`: what review
    reinstates when people overrule a filter. Reports written before curate-v3 lack the dialogue
    fields; they give an empty frame (nothing can be reinstated from them)."""
    schema = {c: t for c, t in curated_schema.items() if c not in ("origin", "generator")}
    if report.height == 0 or "listener_reply" not in report.columns:
        return pl.DataFrame(schema={**curated_schema, "filter": pl.String})
    rows = synthetic_as_dialogues(report.rename({"id": "dialogue_id"}), schema)
    if "source" in report.columns and "origin" in report.columns:
        # From curate-v4 on ingested rows are filtered too: one brought back keeps its own origin and source.
        corpus = report["origin"] == "corpus"
        rows = rows.with_columns(
            pl.when(corpus).then(report["origin"]).otherwise(pl.col("origin")).alias("origin"),
            pl.when(corpus).then(report["source"]).otherwise(pl.col("source")).alias("source"),
        )
    return rows.select(list(curated_schema)).with_columns(report["filter"])


class CurateConfig(Config):
    emotion_consistency: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto: use the emotion_classifier folder when it exists, else skip the filter (and say "
        "so in metadata); on: fail without it; off: never.",
    )
    min_chars: int = Field(
        default=12,
        description="Shortest turn (characters) for a row whose source and "
        "language have no entry in length_bounds.",
    )
    max_chars: int = Field(
        default=2000,
        description="Longest turn otherwise; SYNTHEMPATHY replies run to "
        "~150 words (~1,000 characters), which the old 600 dropped.",
    )
    length_bounds: dict[str, list[int]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_LENGTH_BOUNDS.items()},
        description="[min, max] characters per turn, keyed by source, origin (corpus/synthetic) or language, "
        "looked up in that order.",
    )
    source_skip_filters: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_SOURCE_POLICIES.items()},
        description="Filters a source skips, keyed by source (seed, empathetic_dialogues, a file stem) or origin "
        "(corpus, synthetic). Human-written corpora skip refusal, prompt_echo and emotion_consistency by "
        "default; empty, exact_duplicate and near_duplicate can never be skipped.",
    )
    near_duplicate_threshold: float = Field(
        default=0.8,
        description="MinHash Jaccard above which rows are near-duplicates (character 5-gram shingles).",
    )
    echo_threshold: float = 0.8
    consistency_min_probability: float = 0.5
    disabled_filters: list[str] = Field(
        default_factory=list, description=f"Any of {', '.join(FILTER_ORDER)}."
    )


def _frames(value, keys) -> dict[str, pl.DataFrame | None]:
    return {k: value.get(k) for k in keys} if isinstance(value, dict) else {keys[0]: value}


@multi_asset(
    group_name="curate",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    outs={
        "curated_dialogues": AssetOut(
            io_manager_key="parquet_io_manager",
            code_version=CURATE_CODE_VERSION,
            kinds={"parquet", "polars"},
            description="Dialogues that may train a model: ingested rows and synthetic rows that passed "
            "every filter (origin, generator say which).",
        ),
        "filter_report": AssetOut(
            io_manager_key="parquet_io_manager",
            code_version=CURATE_CODE_VERSION,
            kinds={"parquet", "polars"},
            description="Every row a filter removed, ingested or synthetic: id, emotion, origin, source, filter, "
            "reason, and the "
            "dialogue itself (situation, speaker_utterance, listener_reply, ...) so that review can reinstate it.",
        ),
    },
    ins={
        "dialogues": AssetIn(),
        # A machine that never ran the generate stage still curates its corpus.
        "synthetic_dialogues": AssetIn(metadata={"allow_missing_partitions": True}),
    },
    deps=["emotion_classifier"],
)
def curated_dialogues(
    context: AssetExecutionContext,
    config: CurateConfig,
    model_store: ModelStore,
    dialogues,
    synthetic_dialogues,
):
    keys = list(context.partition_keys)
    corpus = per_partition(context, dialogues)
    synthetic = _frames(synthetic_dialogues, keys)
    taxonomy = default_taxonomy()
    classifier, consistency_note = None, "off by config"
    if config.emotion_consistency != "off":
        folder = model_store.fetch(CLASSIFIER_FOLDER, missing_ok=True)
        if is_saved_any(folder):
            classifier = load_emotion_classifier(folder)
            consistency_note = f"on (classifier at {folder}, macro-F1 {classifier.metrics.get('macro_f1')})"
        elif config.emotion_consistency == "on":
            raise FileNotFoundError(
                f"emotion_consistency=on but no classifier at {folder}: materialize "
                "`emotion_classifier` (needs GoEmotions) or set emotion_consistency=auto/off"
            )
        else:
            consistency_note = f"skipped: no emotion_classifier at {folder} (materialize it to enable)"
    context.log.info(f"emotion consistency filter: {consistency_note}")
    fconfig = FilterConfig(
        min_chars=config.min_chars,
        max_chars=config.max_chars,
        near_duplicate_threshold=config.near_duplicate_threshold,
        echo_threshold=config.echo_threshold,
        consistency_min_probability=config.consistency_min_probability,
        disabled=tuple(config.disabled_filters),
    )
    policy = CurationPolicy(
        skip={k: tuple(v) for k, v in config.source_skip_filters.items()},
        length_bounds={k: (int(v[0]), int(v[1])) for k, v in config.length_bounds.items()},
        default_length=(config.min_chars, config.max_chars),
    )
    frames, columns = {}, {}
    for emotion in keys:
        base = with_origin(corpus[emotion], "corpus")
        columns[emotion] = base.columns
        synth = synthetic.get(emotion)
        parts = [base]
        if synth is not None and synth.height:
            mapped = synthetic_as_dialogues(synth, dict(corpus[emotion].schema))
            # prompt_version rides along for filter_report (review shows it), then is dropped.
            if "prompt_version" in synth.columns:
                mapped = mapped.with_columns(synth["prompt_version"].cast(pl.String))
            parts.append(mapped)
        frames[emotion] = pl.concat(parts, how="diagonal_relaxed")
    result = curate_partitions(
        frames,
        fconfig,
        policy,
        predict_groups=(lambda texts: classifier.predict_groups(texts, taxonomy)) if classifier else None,
        sentiment_of=taxonomy.sentiment,
    )
    curated = {e: result.kept[e].select(columns[e]) for e in keys}
    reports = result.report
    totals = result.counts_per_filter()
    per_source = result.counts()
    synthetic_in = sum(n for (origin, _), n in result.rows_in.items() if origin == "synthetic")
    synthetic_kept = sum(int((f["origin"] == "synthetic").sum()) for f in curated.values() if f.height)
    all_reports = [r for r in reports.values() if r.height]
    report_preview = pl.concat(all_reports) if all_reports else pl.DataFrame(schema=CURATION_REPORT_SCHEMA)
    yield Output(
        curated,
        output_name="curated_dialogues",
        metadata={
            **frame_metadata(curated, ["emotion", "origin", "speaker_utterance", "listener_reply"]),
            "synthetic_in": synthetic_in,
            "synthetic_kept": synthetic_kept,
            "rows_in": sum(result.rows_in.values()),
            "dropped_per_filter": MetadataValue.json(totals),
            "emotion_consistency": consistency_note,
        },
    )
    yield Output(
        reports,
        output_name="filter_report",
        metadata={
            "dagster/row_count": report_preview.height,
            "dropped_per_filter": MetadataValue.json(totals),
            "dropped_per_filter_and_source": markdown_table(per_source, max_rows=60),
            "emotion_consistency": consistency_note,
            "preview": markdown_table(
                report_preview.select("emotion", "source", "filter", "reason", "text"), max_rows=15
            ),
        },
    )


class EmotionClassifierConfig(Config):
    model: Literal["finetuned", "linear", "ngram"] = Field(
        default="finetuned",
        description="finetuned: the encoder fine-tuned multi-label with transformers' Trainer, "
        "thresholds tuned on dev (GoEmotions' recipe); linear: frozen embeddings + logistic regression (minutes "
        "on a CPU, macro-F1 ~0.24); ngram: the same heads over hashed word and character n-grams, no encoder "
        "(the choice for curating 100k+ rows on a CPU: BENCHMARKS.md 'Emotion consistency at scale').",
    )
    max_train_rows: int = Field(
        default=20000,
        description="Training rows sampled from the train split "
        "(0 = all); MiniLM embeds ~200-400 rows/s on 2 CPU cores.",
    )
    max_eval_rows: int = Field(default=0, description="finetuned: dev and test rows sampled (0 = all).")
    regularization_c: float = 4.0
    encoder: str = Field(
        default=EMBEDDED_MINILM, description="Encoder: embedded:minilm, a folder or a hub id."
    )
    epochs: float = 4.0
    max_steps: int = Field(default=0, description="> 0 overrides epochs (tests).")
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_length: int = 64
    holdout_ids: str | None = Field(
        default=None,
        description="File of GoEmotions comment ids kept out of "
        "training and threshold tuning, and used as the reported test set.",
    )


@asset(
    group_name="curate",
    code_version=CLASSIFIER_CODE_VERSION,
    kinds={"pytorch", "safetensors"},
    description="Emotion classifier for the consistency filter and the alignment namer: the encoder fine-tuned "
    "multi-label on GoEmotions train (thresholds tuned on dev, macro-F1 on test next to the published 0.46), "
    "or a linear head on frozen MiniLM embeddings (`model=linear`). A model folder with sha256 and held-out "
    "metrics as metadata; reused, not retrained, while its data and config are unchanged.",
)
def emotion_classifier(
    context: AssetExecutionContext,
    config: EmotionClassifierConfig,
    model_store: ModelStore,
    goemotions_examples: pl.DataFrame,
) -> MaterializeResult:
    import tempfile
    from pathlib import Path

    from dagster import DataVersion

    taxonomy = default_taxonomy()
    fingerprint = classifier_fingerprint(
        goemotions_examples, config.model_dump(), CLASSIFIER_CODE_VERSION, config.holdout_ids
    )
    folder = model_store.fetch(CLASSIFIER_FOLDER, missing_ok=True)
    metrics = saved_classifier_metrics(folder)
    reused = bool(metrics and metrics.get("fingerprint") == fingerprint)
    published = None
    if not reused:
        holdout = read_id_file(config.holdout_ids) if config.holdout_ids else None
        if config.model == "finetuned":
            settings = FineTuneSettings(
                epochs=config.epochs,
                max_steps=config.max_steps or -1,
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                max_length=config.max_length,
            )
            with tempfile.TemporaryDirectory() as work:
                clf = train_finetuned_emotion_classifier(
                    goemotions_examples,
                    taxonomy,
                    settings,
                    Path(work),
                    encoder=config.encoder,
                    max_train_rows=config.max_train_rows,
                    max_eval_rows=config.max_eval_rows,
                    holdout_ids=holdout,
                )
        else:
            if holdout:
                raise ValueError("holdout_ids is supported by model=finetuned only")
            clf = train_emotion_classifier(
                goemotions_examples,
                taxonomy,
                encoder=NGRAM_ENCODER if config.model == "ngram" else config.encoder,
                max_train_rows=config.max_train_rows,
                c=config.regularization_c,
            )
        clf.metrics = {**(clf.metrics or {}), "fingerprint": fingerprint}
        with folder_written_aside(folder) as tmp:
            clf.save(tmp)
        published = model_store.persist(CLASSIFIER_FOLDER)
        metrics = clf.metrics
    context.log.info(
        f"emotion classifier ({config.model}{', reused' if reused else ''}): macro-F1 "
        f"{metrics.get('macro_f1')} {metrics.get('macro_f1_ci95', '')}"
    )
    return MaterializeResult(
        data_version=DataVersion(fingerprint),
        metadata={
            "path": MetadataValue.path(str(folder)),
            "published_to": published,
            "reused": reused,
            "model": config.model,
            "sha256": sha256_tree(folder, patterns=("*.safetensors", "*.json")),
            "macro_f1": metrics.get("macro_f1"),
            "macro_f1_ci95": MetadataValue.json(metrics.get("macro_f1_ci95")),
            "published_bert_base_macro_f1": metrics.get("published_bert_base_macro_f1"),
            "micro_f1": metrics.get("micro_f1"),
            "f1_per_label": MetadataValue.json(metrics.get("f1_per_label")),
            "thresholds": MetadataValue.json(metrics.get("thresholds")),
            "sentiment_macro_f1": metrics.get("sentiment_macro_f1"),
            "accuracy": metrics.get("accuracy"),
            "chance_macro_f1": metrics.get("chance_macro_f1"),
            "train_rows": metrics.get("train_rows"),
            "held_out": f"{metrics.get('held_out_split')} ({metrics.get('held_out_rows')} rows)",
            "train_test_overlap_ids": metrics.get("train_test_overlap_ids"),
            "holdout_ids_given": metrics.get("holdout_ids_given", 0),
            "train_seconds": metrics.get("train_seconds"),
            "labels": 28,
        },
    )
