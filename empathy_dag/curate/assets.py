"""Curate stage: the dialogues that may train a model, after filtering.

CONTRACT: `curated_dialogues` is partitioned per emotion; its frame has every column of `dialogues`
plus `origin` ("corpus" for ingested rows, "synthetic" for generated ones) and `generator` (model id
for synthetic rows, null otherwise). Downstream stages (pairs, train, evaluate) read only this."""

import polars as pl
from dagster import AssetExecutionContext, Output, asset

from empathy_dag.io_managers import per_partition
from empathy_dag.metadata import frame_metadata
from empathy_dag.partitions import emotion_partitions, single_run

CURATE_CODE_VERSION = "curate-v1"


def with_origin(frame: pl.DataFrame, origin: str, generator: str | None = None) -> pl.DataFrame:
    return frame.with_columns(pl.lit(origin).alias("origin"), pl.lit(generator, dtype=pl.String).alias("generator"))


@asset(
    group_name="curate",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    code_version=CURATE_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    description="Dialogues that may train a model: ingested and synthetic rows that passed every filter.",
)
def curated_dialogues(context: AssetExecutionContext, dialogues):
    frames = {e: with_origin(df, "corpus") for e, df in per_partition(context, dialogues).items()}
    return Output(frames, metadata=frame_metadata(frames, ["emotion", "origin", "speaker_utterance", "listener_reply"]))
