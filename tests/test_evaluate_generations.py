"""`evaluation_set` and `test_generations` on the real base model: the test split's speaker turns of
two emotions (one single-run over both partitions) become stable evaluation items, answered through
the generation engine, cached on a second run, and picked up by `evaluation_items` next to nothing else.

`dataset_splits` is produced by the pairs stage; this test stands in a minimal upstream with that
asset's contract (curated_dialogues columns + `split`) built from real EmpatheticDialogues turns."""

import contextlib

import duckdb
import polars as pl
import pytest
from dagster import AssetMaterialization, asset, instance_for_test, materialize

from empathy_dag.defs.evaluate import assets as ev
from empathy_dag.defs.evaluate.resources import EvaluationConfig
from empathy_dag.defs.partitions import emotion_partitions, single_run
from empathy_dag.taxonomy import default_taxonomy
from tests.conftest import shared_file

RANGE = {"dagster/asset_partition_range_start": "anger", "dagster/asset_partition_range_end": "annoyance"}


def _splits_from_ed() -> dict[str, pl.DataFrame]:
    """Real ED turns mapped onto two GoEmotions labels (angry, furious -> anger; annoyed ->
    annoyance): 3 test rows and 2 train rows each."""
    path = shared_file("empathetic_dialogues", "utterance_pairs_valid.csv")
    tax = default_taxonomy()
    df = pl.read_csv(path, infer_schema_length=0).filter(pl.col("level") == "1")
    df = df.with_columns(pl.col(c).str.replace_all("_comma_", ",") for c in ("sp1", "sp2", "prompt"))
    df = df.with_columns(
        pl.col("context").map_elements(tax.normalize_label, return_dtype=pl.String).alias("emotion")
    )
    out = {}
    for emotion in ("anger", "annoyance"):
        sub = df.filter(pl.col("emotion") == emotion).head(5)
        out[emotion] = sub.select(
            pl.col("conv_id").alias("dialogue_id"),
            pl.col("conv_id").alias("situation_id"),
            "emotion",
            pl.lit("en").alias("language"),
            pl.col("prompt").alias("situation"),
            pl.col("sp1").alias("speaker_utterance"),
            pl.col("sp2").alias("listener_reply"),
            pl.Series("split", ["test", "test", "test", "train", "train"]),
        )
    return out


@asset(
    name="dataset_splits",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    io_manager_key="parquet_io_manager",
)
def dataset_splits_from_ed(context):
    frames = _splits_from_ed()
    return {k: frames[k] for k in context.partition_keys}


@pytest.mark.slow
@pytest.mark.shared_data
def test_generations_for_base_cached_and_collected(resources, data_root, base_model_dir):
    with contextlib.ExitStack() as stack:
        _generations_for_base_cached_and_collected(stack, resources, data_root, base_model_dir)


def _generations_for_base_cached_and_collected(stack, resources, data_root, base_model_dir):
    resources["model_store"].folder("base_model").symlink_to(base_model_dir, target_is_directory=True)
    resources["evaluation"] = EvaluationConfig(systems=["base"], max_new_tokens=12, max_items_per_emotion=2)
    instance = stack.enter_context(instance_for_test())
    # the model the replies come from, as base_model records it: every row names it
    instance.report_runless_asset_event(AssetMaterialization("base_model", metadata={"sha256": "a" * 64}))
    first = materialize(
        [dataset_splits_from_ed, ev.evaluation_set, ev.test_generations],
        resources=resources,
        tags=RANGE,
        instance=instance,
    )
    assert first.success
    set_md = first.asset_materializations_for_node("evaluation_set")[0].metadata
    assert set_md["items_per_emotion"].value == {"anger": 2, "annoyance": 2}  # 3 test rows each, capped at 2
    coverage_check = first.get_asset_check_evaluations()[0]
    assert coverage_check.check_name == "every_emotion_evaluated" and coverage_check.passed
    stats = first.asset_materializations_for_node("test_generations")[0].metadata["systems"].value
    assert stats["base"]["generated"] == 4 and len(stats["base"]["cache_id"]) > 8

    frames = {
        e: pl.read_parquet(data_root / "parquet" / "test_generations" / f"{e}.parquet")
        for e in ("anger", "annoyance")
    }
    for emotion, frame in frames.items():
        assert frame.height == 2 and set(frame["emotion"]) == {emotion} and set(frame["system"]) == {"base"}
        assert frame["prediction"].str.len_chars().min() > 0
        assert frame["item_id"].n_unique() == 2
        evaluation_set = pl.read_parquet(data_root / "parquet" / "evaluation_set" / f"{emotion}.parquet")
        assert sorted(frame["item_id"]) == sorted(evaluation_set["item_id"])  # exactly the set's items
        assert set(frame["model_sha256"]) == {"a" * 64}

    # same model, prompts and settings: every reply comes from the cache
    again = materialize(
        [dataset_splits_from_ed, ev.evaluation_set, ev.test_generations],
        resources=resources,
        tags=RANGE,
        instance=instance,
    )
    stats = again.asset_materializations_for_node("test_generations")[0].metadata["systems"].value
    assert stats["base"]["cached"] == 4 and stats["base"]["generated"] == 0
    again_frames = {
        e: pl.read_parquet(data_root / "parquet" / "test_generations" / f"{e}.parquet") for e in frames
    }
    assert all(again_frames[e]["prediction"].to_list() == frames[e]["prediction"].to_list() for e in frames)

    assert materialize(
        [ev.external_predictions, ev.evaluation_items], resources=resources, instance=instance
    ).success
    items = (
        duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True)
        .execute("SELECT * FROM evaluation_items")
        .pl()
    )
    assert items.height == 4 and set(items["origin"]) == {"pipeline"}
