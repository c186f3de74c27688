"""Parquet IO for per-emotion frames, and the all-or-nothing IO manager of multi-output steps.

dagster-polars' `PolarsParquetIOManager` writes one file per partition but refuses an output that
covers several partitions, which is what a single-run backfill over the 28 emotions produces. This
subclass accepts `{emotion: DataFrame}` for such runs, and writes every local file atomically
(temp file + rename) so that a run killed mid-write never leaves a Parquet file that reads as
complete. Object stores (S3) are atomic per PUT already, so remote paths go straight through."""

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetKey,
    ConfigurableIOManagerFactory,
    InputContext,
    IOManager,
    MetadataValue,
    OutputContext,
    PythonObjectDagsterType,
    TableSchema,
    build_output_context,
)
from dagster_polars import PolarsParquetIOManager

from empathy_dag.defs.metadata import column_schema, frames_schema
from empathy_dag.defs.warehouse.resource import WAREHOUSE_SCHEMA, Warehouse
from empathy_dag.frames import concat_partitions  # noqa: F401  (re-exported for the assets)
from empathy_dag.models import pid_alive, remove_interrupted_temps, temp_name_for
from empathy_dag.safe_paths import single_component

# What dagster-polars reads to choose an eager DataFrame write (its `typing_type`).
POLARS_FRAME_TYPE = PythonObjectDagsterType(pl.DataFrame)


def per_partition(context, value: Any) -> dict[str, Any]:
    """Normalize an input of a partitioned asset to {partition_key: value}: Dagster hands over a bare
    object when one partition is loaded and a dict when several are."""
    keys = list(getattr(context, "partition_keys", None) or [])
    if isinstance(value, Mapping):
        return dict(value)
    if len(keys) != 1:
        raise ValueError(f"expected one partition, got {keys}")
    return {keys[0]: value}


class EmotionParquetIOManager(PolarsParquetIOManager):
    def handle_output(self, context: OutputContext, obj: Any):
        if context.has_asset_partitions and isinstance(obj, Mapping):
            paths = self._get_paths_for_partitions(context)
            missing = sorted(set(paths) - set(obj))
            if missing:
                raise ValueError(
                    f"{context.asset_key.to_user_string()}: the run covers partitions {missing} but the "
                    "asset returned no frame for them"
                )
            for key, path in paths.items():
                self.make_directory(path.parent)
                self.dump_to_path(context=context, obj=obj[key], path=path)
            first = next(iter(paths.values()))
            frames = {k: v for k, v in obj.items() if isinstance(v, pl.DataFrame)}
            context.add_output_metadata(
                {
                    # A run over several partitions skips dagster-polars' per-output metadata: the Columns
                    # section and the location come from here instead.
                    **(
                        {"dagster/column_schema": self._schema(context, frames_schema(frames))}
                        if frames
                        else {}
                    ),
                    "dagster/uri": str(first.parent),
                    "path": MetadataValue.path(str(first.parent)),
                    "partitions_written": len(paths),
                    "rows_written": sum(
                        int(getattr(obj[k], "height", 0)) for k in paths if isinstance(obj[k], pl.DataFrame)
                    ),
                }
            )
            return
        super().handle_output(context, obj)

    @staticmethod
    def _schema(context: OutputContext, columns) -> TableSchema:
        return column_schema(columns, (context.definition_metadata or {}).get("descriptions"))

    def get_metadata(self, context: OutputContext, obj):
        """dagster-polars' metadata (schema, preview, stats, row count) with the columns described from
        the project glossary, and the file written."""
        metadata = super().get_metadata(context, obj)
        if isinstance(obj, pl.DataFrame | pl.LazyFrame):
            metadata["dagster/column_schema"] = self._schema(context, obj.collect_schema())
            metadata["dagster/uri"] = str(self._get_path(context))
        return metadata

    def write_df_to_path(self, context: OutputContext, df: pl.DataFrame, path):
        if getattr(path, "protocol", "") not in ("", "file", "local"):
            return super().write_df_to_path(context, df, path)
        # Temp files of earlier writes killed before their rename would otherwise stay forever.
        remove_interrupted_temps(Path(str(path)))
        tmp = temp_name_for(Path(str(path)))
        tmp = path.with_name(tmp.name)
        try:
            super().write_df_to_path(context, df, tmp)
            os.replace(str(tmp), str(path))
        finally:
            if os.path.exists(str(tmp)):
                os.unlink(str(tmp))


# ------------------------------------------------------------------ all-or-nothing multi-output steps

STAGING_COMMIT = "COMMIT.json"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = temp_name_for(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AllOrNothingIOManager(ConfigurableIOManagerFactory):
    """The outputs of one multi-output step (ingest_corpus: `corpus_rows` to Parquet, `quarantine` and
    `ingest_file_log` to the DuckDB warehouse) made visible together or not at all.

    Each store is atomic per output (temp + rename for Parquet, a transaction for DuckDB), but a step
    writing three outputs through two IO managers used to leave, when killed between them, a new
    `corpus_rows` beside the old quarantine and file log. Here the step's outputs go through a redo
    journal, the way a database commits:

    1. stage: each output is written as Parquet under `staging_dir/<run>.<pid>/` (temp + rename); the
       real stores are not touched, so a fault now (exception, full disk, SIGKILL) leaves the previous
       materialization whole; an exception also removes the staging folder on the spot;
    2. commit: once every output of the step is staged, `COMMIT.json` is written (temp + rename, fsync):
       the single point after which the new outputs are the truth;
    3. apply: the Parquet outputs through the Parquet IO manager (each temp + rename), the warehouse
       tables in one DuckDB transaction (`stored_in` in each output's metadata says which), then the
       staging folder is removed.

    A kill during apply leaves a committed journal; whoever uses this IO manager next (the next ingest
    run, or any step loading `corpus_rows`) finishes applying it first, so a loaded input never mixes
    two runs. Every apply is a full replacement, so applying twice changes nothing. A staging folder
    without commit whose writer process is gone is an aborted run's and is deleted.
    (Readers that bypass Dagster, SQL on the DuckDB file, can see the few milliseconds between the
    Parquet rename and the DuckDB commit half done if a kill lands exactly there, until the next use.
    In the aws profile the journal is on the task's disk: a task killed during apply is finished by the
    next run on the same disk; a fresh task's ingest rewrites all three from a fresh read anyway.)"""

    # The two stores' settings as plain config, not nested resources: a resource with nested resources
    # becomes a generator resource, which sensors built with every resource could no longer open.
    # `over(...)` copies them from the profile's own resources so the two cannot drift apart.
    parquet_base_dir: str
    parquet_storage_options: dict[str, Any] | None = None
    warehouse_database: str
    warehouse_s3_uri: str = ""
    warehouse_endpoint_url: str = ""
    staging_dir: str

    @classmethod
    def over(
        cls, parquet: EmotionParquetIOManager, warehouse: Warehouse, staging_dir: str
    ) -> "AllOrNothingIOManager":
        return cls(
            parquet_base_dir=parquet.base_dir,
            parquet_storage_options=dict(parquet.cloud_storage_options or {}) or None,
            warehouse_database=warehouse.database,
            warehouse_s3_uri=warehouse.s3_uri,
            warehouse_endpoint_url=warehouse.endpoint_url,
            staging_dir=staging_dir,
        )

    def create_io_manager(self, context) -> IOManager:
        parquet = EmotionParquetIOManager(
            base_dir=self.parquet_base_dir, storage_options=self.parquet_storage_options
        )
        parquet.setup_for_execution(context)
        warehouse = Warehouse(
            database=self.warehouse_database,
            parquet_base_dir=self.parquet_base_dir,
            s3_uri=self.warehouse_s3_uri,
            endpoint_url=self.warehouse_endpoint_url,
        )
        return _AllOrNothing(parquet, warehouse, Path(self.staging_dir))


STORES = ("parquet", "warehouse")


class _AllOrNothing(IOManager):
    def __init__(self, parquet: EmotionParquetIOManager, warehouse: Warehouse, staging_dir: Path):
        self.parquet, self.warehouse, self.staging_dir = parquet, warehouse, staging_dir

    # -- journal

    def _folder(self, context: OutputContext) -> Path:
        return self.staging_dir / f"{single_component(context.run_id, 'run id')}.{os.getpid()}"

    @staticmethod
    def _store_of(metadata: Mapping[str, Any], what: str) -> str:
        store = metadata.get("stored_in")
        if store not in STORES:
            raise ValueError(
                f"{what}: an output of an all-or-nothing step needs metadata stored_in in "
                f"{STORES}, got {store!r}"
            )
        return store

    def recover(self) -> list[str]:
        """Finish the committed journals of writers that are gone (in commit order) and delete their
        uncommitted staging folders. Returns what was done, one line per folder."""
        done: list[str] = []
        if not self.staging_dir.is_dir():
            return done
        folders = []
        for folder in self.staging_dir.iterdir():
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            pid = folder.name.rsplit(".", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
                continue  # a live writer's (another step still staging or applying): not ours to judge
            folders.append(folder)
        committed = sorted(
            (f for f in folders if (f / STAGING_COMMIT).exists()),
            key=lambda f: json.loads((f / STAGING_COMMIT).read_text())["committed_at"],
        )
        for folder in committed:
            self._apply(folder)
            done.append(f"applied {folder.name}")
        for folder in folders:
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                done.append(f"discarded {folder.name} (never committed)")
        return done

    def _apply(self, folder: Path) -> None:
        journal = json.loads((folder / STAGING_COMMIT).read_text())
        tables = []
        for entry in journal["outputs"]:
            frame = pl.read_parquet(folder / entry["file"])
            if entry["store"] == "parquet":
                context = build_output_context(
                    name=entry["name"],
                    asset_key=AssetKey(entry["asset_key"]),
                    definition_metadata=entry["metadata"],
                    dagster_type=POLARS_FRAME_TYPE,
                )
                self.parquet.handle_output(context, frame)
            else:
                tables.append((single_component(entry["asset_key"][-1], "table name"), frame))
        if tables:
            with self.warehouse.connect() as conn:
                conn.execute("BEGIN TRANSACTION")
                for table, frame in tables:
                    # An empty frame still makes its table (with its columns): SQL models read it.
                    conn.register("_staged", frame.to_arrow())
                    conn.execute(
                        f'CREATE OR REPLACE TABLE {WAREHOUSE_SCHEMA}."{table}" AS SELECT * FROM _staged'
                    )
                    conn.unregister("_staged")
                conn.execute("COMMIT")
        shutil.rmtree(folder, ignore_errors=True)

    # -- IOManager

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if context.has_asset_partitions:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: all-or-nothing outputs are unpartitioned"
            )
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(
                f"{context.name}: all-or-nothing outputs are polars DataFrames, got {type(obj).__name__}"
            )
        store = self._store_of(context.definition_metadata or {}, context.name)
        folder = self._folder(context)
        if not folder.exists():
            self.recover()  # a dead run's journal goes first: this run's outputs must land after it
            folder.mkdir(parents=True, exist_ok=True)
        try:
            staged = folder / f"{single_component(context.name, 'output name')}.parquet"
            tmp = temp_name_for(staged)
            obj.write_parquet(tmp)
            os.replace(tmp, staged)
            entry = {
                "name": context.name,
                "asset_key": list(context.asset_key.path),
                "store": store,
                "file": staged.name,
                "rows": obj.height,
                "metadata": {
                    k: v
                    for k, v in (context.definition_metadata or {}).items()
                    if isinstance(v, str | int | float | bool)
                },
            }
            _write_atomically(folder / f"{staged.name}.json", json.dumps(entry).encode())
            # The step's outputs that come here (asset-check outputs of the same op never do).
            expected = sorted(o.name for o in context.op_def.output_defs if "stored_in" in (o.metadata or {}))
            entries = {
                p.name[: -len(".parquet.json")]: json.loads(p.read_text())
                for p in folder.glob("*.parquet.json")
            }
        except BaseException:
            # An exception (a full disk...) aborts the whole step's write; a SIGKILL never gets here,
            # and the next `recover` deletes the folder.
            shutil.rmtree(folder, ignore_errors=True)
            raise
        context.add_output_metadata(
            {
                "all_or_nothing": MetadataValue.text(
                    f"staged; visible once all of {', '.join(expected)} are written"
                )
            }
        )
        if sorted(entries) != expected:
            return
        journal = {
            "run_id": context.run_id,
            "committed_at": time.time(),
            "outputs": [entries[name] for name in expected],
        }
        _write_atomically(folder / STAGING_COMMIT, json.dumps(journal, indent=1).encode())
        self._apply(folder)

    def load_input(self, context: InputContext) -> Any:
        self.recover()
        upstream = context.upstream_output
        if self._store_of(upstream.definition_metadata or {}, upstream.name) == "parquet":
            return self.parquet.load_input(context)
        table = single_component(upstream.asset_key.path[-1], "table name")
        with self.warehouse.connect(read_only=True) as conn:
            return conn.execute(f'SELECT * FROM {WAREHOUSE_SCHEMA}."{table}"').pl()
