"""The one `Definitions` object of the project: every asset, check, job, sensor, schedule and the
resources of the active profile (built by `profiles.resources_for`)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, load_assets_from_modules, map_asset_specs

from empathy_dag.automation import definitions as automation
from empathy_dag.automation.schedules import FRESHNESS_POLICIES
from empathy_dag.curate import assets as curate_assets
from empathy_dag.evaluate import assets as evaluate_assets
from empathy_dag.export import assets as export_assets
from empathy_dag.generate import assets as generate_assets
from empathy_dag.ingest import assets as ingest_assets
from empathy_dag.metadata import with_code_links, with_owners
from empathy_dag.pairs import assets as pairs_assets
from empathy_dag.profiles import resources_for
from empathy_dag.review import assets as review_assets
from empathy_dag.train import assets as train_assets
from empathy_dag.warehouse.sql_models import build_sql_model_assets

STAGE_ASSET_MODULES = [
    ingest_assets, generate_assets, curate_assets, review_assets, pairs_assets, train_assets, evaluate_assets,
    export_assets,
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
    resources=resources_for(),
)
