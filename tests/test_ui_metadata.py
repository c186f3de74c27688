"""What the Dagster UI shows on every asset: owners, kinds, a Columns section for every table, source
links, freshness on the scheduled products, and lineage from a checkpoint to the exact upstream
materializations it consumed. Definitions only, plus one tiny in-process run: seconds."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunMetadataValue,
    DataVersion,
    MaterializeResult,
    Output,
    StaticPartitionsDefinition,
    asset,
    materialize,
)

from empathy_dag.definitions import defs
from empathy_dag.defs.metadata import (
    COLUMN_DESCRIPTIONS,
    OWNERS_ENV,
    column_schema,
    consumed_materializations,
    content_data_version,
    lineage_metadata,
    owners_by_group,
    owners_for,
    record_partition_hashes,
    table_metadata,
)
from empathy_dag.pairs.build import PAIR_SCHEMA

GRAPH = defs.resolve_asset_graph()
NODES = {key.to_user_string(): GRAPH.get(key) for key in GRAPH.get_all_asset_keys()}
# ingest_io_manager: the all-or-nothing manager of the ingest step (Parquet + warehouse outputs).
TABLE_IO_MANAGERS = {"parquet_io_manager", "warehouse_io_manager", "ingest_io_manager"}


def _assets_def(name: str):
    return defs.resolve_assets_def(AssetKey(name))


def _io_manager(name: str) -> str | None:
    assets_def = _assets_def(name)
    return assets_def.get_io_manager_key_for_asset_key(AssetKey(name))


def _schema(value):
    """A TableSchema whether stored raw (definition metadata) or wrapped (a metadata value)."""
    return getattr(value, "schema", value)


def _table_like(name: str) -> bool:
    node = NODES[name]
    return (
        _io_manager(name) in TABLE_IO_MANAGERS
        or "sql" in node.kinds
        or bool(node.metadata.get("warehouse_tables"))
    )


def test_every_asset_has_owners_and_kinds():
    assert len(NODES) > 40
    missing = {
        n: (node.owners, sorted(node.kinds)) for n, node in NODES.items() if not node.owners or not node.kinds
    }
    assert not missing, missing
    for node in NODES.values():
        assert all(o.startswith("team:") or "@" in o for o in node.owners)
    assert NODES["dpo_checkpoint"].owners == ["team:empathy-modeling"]
    assert NODES["leaderboard"].owners == ["team:empathy-evaluation"]


def test_every_table_like_asset_has_a_column_schema():
    """Declared in the definition where the writer has a fixed schema; otherwise written with every
    materialization by the code path that writes the table (checked here by path, and each path by a
    test of its own: the Parquet IO manager and SQL models in test_ingest_assets, write_table below)."""
    tables = [n for n in NODES if _table_like(n)]
    assert {
        "preference_pairs",
        "situations",
        "leaderboard",
        "metric_comparisons",
        "emotion_taxonomy",
        "corpus_rows",
        "quarantine",
    } <= set(tables)
    for name in tables:
        node = NODES[name]
        static = node.metadata.get("dagster/column_schema")
        runtime_path = (
            _io_manager(name) in TABLE_IO_MANAGERS
            or "sql_file" in node.metadata
            or "warehouse_tables" in node.metadata
        )
        assert static is not None or runtime_path, name
        if static is not None:
            assert _schema(static).columns, name
    declared = {n for n in tables if NODES[n].metadata.get("dagster/column_schema") is not None}
    assert {
        "preference_pairs",
        "evaluation_set",
        "metric_scores",
        "metric_comparisons",
        "review_decisions",
        "synthetic_dialogues",
        "reference_logprobs",
    } <= declared
    pairs = {c.name: c for c in _schema(NODES["preference_pairs"].metadata["dagster/column_schema"]).columns}
    assert list(pairs) == list(PAIR_SCHEMA)
    # Every column of the pairs a researcher opens says what it is.
    assert all(c.description for c in pairs.values()), [n for n, c in pairs.items() if not c.description]


def test_write_table_returns_the_schema_table_name_and_a_preview(tmp_path):
    from empathy_dag.defs.warehouse.resource import Warehouse, write_table

    frame = pl.DataFrame(
        {
            "system": ["base", "dpo"],
            "metric": ["bertscore_f1"] * 2,
            "value": [0.3, 0.31],
            "seed_situation_ids": [["a"], ["b", "c"]],
        }
    )
    warehouse = Warehouse(database=str(tmp_path / "wh.duckdb"), parquet_base_dir=str(tmp_path / "parquet"))
    md = write_table(warehouse, "metric_x", frame)
    columns = {c.name: c for c in _schema(md["dagster/column_schema"]).columns}
    assert list(columns) == ["system", "metric", "value", "seed_situation_ids"]
    assert (
        columns["value"].type == "Float64" and columns["system"].description == COLUMN_DESCRIPTIONS["system"]
    )
    assert md["dagster/row_count"] == 2 and md["dagster/table_name"] == "wh.main.metric_x"
    records = md["preview_table"].records
    assert [r.data["system"] for r in records] == ["base", "dpo"]
    assert records[1].data["seed_situation_ids"] == "['b', 'c']"  # nested cells as text
    assert "preview_table" not in table_metadata(frame.clear())  # nothing to preview


def test_column_schema_descriptions_come_from_the_glossary_then_the_caller():
    schema = column_schema(
        {"emotion": pl.String, "odd": pl.Int64, "text": pl.String}, {"text": "the comment"}
    )
    by_name = {c.name: c for c in schema.columns}
    assert by_name["emotion"].description == COLUMN_DESCRIPTIONS["emotion"]
    assert by_name["odd"].description is None and by_name["text"].description == "the comment"


def test_owners_are_configured_in_one_place_and_bad_config_is_a_clear_error():
    assert owners_for("train", owners_by_group({})) == ["team:empathy-modeling"]
    everyone = owners_by_group({OWNERS_ENV: '["team:ml"]'})
    assert owners_for("ingest", everyone) == ["team:ml"] and owners_for("new_group", everyone) == ["team:ml"]
    some = owners_by_group({OWNERS_ENV: '{"train": ["ada@example.org"]}'})
    assert owners_for("train", some) == ["ada@example.org"] and owners_for("ingest", some) == [
        "team:empathy-data"
    ]
    with pytest.raises(ValueError, match=OWNERS_ENV):
        owners_by_group({OWNERS_ENV: "team:ml"})
    with pytest.raises(ValueError, match=OWNERS_ENV):
        owners_by_group({OWNERS_ENV: '{"train": "team:ml"}'})


def test_freshness_policies_match_the_schedules():
    from empathy_dag.defs.evaluate.jobs import NIGHTLY_EVAL_CRON
    from empathy_dag.defs.train.jobs import WEEKLY_RETRAIN_CRON

    board, promoted = NODES["leaderboard"].freshness_policy, NODES["promoted_model"].freshness_policy
    # Due a few hours after the schedule that produces it starts, on the same days.
    assert board.deadline_cron.split()[2:] == NIGHTLY_EVAL_CRON.split()[2:]
    assert promoted.deadline_cron.split()[2:] == WEEKLY_RETRAIN_CRON.split()[2:]
    assert int(board.deadline_cron.split()[1]) - board.lower_bound_delta.total_seconds() / 3600 == int(
        NIGHTLY_EVAL_CRON.split()[1]
    )
    assert int(promoted.deadline_cron.split()[1]) - promoted.lower_bound_delta.total_seconds() / 3600 == int(
        WEEKLY_RETRAIN_CRON.split()[1]
    )
    assert sum(1 for node in NODES.values() if node.freshness_policy is not None) == 2


def test_every_asset_links_to_its_source_code():
    for name, node in NODES.items():
        refs = node.metadata["dagster/code_references"].code_references
        assert refs and all(r.file_path.endswith((".py", ".sql")) for r in refs), name
    assert (
        NODES["leaderboard"]
        .metadata["dagster/code_references"]
        .code_references[0]
        .file_path.endswith("leaderboard.sql")
    )


def test_git_links_only_when_a_repository_url_is_configured():
    from empathy_dag.defs.metadata import with_code_links

    linked = with_code_links(
        [_assets_def("preference_pairs")], git_url="https://github.com/org/empathy_dag", git_branch="dev"
    )
    refs = linked[0].metadata_by_key[AssetKey("preference_pairs")]["dagster/code_references"].code_references
    assert any(
        getattr(r, "url", "").startswith(
            "https://github.com/org/empathy_dag/tree/dev/empathy_dag/defs/pairs/assets.py#L"
        )
        for r in refs
    )


PARTS = StaticPartitionsDefinition(["joy", "grief"])


@asset(partitions_def=PARTS)
def upstream_pairs(context) -> Output:
    frames = {p: pl.DataFrame({"pair_id": [p]}) for p in context.partition_keys}
    hashes = {p: f"hash-{p}" for p in context.partition_keys}
    record_partition_hashes(context, hashes)
    return Output(
        None, data_version=DataVersion(content_data_version(hashes)), metadata={"frames": len(frames)}
    )


@asset
def upstream_model() -> MaterializeResult:
    return MaterializeResult(data_version=DataVersion("sha-1"))


def test_lineage_names_each_consumed_partition_with_its_run_and_versions():
    instance = DagsterInstance.ephemeral()
    model = materialize([upstream_model], instance=instance)
    (whole,) = consumed_materializations(instance, "upstream_model")
    assert whole["run_id"] == model.run_id and whole["data_version"] == "sha-1" and whole["partition"] is None
    first = materialize([upstream_pairs], instance=instance, partition_key="joy")
    second = materialize([upstream_pairs], instance=instance, partition_key="grief")
    again = materialize([upstream_pairs], instance=instance, partition_key="grief")  # the latest one counts
    assert first.success and second.success and again.success
    consumed = consumed_materializations(instance, "upstream_pairs", ["grief", "joy", "absent"])
    assert [(c["partition"], c["run_id"]) for c in consumed] == [
        ("grief", again.run_id),
        ("joy", first.run_id),
    ]
    assert [c["data_version"] for c in consumed] == ["hash-grief", "hash-joy"]  # one partition: its own hash
    assert [c["content_hash"] for c in consumed] == ["hash-grief", "hash-joy"]
    assert consumed_materializations(instance, "never_materialized") == []

    md = lineage_metadata(consumed, base_url="")
    table = md["consumed_materializations"].value
    assert (
        f"(/runs/{first.run_id})" in table and "(/assets/upstream_pairs?view=events&partition=joy)" in table
    )
    runs = {k: v for k, v in md.items() if k.startswith("input_run_")}
    assert {v.run_id for v in runs.values()} == {first.run_id, again.run_id}
    assert all(isinstance(v, DagsterRunMetadataValue) for v in runs.values())
    absolute = lineage_metadata(consumed, base_url="http://127.0.0.1:3000/")
    assert {v.value for k, v in absolute.items() if k.startswith("input_run_")} == {
        f"http://127.0.0.1:3000/runs/{first.run_id}",
        f"http://127.0.0.1:3000/runs/{again.run_id}",
    }


def test_several_partitions_share_one_version_that_moves_with_any_partition():
    one = content_data_version({"joy": "a", "grief": "b"})
    assert one == content_data_version({"grief": "b", "joy": "a"})
    assert one != content_data_version({"joy": "a", "grief": "c"})
    assert content_data_version({"joy": "a"}) == "a"


def test_checkpoints_carry_their_lineage_on_the_materialization():
    """The training assets add the lineage to what the Pipes step reported, keeping everything else."""
    from empathy_dag.defs.train.assets import _with_lineage

    reported = MaterializeResult(metadata={"sha256": "abc"}, data_version=DataVersion("abc"))
    consumed = [
        {
            "asset": "preference_pairs",
            "partition": "joy",
            "run_id": "r" * 36,
            "data_version": "v",
            "content_hash": "h",
            "storage_id": 7,
            "timestamp": 0.0,
        }
    ]
    out = _with_lineage(reported, consumed)
    assert out.metadata["sha256"] == "abc" and out.data_version.value == "abc"
    assert "consumed_materializations" in out.metadata and "input_run_preference_pairs" in out.metadata


def test_nightly_evaluation_refreshes_the_checkpoints_is_it_better_checks():
    from empathy_dag.defs.promotion.assets import CHECKPOINT_SCORECARD_CHECK

    nodes = set(defs.resolve_job_def("nightly_eval_job").graph.node_names())
    assert {f"{a}_{CHECKPOINT_SCORECARD_CHECK}" for a in ("sft_checkpoint", "dpo_checkpoint")} <= nodes
    assert not {"sft_checkpoint", "dpo_checkpoint", "reference_logprobs"} & nodes  # no training at night
