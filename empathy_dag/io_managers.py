"""Parquet IO for per-emotion frames.

dagster-polars' `PolarsParquetIOManager` writes one file per partition but refuses an output that
covers several partitions, which is what a single-run backfill over the 28 emotions produces. This
subclass accepts `{emotion: DataFrame}` for such runs, and writes every local file atomically
(temp file + rename) so that a run killed mid-write never leaves a Parquet file that reads as
complete. Object stores (S3) are atomic per PUT already, so remote paths go straight through."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from dagster import MetadataValue, OutputContext
from dagster_polars import PolarsParquetIOManager

from empathy_dag.models import remove_interrupted_temps, temp_name_for


def per_partition(context, value: Any) -> dict[str, Any]:
    """Normalize an input of a partitioned asset to {partition_key: value}: Dagster hands over a bare
    object when one partition is loaded and a dict when several are."""
    keys = list(getattr(context, "partition_keys", None) or [])
    if isinstance(value, Mapping):
        return dict(value)
    if len(keys) != 1:
        raise ValueError(f"expected one partition, got {keys}")
    return {keys[0]: value}


def concat_partitions(value: Any, schema: Any = None) -> pl.DataFrame:
    """The non-empty frames of a per-partition input ({partition: frame} or one frame) as one frame, in
    the order given, columns unioned by name; with none, an empty frame of `schema`."""
    frames = value.values() if isinstance(value, Mapping) else [value]
    non_empty = [df for df in frames if df is not None and df.height]
    return pl.concat(non_empty, how="diagonal_relaxed") if non_empty else pl.DataFrame(schema=schema)


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
            context.add_output_metadata(
                {
                    "path": MetadataValue.path(str(first.parent)),
                    "partitions_written": len(paths),
                    "rows_written": sum(
                        int(getattr(obj[k], "height", 0)) for k in paths if isinstance(obj[k], pl.DataFrame)
                    ),
                }
            )
            return
        super().handle_output(context, obj)

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
