"""Metadata a person wants to read in the Dagster UI: counts, previews, language mix."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl
from dagster import MetadataValue
from tabulate import tabulate


def markdown_table(df: pl.DataFrame, max_rows: int = 10, max_chars: int = 80) -> MetadataValue:
    def cell(v):
        s = "" if v is None else str(v)
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    rows = [[cell(v) for v in row] for row in df.head(max_rows).iter_rows()]
    return MetadataValue.md(tabulate(rows, headers=df.columns, tablefmt="github"))


def counts_by(frames: dict[str, pl.DataFrame], column: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for df in frames.values():
        if df.height and column in df.columns:
            for value, n in df.group_by(column).len().iter_rows():
                out[str(value)] = out.get(str(value), 0) + int(n)
    return dict(sorted(out.items()))


def frame_metadata(frames: dict[str, pl.DataFrame], preview_columns: Iterable[str]) -> dict:
    """Row counts per emotion, total, language mix and a preview of a few rows."""
    total = sum(df.height for df in frames.values())
    per_emotion = pl.DataFrame(
        {"emotion": list(frames), "rows": [df.height for df in frames.values()]},
        schema={"emotion": pl.String, "rows": pl.Int64},
    )
    non_empty = [df for df in frames.values() if df.height]
    sample = pl.concat([df.head(2) for df in non_empty], how="diagonal_relaxed") if non_empty else pl.DataFrame()
    cols = [c for c in preview_columns if c in sample.columns]
    md = {
        "dagster/row_count": total,
        "rows_per_emotion": markdown_table(per_emotion, max_rows=28),
        "language_mix": MetadataValue.json(counts_by(frames, "language")),
        "sources": MetadataValue.json(counts_by(frames, "source")),
    }
    if cols:
        md["preview"] = markdown_table(sample.select(cols), max_rows=8)
    if len(frames) > 1:  # a chart of one bar says nothing; a run over many emotions gets one
        from empathy_dag.plots import bar_chart_png, png_markdown

        counts = {e: df.height for e, df in frames.items()}
        md["rows_per_emotion_chart"] = png_markdown(bar_chart_png(counts, "rows per emotion"), "rows per emotion")
    return md
