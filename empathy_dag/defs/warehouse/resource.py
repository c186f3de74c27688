"""The DuckDB warehouse resource: a file (local profile) that holds DuckDB-native tables and views
over the Parquet assets, so SQL models can join both.

aws profile: the file is kept on S3 (`s3_uri`): `connect()` downloads it when the S3 object changed and a
writing connection uploads it on close with a conditional PUT, so two runs that started from the same
version cannot overwrite each other's tables (the second fails with ConcurrentUpdateError; the
`duckdb_warehouse` pool keeps writers one at a time anyway). DuckDB's httpfs extension, which would let
DuckDB read s3:// Parquet directly, has to be installed from the DuckDB extension repository; when it
cannot be loaded (offline machines, this project's CI) the Parquet assets on S3 are read with Polars and
copied into tables instead of views. Same SQL, same results."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from dagster import ConfigurableResource
from pydantic import Field

from empathy_dag.defs.metadata import table_metadata
from empathy_dag.storage_s3 import SyncedFile, join_key, parse_s3_uri, s3_client

if TYPE_CHECKING:
    import polars as pl

from empathy_dag.settings import data_root
from empathy_dag.warehouse.tables import WAREHOUSE_SCHEMA


class Warehouse(ConfigurableResource):
    database: str = Field(default_factory=lambda: str(data_root() / "warehouse.duckdb"))
    parquet_base_dir: str = Field(
        default_factory=lambda: str(data_root() / "parquet"),
        description="base_dir of the Parquet IO manager, for views over assets.",
    )
    lock_retries: int = Field(default=30, description="DuckDB allows one writing process; wait for it.")
    s3_uri: str = Field(
        default="",
        description="aws profile: s3://bucket/key of the durable copy of the "
        "database file; `database` is then the local working copy.",
    )
    endpoint_url: str = Field(default="", description="S3-compatible endpoint (MinIO, moto); empty = AWS.")
    use_httpfs: bool = Field(
        default=True,
        description="Read s3:// Parquet through DuckDB's httpfs when it "
        "loads; otherwise (or False) copy it in through Polars.",
    )

    def _synced_file(self):
        bucket, key = parse_s3_uri(self.s3_uri)
        return SyncedFile(s3_client(self.endpoint_url), bucket, key, Path(self.database))

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.s3_uri:
            synced = self._synced_file()
            synced.pull()
            with self._connect_local(read_only) as conn:
                yield conn
            if not read_only:
                synced.push()
            return
        with self._connect_local(read_only) as conn:
            yield conn

    @contextmanager
    def _connect_local(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        conn = None
        for attempt in range(self.lock_retries):
            try:
                conn = duckdb.connect(self.database, read_only=read_only)
                break
            except duckdb.IOException:
                if attempt == self.lock_retries - 1:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))
        assert conn is not None
        try:
            yield conn
        finally:
            conn.close()

    def table_name(self, name: str) -> str:
        """The fully qualified name of a warehouse table, as the UI shows it (database file stem, schema,
        table: what `duckdb <file>` then `SELECT * FROM main.<table>` opens)."""
        return f"{Path(self.database).stem}.{WAREHOUSE_SCHEMA}.{name}"

    def _remote(self) -> bool:
        return self.parquet_base_dir.startswith("s3://")

    def _remote_glob(self, asset_name: str) -> str | None:
        bucket, prefix = parse_s3_uri(self.parquet_base_dir)
        client = s3_client(self.endpoint_url)
        folder = client.list_objects_v2(Bucket=bucket, Prefix=join_key(prefix, asset_name) + "/", MaxKeys=1)
        if folder.get("KeyCount", 0):
            return f"s3://{join_key(bucket, prefix, asset_name)}/*.parquet"
        single = client.list_objects_v2(
            Bucket=bucket, Prefix=join_key(prefix, f"{asset_name}.parquet"), MaxKeys=1
        )
        if single.get("KeyCount", 0):
            return f"s3://{join_key(bucket, prefix, asset_name)}.parquet"
        return None

    def storage_options(self) -> dict:
        """Polars' object_store options for the s3:// Parquet (credentials from the environment)."""
        return {"aws_endpoint_url": self.endpoint_url} if self.endpoint_url else {}

    def httpfs_ready(self, conn: duckdb.DuckDBPyConnection) -> bool:
        """Load httpfs (installed beforehand with `INSTALL httpfs`, which needs the DuckDB extension
        repository) and point it at the endpoint; False when it cannot be loaded."""
        if not self.use_httpfs:
            return False
        try:
            conn.execute("LOAD httpfs")
        except duckdb.Error:
            return False
        options = ["TYPE s3", "PROVIDER credential_chain"]
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            options += [
                f"ENDPOINT '{host.rstrip('/')}'",
                "URL_STYLE 'path'",
                f"USE_SSL {str(scheme == 'https').lower()}",
            ]
        conn.execute(f"CREATE OR REPLACE TEMPORARY SECRET empathy_s3 ({', '.join(options)})")
        return True

    def read_remote_parquet(self, glob: str):
        """Every file of an s3:// glob as one Polars frame, columns unioned by name like DuckDB's
        read_parquet(union_by_name = true)."""
        import polars as pl

        bucket, key = parse_s3_uri(glob)
        options = self.storage_options() or None
        if not key.endswith("*.parquet"):
            return pl.read_parquet(glob, storage_options=options)
        prefix = key[: -len("*.parquet")]
        paginator = s3_client(self.endpoint_url).get_paginator("list_objects_v2")
        uris = [
            f"s3://{bucket}/{o['Key']}"
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
            if o["Key"].endswith(".parquet") and "/" not in o["Key"][len(prefix) :]
        ]
        return pl.concat(
            [pl.read_parquet(u, storage_options=options) for u in sorted(uris)], how="diagonal_relaxed"
        )

    def read_asset_frame(self, asset_name: str):
        """An asset's Parquet (every partition) as one Polars frame, on disk or on S3; None if absent."""
        import polars as pl

        glob = self.parquet_glob(asset_name)
        if glob is None:
            return None
        if self._remote():
            return self.read_remote_parquet(glob)
        return pl.read_parquet(glob, allow_missing_columns=True)

    def parquet_glob(self, asset_name: str) -> str | None:
        """Partitioned assets are a folder of <partition>.parquet files; others a single file."""
        if self._remote():
            return self._remote_glob(asset_name)
        base = Path(self.parquet_base_dir)
        if (base / asset_name).is_dir():
            return str(base / asset_name / "*.parquet")
        if (base / f"{asset_name}.parquet").is_file():
            return str(base / f"{asset_name}.parquet")
        return None

    def register_parquet_views(self, conn: duckdb.DuckDBPyConnection, names: list[str]) -> list[str]:
        made = []
        remote_without_httpfs = self._remote() and not self.httpfs_ready(conn)
        for name in names:
            glob = self.parquet_glob(name)
            if glob is None:
                continue
            if remote_without_httpfs:
                frame = self.read_remote_parquet(glob)
                conn.register("_empathy_frame", frame.to_arrow())
                conn.execute(
                    f'CREATE OR REPLACE TABLE {WAREHOUSE_SCHEMA}."{name}" AS SELECT * FROM _empathy_frame'
                )
                conn.unregister("_empathy_frame")
                made.append(name)
                continue
            conn.execute(
                f'CREATE OR REPLACE VIEW {WAREHOUSE_SCHEMA}."{name}" AS '
                f"SELECT * FROM read_parquet('{glob}', union_by_name = true)"
            )
            made.append(name)
        return made


def write_table(warehouse: Warehouse, name: str, frame: pl.DataFrame, preview_rows: int = 5) -> dict:
    """Replace a DuckDB table with `frame` (an empty frame still creates the table, with its schema,
    so SQL models reading it never fail on a missing table). Returns the table's materialization
    metadata: column schema, row count, table name and a preview (`metadata.table_metadata`)."""

    arrow = frame.to_arrow()
    with warehouse.connect() as conn:
        conn.register("_frame", arrow)
        conn.execute(f'CREATE OR REPLACE TABLE {WAREHOUSE_SCHEMA}."{name}" AS SELECT * FROM _frame')
        conn.unregister("_frame")
    return table_metadata(frame, table=warehouse.table_name(name), preview_rows=preview_rows)
