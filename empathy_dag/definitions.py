"""The one `Definitions` object of the project: every asset, check, job, sensor, schedule and the
resources of the active profile."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetSelection, Definitions, EnvVar, define_asset_job, load_assets_from_modules
from dagster_duckdb_polars import DuckDBPolarsIOManager

from empathy_dag.ingest import assets as ingest_assets
from empathy_dag.io_managers import EmotionParquetIOManager
from empathy_dag.resources import CorpusSources, GoEmotionsSource
from empathy_dag.settings import data_root
from empathy_dag.warehouse.resource import WAREHOUSE_SCHEMA, Warehouse
from empathy_dag.warehouse.sql_models import build_sql_model_assets

import os

stage_assets = load_assets_from_modules([ingest_assets])

PARQUET_ASSETS = {"corpus_rows", "situations", "dialogues", "goemotions_examples"}
WAREHOUSE_TABLES = {"emotion_taxonomy", "quarantine", "ingest_file_log"}

sql_assets = build_sql_model_assets(parquet_assets=PARQUET_ASSETS, warehouse_tables=WAREHOUSE_TABLES)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def local_resources() -> dict:
    root = data_root()
    database = _env("EMPATHY_DAG_DUCKDB", str(root / "warehouse.duckdb"))
    parquet_dir = _env("EMPATHY_DAG_PARQUET_DIR", str(root / "parquet"))
    # DuckDB creates the file but not its folder.
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    return {
        "parquet_io_manager": EmotionParquetIOManager(base_dir=parquet_dir),
        "warehouse_io_manager": DuckDBPolarsIOManager(database=database, schema=WAREHOUSE_SCHEMA),
        "warehouse": Warehouse(database=database, parquet_base_dir=parquet_dir),
        "corpus_sources": CorpusSources(),
        "goemotions": GoEmotionsSource(),
    }


main_job = define_asset_job(
    "main_job",
    selection=AssetSelection.all() - AssetSelection.assets("goemotions_examples"),
    description="Everything from the taxonomy to the leaderboard on the embedded default models.",
)

defs = Definitions(
    assets=[*stage_assets, *sql_assets],
    jobs=[main_job],
    resources=local_resources(),
)
