"""The warehouse stage's definitions: one asset per SQL model of `dbt_like_sql/`. A model reads the
Parquet-stored per-emotion assets and the DuckDB tables the other stages write; which is which is read
from those stages' assets (their IO manager and `warehouse_tables` metadata), so the SQL models' lineage
follows the tables they name."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.curate import assets as curate_assets
from empathy_dag.defs.evaluate import assets as evaluate_assets
from empathy_dag.defs.export import assets as export_assets
from empathy_dag.defs.generate import assets as generate_assets
from empathy_dag.defs.ingest import assets as ingest_assets
from empathy_dag.defs.pairs import assets as pairs_assets
from empathy_dag.defs.review import assets as review_assets
from empathy_dag.defs.train import assets as train_assets
from empathy_dag.defs.warehouse.assets import build_sql_model_assets, stored_tables

PARQUET_ASSETS, WAREHOUSE_TABLES = stored_tables(
    load_assets_from_modules(
        [
            ingest_assets,
            generate_assets,
            curate_assets,
            review_assets,
            pairs_assets,
            train_assets,
            evaluate_assets,
            export_assets,
        ]
    )
)

sql_assets = build_sql_model_assets(parquet_assets=PARQUET_ASSETS, warehouse_tables=WAREHOUSE_TABLES)

defs = Definitions(assets=sql_assets)
