"""Deployment profiles: one environment variable, `EMPATHY_DAG_PROFILE`, picks where data lives; the
asset code is the same in both.

- `local` (default): Parquet, checkpoints, landing zone and DuckDB under $DAGSTER_HOME/data
  (`local_resources`), SQLite instance storage (resources/dagster.yaml).
- `aws`: Parquet on `s3://$EMPATHY_DAG_S3_BUCKET/$EMPATHY_DAG_S3_PREFIX/parquet` (dagster-polars on a
  UPath), model folders published to `.../models/<name>` with a sha256 manifest (`ModelStore.publish`,
  `ModelStore.fetch`), the landing zone at `.../landing/`, the DuckDB warehouse file kept at
  `.../warehouse/warehouse.duckdb` and copied to a local working file around each use. Instance storage
  (Postgres), the run launcher (ECS) and compute logs (S3) are instance settings, not resources: see
  resources/aws/dagster.yaml.

Credentials never appear here: boto3, s3fs and Polars all take them from the default AWS chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the ECS task role)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import InputContext, IOManager, OutputContext
from dagster_duckdb_polars import DuckDBPolarsIOManager

from empathy_dag.defs.evaluate import resources as evaluate_resources
from empathy_dag.defs.generate import resources as generate_resources
from empathy_dag.defs.io_managers import AllOrNothingIOManager, EmotionParquetIOManager
from empathy_dag.defs.review import resources as review_resources
from empathy_dag.defs.warehouse.resource import WAREHOUSE_SCHEMA, Warehouse
from empathy_dag.resources import BaseModelConfig, CorpusSources, GoEmotionsSource, ModelStore

# The profile switch itself is Dagster-free (settings.py) so that the external side of a pipes step can read it.
from empathy_dag.settings import PROFILE_ENV, PROFILES, active_profile, data_root, local_locations
from empathy_dag.storage_s3 import SyncedFile, parse_s3_uri, s3_client, storage_options

__all__ = ["PROFILES", "PROFILE_ENV", "active_profile", "aws_resources", "local_resources", "resources_for"]

# Each stage's own resources (`stage_resources(root)`), merged into both profiles. This module is the one
# place that assembles resources: `definitions` only asks it for the active profile's.
STAGE_RESOURCE_MODULES = [generate_resources, review_resources, evaluate_resources]


class _S3SyncedIOManager(IOManager):
    """Wraps the DuckDB IO manager: pull the database file before, push it after each write."""

    def __init__(self, inner: IOManager, synced):
        self.inner, self.synced = inner, synced

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        self.synced.pull()
        self.inner.handle_output(context, obj)
        self.synced.push()

    def load_input(self, context: InputContext) -> Any:
        self.synced.pull()
        return self.inner.load_input(context)


class S3SyncedDuckDBPolarsIOManager(DuckDBPolarsIOManager):
    """dagster-duckdb-polars' IO manager on a local working copy of a database file whose durable copy
    is one S3 object (`s3_uri`), with the same conditional-PUT protection as `Warehouse.connect`."""

    s3_uri: str = ""
    endpoint_url: str = ""

    def create_io_manager(self, context) -> IOManager:
        inner = super().create_io_manager(context)
        if not self.s3_uri:
            return inner
        bucket, key = parse_s3_uri(self.s3_uri)
        return _S3SyncedIOManager(
            inner, SyncedFile(s3_client(self.endpoint_url), bucket, key, Path(self.database))
        )


def aws_settings(env: dict[str, str] | None = None) -> dict[str, str]:
    """The aws profile's locations from the environment (see resources/aws/.env.example)."""
    env = dict(os.environ if env is None else env)
    bucket = env.get("EMPATHY_DAG_S3_BUCKET", "")
    if not bucket:
        raise ValueError(
            "EMPATHY_DAG_PROFILE=aws needs EMPATHY_DAG_S3_BUCKET (see resources/aws/.env.example)"
        )
    prefix = env.get("EMPATHY_DAG_S3_PREFIX", "empathy-dag").strip("/")
    base = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return {
        "base": base,
        "endpoint_url": env.get("EMPATHY_DAG_S3_ENDPOINT_URL", ""),
        "region_name": env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "")),
        "cache_dir": env.get("EMPATHY_DAG_CACHE_DIR", ""),
    }


def aws_resources(
    cache_root: Path | None = None,
    env: dict[str, str] | None = None,
    stage_resource_modules: list | None = None,
) -> dict:
    """The aws profile: every durable location on S3; `cache_root` (default $EMPATHY_DAG_CACHE_DIR or
    $DAGSTER_HOME/data) holds the local working copies (model cache, landing cache, DuckDB file) that a
    fresh ECS task rebuilds from S3."""
    s = aws_settings(env)
    root = Path(cache_root) if cache_root is not None else Path(s["cache_dir"] or data_root())
    root.mkdir(parents=True, exist_ok=True)
    database = str(root / "warehouse.duckdb")
    warehouse_uri = f"{s['base']}/warehouse/warehouse.duckdb"
    parquet_dir = f"{s['base']}/parquet"
    parquet_io = EmotionParquetIOManager(
        base_dir=parquet_dir, storage_options=storage_options(s["endpoint_url"], s["region_name"])
    )
    warehouse_io = S3SyncedDuckDBPolarsIOManager(
        database=database, schema=WAREHOUSE_SCHEMA, s3_uri=warehouse_uri, endpoint_url=s["endpoint_url"]
    )
    warehouse = Warehouse(
        database=database, parquet_base_dir=parquet_dir, s3_uri=warehouse_uri, endpoint_url=s["endpoint_url"]
    )
    resources = {
        "parquet_io_manager": parquet_io,
        "warehouse_io_manager": warehouse_io,
        "warehouse": warehouse,
        # The journal of all-or-nothing steps (ingest) on the task's disk: see AllOrNothingIOManager.
        "ingest_io_manager": AllOrNothingIOManager.over(
            parquet_io, warehouse, staging_dir=str(root / "staging")
        ),
        "corpus_sources": CorpusSources(
            landing_dir=str(root / "landing"),
            archive_dir=str(root / "raw"),
            landing_s3_uri=f"{s['base']}/landing/",
            endpoint_url=s["endpoint_url"],
        ),
        "goemotions": GoEmotionsSource(),
        "model_store": ModelStore(
            root=str(root / "models"), s3_prefix=f"{s['base']}/models", endpoint_url=s["endpoint_url"]
        ),
        "base_model_config": BaseModelConfig(),
    }
    for module in STAGE_RESOURCE_MODULES if stage_resource_modules is None else stage_resource_modules:
        resources.update(module.stage_resources(root))
    return resources


def local_resources(root: Path | None = None) -> dict:
    """The local profile. `root` (tests) puts every location under one folder; otherwise each comes
    from its environment variable or $DAGSTER_HOME/data."""
    if root is not None:
        root = Path(root)
        database, parquet_dir, model_dir = (
            str(root / "warehouse.duckdb"),
            str(root / "parquet"),
            str(root / "models"),
        )
    else:
        root = data_root()
        database, parquet_dir, model_dir = local_locations()
    # DuckDB creates the file but not its folder.
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    parquet_io = EmotionParquetIOManager(base_dir=parquet_dir)
    warehouse_io = DuckDBPolarsIOManager(database=database, schema=WAREHOUSE_SCHEMA)
    warehouse = Warehouse(database=database, parquet_base_dir=parquet_dir)
    resources = {
        "parquet_io_manager": parquet_io,
        "warehouse_io_manager": warehouse_io,
        "warehouse": warehouse,
        "ingest_io_manager": AllOrNothingIOManager.over(
            parquet_io, warehouse, staging_dir=str(Path(database).parent / "staging")
        ),
        "corpus_sources": CorpusSources(landing_dir=str(root / "landing"), archive_dir=str(root / "raw")),
        "goemotions": GoEmotionsSource(),
        "model_store": ModelStore(root=model_dir),
        "base_model_config": BaseModelConfig(),
    }
    for module in STAGE_RESOURCE_MODULES:
        resources.update(module.stage_resources(root))
    return resources


def resources_for(profile: str | None = None, root: Path | None = None) -> dict:
    """The resources of `profile` (default: EMPATHY_DAG_PROFILE, `local` unless set; or `aws`): the only
    switch between a laptop and S3 (docs/deployment.md). `root` puts the local folders under one path."""
    profile = profile or active_profile()
    return aws_resources(root) if profile == "aws" else local_resources(root)
