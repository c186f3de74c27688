"""The ingest assets through Dagster: materialize() on the real definitions, a single run over all 28
emotion partitions (what the demo does), quarantine in DuckDB, checks and metadata."""

import shutil

import duckdb
import polars as pl
from dagster import AssetKey, DagsterInstance, materialize

from empathy_dag.definitions import defs
from empathy_dag.defs.ingest.assets import dialogues, emotion_taxonomy, ingest_corpus, situations
from empathy_dag.defs.warehouse.assets import SQL_DIR, build_sql_model_assets
from empathy_dag.taxonomy import EMOTIONS
from tests.conftest import FIXTURES

RANGE_ALL = {
    "dagster/asset_partition_range_start": EMOTIONS[0],
    "dagster/asset_partition_range_end": EMOTIONS[-1],
}


def test_one_partition_with_landing_files_and_quarantine(resources, data_root):
    landing = data_root / "landing"
    landing.mkdir()
    shutil.copy(FIXTURES / "user_dialogues.jsonl", landing)
    shutil.copy(FIXTURES / "ed_raw_sample.csv", landing)
    (landing / "bad.jsonl").write_bytes(b'{"emotion": "relief", "situation": "cut off\n')
    instance = DagsterInstance.ephemeral()
    upstream = materialize([emotion_taxonomy, ingest_corpus], resources=resources, instance=instance)
    assert upstream.success
    # The local profile keeps the language guesses for the next ingest, beside the raw archive.
    (cache,) = (data_root / "cache").glob("language_guesses.*.parquet")
    assert pl.read_parquet(cache).height > 0
    result = materialize(
        [emotion_taxonomy, ingest_corpus, situations, dialogues],
        selection=[situations, dialogues],
        resources=resources,
        partition_key="relief",
        instance=instance,
    )
    assert result.success
    corpus_meta = upstream.asset_materializations_for_node("ingest_corpus")
    meta = {m.asset_key.to_user_string(): m.metadata for m in corpus_meta}
    rows = meta["corpus_rows"]
    assert (
        rows["rows_in"].value == rows["valid"].value + rows["quarantined_rows"].value + rows["skipped"].value
    )
    assert rows["rejected_files"].value == 0

    with duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True) as conn:
        q = conn.execute("select file, line, reason_code, reason from main.quarantine").pl()
    assert set(q["reason_code"]) == {"invalid_json", "unknown_emotion"}
    assert q.filter(pl.col("reason_code") == "invalid_json")["file"][0].endswith("bad.jsonl")

    relief = pl.read_parquet(data_root / "parquet" / "situations" / "relief.parquet")
    assert (relief["emotion"] == "relief").all()
    sources = set(relief["source"])
    assert {"seed", "user_dialogues"} <= sources
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} >= {"schema", "no_empty_text", "labels_in_taxonomy", "unique_ids"}
    assert all(c.passed for c in checks)
    md = result.asset_materializations_for_node("situations")[0].metadata
    assert "preview" in md and "language_mix" in md and md["dagster/row_count"].value == relief.height


def test_main_ingest_selection_runs_all_28_partitions_in_one_run(resources, data_root, tmp_path):
    instance = DagsterInstance.ephemeral()
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    shutil.copy(SQL_DIR / "rows_per_emotion_source.sql", sql_dir)  # the ingest-only SQL model
    sql_assets = build_sql_model_assets(
        parquet_assets={"situations", "dialogues", "corpus_rows"},
        warehouse_tables={"emotion_taxonomy", "quarantine", "ingest_file_log"},
        sql_dir=sql_dir,
    )
    result = materialize(
        [emotion_taxonomy, ingest_corpus, situations, dialogues, *sql_assets],
        resources=resources,
        instance=instance,
        tags=RANGE_ALL,
    )
    assert result.success
    assert len(instance.get_run_records()) == 1
    for key in ("situations", "dialogues"):
        mats = [m for m in result.get_asset_materialization_events() if m.asset_key == AssetKey(key)]
        assert sorted(m.partition for m in mats) == sorted(EMOTIONS)
        files = sorted(p.stem for p in (data_root / "parquet" / key).glob("*.parquet"))
        assert files == sorted(EMOTIONS)
    # What the UI's Columns section and table name show, for a run over all partitions at once (which
    # dagster-polars' own per-output metadata does not cover) and for a SQL model.
    situations_md = next(
        m for m in result.get_asset_materialization_events() if m.asset_key == AssetKey("situations")
    ).materialization.metadata
    columns = {c.name: c for c in situations_md["dagster/column_schema"].schema.columns}
    assert {"situation_id", "emotion", "situation", "language"} <= set(columns)
    assert columns["situation_id"].description and columns["situation_id"].type == "String"
    assert situations_md["dagster/uri"].value == str(data_root / "parquet" / "situations")
    sql_md = result.asset_materializations_for_node("rows_per_emotion_source")[0].metadata
    assert sql_md["dagster/table_name"].value == "warehouse.main.rows_per_emotion_source"
    assert "emotion" in {c.name for c in sql_md["dagster/column_schema"].schema.columns}
    assert sql_md["preview"].records  # a table, not markdown
    with duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True) as conn:
        table = conn.execute("select * from main.rows_per_emotion_source").pl()
    seed_en = table.filter((pl.col("source") == "seed") & (pl.col("language") == "en"))
    assert seed_en.height == 28 and seed_en["situations"].min() >= 10
    assert table.filter(pl.col("language") == "ja")["emotion"].n_unique() == 28


def test_sql_model_dependencies_are_read_from_the_sql():
    graph = defs.resolve_asset_graph()
    deps = {k.to_user_string() for k in graph.get(AssetKey("rows_per_emotion_source")).parent_keys}
    assert deps == {"situations", "dialogues", "emotion_taxonomy"}


def test_definitions_load_and_validate():
    assert defs.resolve_job_def("main_job") is not None
    defs.validate_loadable(defs)
