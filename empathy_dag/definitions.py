"""The one `Definitions` object of the project: every asset, check, job, sensor, schedule and the
resources of the active profile."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import AssetSelection, Definitions, define_asset_job, load_assets_from_modules, map_asset_specs
from dagster_duckdb_polars import DuckDBPolarsIOManager

from empathy_dag.automation import definitions as automation
from empathy_dag.automation.schedules import FRESHNESS_POLICIES
from empathy_dag.curate import assets as curate_assets
from empathy_dag.curate import resources as curate_resources
from empathy_dag.evaluate import assets as evaluate_assets
from empathy_dag.evaluate import resources as evaluate_resources
from empathy_dag.export import assets as export_assets
from empathy_dag.generate import assets as generate_assets
from empathy_dag.generate import resources as generate_resources
from empathy_dag.ingest import assets as ingest_assets
from empathy_dag.io_managers import AllOrNothingIOManager, EmotionParquetIOManager
from empathy_dag.metadata import with_code_links, with_owners
from empathy_dag.pairs import assets as pairs_assets
from empathy_dag.pairs import resources as pairs_resources
from empathy_dag.profiles import active_profile, aws_resources
from empathy_dag.resources import BaseModelConfig, CorpusSources, GoEmotionsSource, ModelStore
from empathy_dag.review import assets as review_assets
from empathy_dag.review import resources as review_resources
from empathy_dag.settings import data_root
from empathy_dag.train import assets as train_assets
from empathy_dag.train import resources as train_resources
from empathy_dag.warehouse.resource import WAREHOUSE_SCHEMA, Warehouse
from empathy_dag.warehouse.sql_models import build_sql_model_assets

STAGE_ASSET_MODULES = [
    ingest_assets, generate_assets, curate_assets, review_assets, pairs_assets, train_assets, evaluate_assets,
    export_assets,
]
STAGE_RESOURCE_MODULES = [
    generate_resources, curate_resources, review_resources, pairs_resources, train_resources, evaluate_resources
]

stage_assets = load_assets_from_modules(STAGE_ASSET_MODULES)


def _io_manager_keys() -> tuple[set[str], dict[str, str]]:
    """Asset names stored as Parquet files, and DuckDB tables with the asset that writes each, for the
    SQL models' lineage."""
    parquet, tables = set(), {}
    for a in stage_assets:
        for key in a.keys:
            io_key = a.get_io_manager_key_for_asset_key(key)
            name = key.path[-1]
            if io_key == "ingest_io_manager":  # all-or-nothing outputs name their real store
                io_key = f"{a.metadata_by_key.get(key, {}).get('stored_in')}_io_manager"
            if io_key == "parquet_io_manager":
                parquet.add(name)
            elif io_key == "warehouse_io_manager":
                tables[name] = name
            for table in a.metadata_by_key.get(key, {}).get("warehouse_tables", []):
                tables.setdefault(table, name)
    return parquet, tables


PARQUET_ASSETS, WAREHOUSE_TABLES = _io_manager_keys()
sql_assets = build_sql_model_assets(parquet_assets=PARQUET_ASSETS, warehouse_tables=WAREHOUSE_TABLES)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def local_resources(root: Path | None = None) -> dict:
    """The local profile. `root` (tests) puts every location under one folder; otherwise each comes
    from its environment variable or $DAGSTER_HOME/data."""
    if root is not None:
        root = Path(root)
        database, parquet_dir, model_dir = str(root / "warehouse.duckdb"), str(root / "parquet"), str(root / "models")
    else:
        root = data_root()
        database = _env("EMPATHY_DAG_DUCKDB", str(root / "warehouse.duckdb"))
        parquet_dir = _env("EMPATHY_DAG_PARQUET_DIR", str(root / "parquet"))
        model_dir = _env("EMPATHY_DAG_MODEL_DIR", str(root / "models"))
    # DuckDB creates the file but not its folder.
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    parquet_io = EmotionParquetIOManager(base_dir=parquet_dir)
    warehouse_io = DuckDBPolarsIOManager(database=database, schema=WAREHOUSE_SCHEMA)
    warehouse = Warehouse(database=database, parquet_base_dir=parquet_dir)
    resources = {
        "parquet_io_manager": parquet_io,
        "warehouse_io_manager": warehouse_io,
        "warehouse": warehouse,
        "ingest_io_manager": AllOrNothingIOManager.over(parquet_io, warehouse,
                                                   staging_dir=str(Path(database).parent / "staging")),
        "corpus_sources": CorpusSources(landing_dir=str(root / "landing"), archive_dir=str(root / "raw")),
        "goemotions": GoEmotionsSource(),
        "model_store": ModelStore(root=model_dir),
        "base_model_config": BaseModelConfig(),
    }
    for module in STAGE_RESOURCE_MODULES:
        resources.update(module.stage_resources(root))
    return resources


def profile_resources() -> dict:
    """The resources of the profile named by EMPATHY_DAG_PROFILE (`local` default, `aws`): the only
    switch between a laptop and S3 (see empathy_dag/profiles.py, docs/deployment.md)."""
    if active_profile() == "aws":
        return aws_resources(stage_resource_modules=STAGE_RESOURCE_MODULES)
    return local_resources()


def with_ui_metadata(assets: list) -> list:
    """What the UI shows on every asset beyond its own decorator: owners (per group,
    `metadata.DEFAULT_OWNERS_BY_GROUP` / EMPATHY_DAG_OWNERS), links to the source code, and the
    freshness policies that match the schedules (`automation.schedules.FRESHNESS_POLICIES`)."""
    assets = with_owners(assets)
    assets = list(map_asset_specs(
        lambda spec: spec.replace_attributes(freshness_policy=FRESHNESS_POLICIES[spec.key.to_user_string()])
        if spec.key.to_user_string() in FRESHNESS_POLICIES else spec,
        assets,
    ))
    return with_code_links(assets)


main_job = define_asset_job(
    "main_job",
    # Less the merged model: sharing is a step of its own (a second full copy of the weights).
    selection=AssetSelection.all() - AssetSelection.assets(train_assets.MERGED_MODEL),
    description="Everything from the taxonomy to the leaderboard on the embedded default models.",
)

defs = Definitions(
    assets=with_ui_metadata([*stage_assets, *sql_assets, *automation.ASSETS]),
    asset_checks=automation.ASSET_CHECKS,
    jobs=[main_job, *automation.JOBS],
    sensors=automation.SENSORS,
    schedules=automation.SCHEDULES,
    resources=profile_resources(),
)
