"""A small dbt-like runner: every `dbt_like_sql/<name>.sql` file is a SELECT that becomes the DuckDB
table `<name>` and a Dagster asset of the same name. Its dependencies are the tables the SQL reads,
found by DuckDB's own parser (`duckdb.get_table_names`), so lineage can never drift from the SQL.

A table name resolves to, in order: another SQL model, a Parquet-backed asset (a view over its
files is created before the model runs), or a warehouse table written by another asset."""

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    CodeReferencesMetadataValue,
    LocalFileCodeReference,
    MaterializeResult,
    asset,
)

from empathy_dag.defs.metadata import preview_table, table_metadata
from empathy_dag.defs.warehouse.resource import WAREHOUSE_SCHEMA, Warehouse
from empathy_dag.settings import shipped_dir

SQL_DIR = shipped_dir("dbt_like_sql")


@dataclass(frozen=True)
class SqlModel:
    name: str
    path: Path
    sql: str
    description: str
    reads: frozenset[str]


def _description(sql: str) -> str:
    lines = [ln[2:].strip() for ln in sql.splitlines() if ln.startswith("--")]
    return " ".join(lines) or "SQL model"


def load_sql_models(sql_dir: Path = SQL_DIR) -> list[SqlModel]:
    models = []
    for path in sorted(sql_dir.glob("*.sql")):
        sql = path.read_text(encoding="utf-8")
        body = re.sub(r";\s*$", "", sql.strip())
        models.append(
            SqlModel(path.stem, path, body, _description(sql), frozenset(duckdb.get_table_names(body)))
        )
    return models


def build_sql_model_assets(
    parquet_assets: set[str],
    warehouse_tables: set[str] | dict[str, str],
    sql_dir: Path = SQL_DIR,
    group_name: str = "warehouse",
) -> list[AssetsDefinition]:
    """`warehouse_tables` maps a table to the asset that writes it (a set: each table is its own asset):
    a table written as a side output of another asset (e.g. `scorecard_history`) depends on that asset."""
    models = load_sql_models(sql_dir)
    model_names = {m.name for m in models}
    writers = (
        dict(warehouse_tables) if isinstance(warehouse_tables, dict) else {t: t for t in warehouse_tables}
    )
    known = model_names | parquet_assets | set(writers)
    out = []
    for model in models:
        unknown = sorted(model.reads - known)
        if unknown:
            raise ValueError(
                f"{model.path.name} reads {unknown}, which no asset produces; known tables: {sorted(known)}"
            )
        deps = sorted({writers.get(t, t) for t in model.reads})
        out.append(_sql_asset(model, parquet_assets, group_name, deps))
    return out


def _sql_file_reference(path: Path) -> CodeReferencesMetadataValue:
    """The SQL file as the model's first source link (before the Python wrapper that
    `with_source_code_references` adds). Both classes are beta in dagster 1.13: the notice says nothing
    to a user of this project."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CodeReferencesMetadataValue(
            code_references=[
                LocalFileCodeReference(file_path=str(path.resolve()), line_number=1, label="SQL model")
            ]
        )


def _sql_asset(
    model: SqlModel, parquet_assets: set[str], group_name: str, deps: list[str]
) -> AssetsDefinition:
    import hashlib

    @asset(
        name=model.name,
        group_name=group_name,
        deps=[AssetKey(t) for t in deps],
        code_version=hashlib.sha256(model.sql.encode()).hexdigest()[:12],
        description=model.description,
        kinds={"duckdb", "sql"},
        pool="duckdb_warehouse",
        metadata={
            "sql_file": f"dbt_like_sql/{model.path.name}",
            "dagster/code_references": _sql_file_reference(model.path),
        },
    )
    def _run(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
        with warehouse.connect() as conn:
            views = warehouse.register_parquet_views(conn, sorted(model.reads & parquet_assets))
            conn.execute(f'CREATE OR REPLACE TABLE {WAREHOUSE_SCHEMA}."{model.name}" AS {model.sql}')
            result = conn.execute(f'SELECT * FROM {WAREHOUSE_SCHEMA}."{model.name}"').pl()
        context.log.info(f"{model.name}: {result.height} rows (views over Parquet: {views})")
        return MaterializeResult(
            metadata={
                **table_metadata(result, table=warehouse.table_name(model.name), preview_rows=0),
                "dagster/row_count": result.height,
                **({"preview": preview_table(result, max_rows=30)} if result.height else {}),
                "sql": f"```sql\n{model.sql}\n```",
            }
        )

    return _run


def stored_tables(stage_assets) -> tuple[set[str], dict[str, str]]:
    """Asset names stored as Parquet files, and DuckDB tables with the asset that writes each, for the SQL
    models' lineage."""
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
