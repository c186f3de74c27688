"""Frames of per-emotion assets, without Dagster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl


def concat_partitions(value: Any, schema: Any = None) -> pl.DataFrame:
    """The non-empty frames of a per-partition input ({partition: frame} or one frame) as one frame, in
    the order given, columns unioned by name; with none, an empty frame of `schema`."""
    frames = value.values() if isinstance(value, Mapping) else [value]
    non_empty = [df for df in frames if df is not None and df.height]
    return pl.concat(non_empty, how="diagonal_relaxed") if non_empty else pl.DataFrame(schema=schema)
