"""Splits: grouped by situation, stable under added data, roughly stratified; and the test fixtures
(a stand-in `curated_dialogues` built from the shipped seed corpus) that the pairs and train tests use."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from dagster import asset, materialize

from empathy_dag.defs.partitions import emotion_partitions, single_run
from empathy_dag.settings import assets_dir
from empathy_dag.taxonomy import default_taxonomy

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def seed_dialogues() -> pl.DataFrame:
    """The curated_dialogues contract built from the real seed corpus (en + ja), all emotions."""
    from empathy_dag.ingest.corpus import dialogues_frame, ingest_files

    files = sorted((assets_dir() / "seed").glob("*.jsonl"))
    result = ingest_files(files, taxonomy=default_taxonomy())
    return dialogues_frame(result.corpus).with_columns(
        pl.lit("corpus").alias("origin"), pl.lit(None, dtype=pl.String).alias("generator")
    )


def curated_stand_in(frame: pl.DataFrame):
    """An asset with the key and contract of `curated_dialogues`, serving `frame` (owned by another stage,
    which is being extended concurrently: the tests rely only on its contract)."""

    @asset(
        name="reviewed_dialogues",
        partitions_def=emotion_partitions,
        backfill_policy=single_run,
        io_manager_key="parquet_io_manager",
    )
    def _curated(context):
        return {e: frame.filter(pl.col("emotion") == e) for e in context.partition_keys}

    return _curated


def all_emotions_tags() -> dict:
    labels = default_taxonomy().labels
    return {RANGE_START: labels[0], RANGE_END: labels[-1]}


def read_partition(resources: dict, asset_name: str, emotion: str) -> pl.DataFrame:
    base = Path(resources["parquet_io_manager"].base_dir)
    return pl.read_parquet(base / asset_name / f"{emotion}.parquet")


def test_split_is_a_pure_function_of_the_situation():
    from empathy_dag.pairs.splits import SplitFractions, assign_splits, split_of

    df = assign_splits(seed_dialogues())
    # every dialogue of a situation is in one split
    per_situation = df.group_by("situation_id").agg(pl.col("split").n_unique().alias("n"))
    assert per_situation["n"].max() == 1
    assert set(df["split"].unique()) == {"train", "validation", "test"}
    # the same id gives the same split whatever else is in the frame
    sid = df["situation_id"][0]
    assert split_of(sid) == df.filter(pl.col("situation_id") == sid)["split"][0]
    # a different salt is a different split definition
    other = assign_splits(df.drop("split", "split_bucket"), SplitFractions(salt="other"))
    assert (other["split"] != df["split"]).sum() > 0
    with pytest.raises(ValueError):
        SplitFractions(0.9, 0.2, 0.1)


def test_splits_are_stable_under_added_data_and_roughly_stratified():
    from empathy_dag.pairs.splits import assign_splits

    full = seed_dialogues()
    english = full.filter(pl.col("language") == "en")
    before = assign_splits(english)
    after = assign_splits(full)  # new (Japanese) rows added
    joined = before.join(after, on="dialogue_id", suffix="_after")
    assert joined.height == before.height
    assert (joined["split"] == joined["split_after"]).all()
    # stratification in expectation: every emotion keeps most of its rows in train
    share = after.group_by("emotion").agg((pl.col("split") == "train").mean().alias("train_share"))
    assert share["train_share"].median() >= 0.6
    assert after.filter(pl.col("split") == "train").height / after.height == pytest.approx(0.8, abs=0.1)


def test_dataset_splits_asset_is_stable_when_data_is_added(resources):
    from empathy_dag.defs.pairs.assets import dataset_splits

    full = seed_dialogues()
    part = full.filter(pl.col("language") == "en")
    r1 = materialize([curated_stand_in(part), dataset_splits], resources=resources, tags=all_emotions_tags())
    assert r1.success
    first = {e: read_partition(resources, "dataset_splits", e) for e in ("joy", "sadness", "anger")}
    r2 = materialize([curated_stand_in(full), dataset_splits], resources=resources, tags=all_emotions_tags())
    assert r2.success
    for emotion, old in first.items():
        new = read_partition(resources, "dataset_splits", emotion)
        assert new.height > old.height
        joined = old.join(new, on="dialogue_id", suffix="_new")
        assert joined.height == old.height
        # Rows of the hash cut never move. Only a row that was topped up into test (the minimum per emotion)
        # may go back to train, once the added data fills the emotion's test region (splits.py docstring).
        natural = joined.filter(~pl.col("top_up"))
        assert natural.height > 0 and (natural["split"] == natural["split_new"]).all()
        moved = joined.filter(pl.col("split") != pl.col("split_new"))
        assert moved["top_up"].all() and (moved["split_new"] == "train").all()
