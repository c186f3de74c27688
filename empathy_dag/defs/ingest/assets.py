"""Ingest assets: taxonomy, validated corpus (+ quarantine), per-emotion situations and dialogues,
and GoEmotions examples for the emotion classifier."""

import hashlib
from pathlib import Path

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetOut,
    Config,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from empathy_dag.defs.checks import frame_check_results, frame_check_specs
from empathy_dag.defs.io_managers import per_partition
from empathy_dag.defs.metadata import column_schema_metadata, frame_metadata, markdown_table, table_metadata
from empathy_dag.defs.partitions import emotion_partitions, single_run
from empathy_dag.defs.warehouse.resource import WAREHOUSE_SCHEMA
from empathy_dag.ingest.corpus import dialogues_frame, ingest_files, situations_frame
from empathy_dag.ingest.readers import read_goemotions_tsv
from empathy_dag.resources import CorpusSources, GoEmotionsSource
from empathy_dag.taxonomy import default_taxonomy, taxonomy_files

GOEMOTIONS_SCHEMA = {"id": pl.String, "text": pl.String, "labels": pl.List(pl.String), "split": pl.String}
INGEST_CODE_VERSION = "ingest-v2"  # v2: NFKC/invisible-free ids, control tokens neutralised
# The ingest step's own version. v3: validation in polars (same rows, reasons and order, so no change
# for any file the previous version read), but a JSONL file over 20 MB is now read in blocks instead of
# rejected whole (the cap is max_file_mb, 2048 MB by default): a landing zone holding one changes output.
INGEST_CORPUS_CODE_VERSION = "ingest-v3"


def _files_version(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


@asset(
    group_name="taxonomy",
    code_version=_files_version(taxonomy_files()),
    io_manager_key="warehouse_io_manager",
    kinds={"duckdb", "polars"},
    description="The 28 GoEmotions labels with sentiment and Ekman groups, definitions, opposites "
    "(EmPO rejected responses) and the EmpatheticDialogues labels that map onto each.",
)
def emotion_taxonomy(context: AssetExecutionContext) -> pl.DataFrame:
    tax = default_taxonomy()
    rows = tax.as_rows()
    df = pl.DataFrame(rows).with_columns(pl.col("ed_labels").list.join(", "))
    context.add_output_metadata(
        {
            **table_metadata(df, table=f"{WAREHOUSE_SCHEMA}.emotion_taxonomy", preview_rows=0),
            "taxonomy": markdown_table(
                df.select("id", "label", "sentiment", "ekman", "opposite", "ed_labels"), max_rows=28
            ),
            "ed_labels_mapped": len(tax.ed_mapping),
        }
    )
    return df


@multi_asset(
    group_name="ingest",
    code_version=INGEST_CORPUS_CODE_VERSION,
    deps=[emotion_taxonomy],
    outs={
        # The three outputs are one snapshot of the landing zone: they go through the all-or-nothing IO
        # manager (io_managers.AllOrNothingIOManager), so a fault between them leaves the previous three.
        "corpus_rows": AssetOut(
            io_manager_key="ingest_io_manager",
            kinds={"parquet", "polars"},
            metadata={"stored_in": "parquet"},
            description="Every valid row of every source file, all emotions, with stable content-hash ids.",
        ),
        "quarantine": AssetOut(
            io_manager_key="ingest_io_manager",
            kinds={"duckdb", "polars"},
            metadata={"stored_in": "warehouse"},
            description="Rows and files that failed validation: file, line, reason. Raw files are archived.",
        ),
        "ingest_file_log": AssetOut(
            io_manager_key="ingest_io_manager",
            kinds={"duckdb", "polars"},
            metadata={"stored_in": "warehouse"},
            description="One row per source file: rows in, valid, quarantined, skipped, balanced.",
        ),
    },
)
def ingest_corpus(context: AssetExecutionContext, corpus_sources: CorpusSources):
    files, skipped = corpus_sources.listing()
    # ingest_files never raises for a file: whatever one file does ends as its own quarantine entry
    # (an unbalanced file is held back whole there), so one file cannot stop the others.
    result = ingest_files(
        files,
        taxonomy=default_taxonomy(),
        limits=corpus_sources.limits(),
        archive_dir=Path(corpus_sources.archive_dir),
        skipped=skipped,
        # Beside the raw archive: every run re-reads the whole landing zone, and the guesses of the texts
        # it read before are reused (same values; ingest's time is mostly the language identifier). Not in
        # the aws profile (landing zone on S3): each run is a fresh task whose local disk would not keep it.
        language_cache=None
        if corpus_sources.landing_s3_uri
        else Path(corpus_sources.archive_dir).parent / "cache" / "language_guesses.parquet",
    )
    corpus, quarantine, summary = result.corpus, result.quarantine, result.summary()
    rows_in = int(summary["rows_in"].sum() or 0)
    totals = {
        "files": len(files),
        "paths_not_read": len(skipped),
        "rows_in": rows_in,
        "valid": corpus.height,
        "quarantined_rows": quarantine.filter(pl.col("line").is_not_null()).height,
        "rejected_files": quarantine.filter(pl.col("line").is_null()).height,
        "skipped": int(summary["skipped"].sum() or 0),
        # Valid rows whose text held chat-template control tokens, broken on the way in (records.py).
        "control_tokens_neutralised": sum(
            o.normalised.get("control_tokens_neutralised", 0) for o in result.outcomes
        ),
    }
    context.log.info(f"ingested {totals}")
    yield Output(
        corpus,
        output_name="corpus_rows",
        metadata={
            **table_metadata(corpus, preview_rows=0),
            **totals,
            "dagster/row_count": corpus.height,
            "files": markdown_table(summary, max_rows=50),
            "emotions_present": corpus["emotion"].n_unique() if corpus.height else 0,
        },
    )
    yield Output(
        quarantine,
        output_name="quarantine",
        metadata={
            **table_metadata(quarantine, table=f"{WAREHOUSE_SCHEMA}.quarantine", preview_rows=0),
            "reasons": MetadataValue.json(
                dict(quarantine.group_by("reason_code").len().sort("reason_code").iter_rows())
            ),
            "preview": markdown_table(
                quarantine.select("file", "line", "reason_code", "reason"), max_rows=10
            ),
        },
    )
    yield Output(
        summary,
        output_name="ingest_file_log",
        metadata=table_metadata(summary, table=f"{WAREHOUSE_SCHEMA}.ingest_file_log", preview_rows=10),
    )


class PerEmotionCheckConfig(Config):
    min_rows_per_emotion: int = 5


def _split_by_emotion(context: AssetExecutionContext, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {e: frame.filter(pl.col("emotion") == e) for e in context.partition_keys}


@asset(
    group_name="ingest",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    code_version=INGEST_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    kinds={"parquet", "polars"},
    check_specs=frame_check_specs("situations"),
    description="Distinct situations per emotion (id = hash of emotion, language, text).",
)
def situations(context: AssetExecutionContext, config: PerEmotionCheckConfig, corpus_rows: pl.DataFrame):
    frames = _split_by_emotion(context, situations_frame(corpus_rows))
    yield Output(frames, metadata=frame_metadata(frames, ["emotion", "language", "domain", "situation"]))
    yield from frame_check_results(
        "situations",
        frames,
        schema={
            "situation_id": pl.String,
            "emotion": pl.String,
            "situation": pl.String,
            "language": pl.String,
        },
        id_column="situation_id",
        text_columns=("situation",),
        min_rows=config.min_rows_per_emotion,
    )


@asset(
    group_name="ingest",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    code_version=INGEST_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    kinds={"parquet", "polars"},
    check_specs=frame_check_specs("dialogues"),
    description="Two-turn dialogues (speaker utterance, empathetic listener reply) per emotion.",
)
def dialogues(
    context: AssetExecutionContext, config: PerEmotionCheckConfig, corpus_rows: pl.DataFrame, situations
):
    known = {e: set(df["situation_id"].to_list()) for e, df in per_partition(context, situations).items()}
    frames = _split_by_emotion(context, dialogues_frame(corpus_rows))
    orphan = {e: df.filter(~pl.col("situation_id").is_in(list(known[e]))).height for e, df in frames.items()}
    if any(orphan.values()):
        raise RuntimeError(f"dialogues without a situation: {orphan}")
    yield Output(
        frames,
        metadata=frame_metadata(frames, ["emotion", "language", "speaker_utterance", "listener_reply"]),
    )
    yield from frame_check_results(
        "dialogues",
        frames,
        schema={
            "dialogue_id": pl.String,
            "situation_id": pl.String,
            "emotion": pl.String,
            "speaker_utterance": pl.String,
            "listener_reply": pl.String,
        },
        id_column="dialogue_id",
        text_columns=("speaker_utterance", "listener_reply"),
        min_rows=config.min_rows_per_emotion,
    )


@asset(
    group_name="ingest",
    code_version=INGEST_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    kinds={"parquet", "polars"},
    metadata=column_schema_metadata(
        GOEMOTIONS_SCHEMA,
        {
            "id": "GoEmotions comment id",
            "text": "the comment",
            "split": "GoEmotions split (train / dev / test)",
        },
    ),
    deps=[emotion_taxonomy],
    description="GoEmotions comments with their labels (train/dev/test) for the emotion classifier.",
)
def goemotions_examples(context: AssetExecutionContext, goemotions: GoEmotionsSource) -> pl.DataFrame:
    if not goemotions.available():
        raise FileNotFoundError(
            f"GoEmotions TSVs not found in {goemotions.data_dir}: point the goemotions resource's data_dir "
            "(env EMPATHY_DAG_GOEMOTIONS_DIR) at a folder with train.tsv, dev.tsv, test.tsv"
        )
    labels = default_taxonomy().labels
    rows = []
    for split in ("train", "dev", "test"):
        part = read_goemotions_tsv(Path(goemotions.data_dir) / f"{split}.tsv", labels)
        if goemotions.max_rows_per_split:
            part = part[: goemotions.max_rows_per_split]
        rows.extend(part)
    df = pl.DataFrame(rows, schema=GOEMOTIONS_SCHEMA)
    counts = df.explode("labels").group_by("labels").len().sort("len", descending=True)
    context.add_output_metadata(
        {
            "dagster/row_count": df.height,
            "label_counts": markdown_table(counts, max_rows=28),
            "splits": MetadataValue.json(dict(df.group_by("split").len().iter_rows())),
        }
    )
    return df
