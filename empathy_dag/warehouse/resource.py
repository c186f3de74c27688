"""The DuckDB warehouse resource: a file (local profile) that holds DuckDB-native tables and views
over the Parquet assets, so SQL models can join both."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
from dagster import ConfigurableResource
from pydantic import Field

from empathy_dag.settings import data_root

WAREHOUSE_SCHEMA = "main"


class Warehouse(ConfigurableResource):
    database: str = Field(default_factory=lambda: str(data_root() / "warehouse.duckdb"))
    parquet_base_dir: str = Field(default_factory=lambda: str(data_root() / "parquet"),
                                  description="base_dir of the Parquet IO manager, for views over assets.")
    lock_retries: int = Field(default=30, description="DuckDB allows one writing process; wait for it.")

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
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

    def parquet_glob(self, asset_name: str) -> str | None:
        """Partitioned assets are a folder of <partition>.parquet files; others a single file."""
        base = Path(self.parquet_base_dir)
        if (base / asset_name).is_dir():
            return str(base / asset_name / "*.parquet")
        if (base / f"{asset_name}.parquet").is_file():
            return str(base / f"{asset_name}.parquet")
        return None

    def register_parquet_views(self, conn: duckdb.DuckDBPyConnection, names: list[str]) -> list[str]:
        made = []
        for name in names:
            glob = self.parquet_glob(name)
            if glob is None:
                continue
            conn.execute(
                f'CREATE OR REPLACE VIEW {WAREHOUSE_SCHEMA}."{name}" AS '
                f"SELECT * FROM read_parquet('{glob}', union_by_name = true)"
            )
            made.append(name)
        return made
