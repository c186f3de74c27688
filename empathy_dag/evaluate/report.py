"""The leaderboard as text, for the end of the demo command and for notebooks:

    from empathy_dag.evaluate.report import leaderboard_text
    print(leaderboard_text(warehouse))   # or a path to the DuckDB file

One row per metric over all emotions, one column per system, the baseline first; a regression
against the baseline is marked with "!" and the direction of each metric is shown (higher/lower)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
from tabulate import tabulate


def leaderboard_frame(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    board = conn.execute("SELECT * FROM main.leaderboard WHERE emotion = 'all'").pl()
    if not board.height:
        return pl.DataFrame()
    systems = (board.select("system", "is_baseline").unique().sort(["is_baseline", "system"], descending=[True, False])
               ["system"].to_list())
    cells = board.with_columns(
        pl.when(pl.col("regression").fill_null(False))
        .then(pl.format("{}!", pl.col("value").round(4)))
        .otherwise(pl.col("value").round(4).cast(pl.String))
        .alias("cell"),
        pl.col("direction").replace_strict({1: "higher", -1: "lower", 0: "-"}, return_dtype=pl.String).alias("better"),
    )
    wide = cells.pivot(on="system", index=["metric", "better"], values="cell", aggregate_function="first")
    return wide.select("metric", "better", *[s for s in systems if s in wide.columns]).sort("metric")


def leaderboard_text(warehouse_or_path) -> str:
    if isinstance(warehouse_or_path, (str, Path)):
        conn = duckdb.connect(str(warehouse_or_path), read_only=True)
        try:
            frame = leaderboard_frame(conn)
        finally:
            conn.close()
    else:
        with warehouse_or_path.connect(read_only=True) as conn:
            frame = leaderboard_frame(conn)
    if not frame.height:
        return "(the leaderboard is empty: materialize the evaluate group and the leaderboard SQL models)"
    table = tabulate(frame.rows(), headers=frame.columns, tablefmt="github")
    return f"Leaderboard over all emotions ('!' = regression against the baseline)\n\n{table}"
