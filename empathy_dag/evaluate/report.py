"""The leaderboard as text, for the end of the demo command and for notebooks:

    from empathy_dag.evaluate.report import leaderboard_text
    print(leaderboard_text(warehouse))   # or a path to the DuckDB file

One row per metric over all emotions, one column per system, the baseline first. Each cell is the
mean with its 95% interval; a non-baseline cell ends with the paired verdict against the baseline:
`+` confidently better, `-` confidently worse (`-!` a regression beyond the margin), `~` inconclusive
(the honest answer on a small set)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
from tabulate import tabulate

MARKS = {"better": " +", "worse": " -", "inconclusive": " ~", "descriptive": "", "baseline": ""}


def _cell(value, low, high, verdict, regression) -> str:
    if value is None:
        return ""
    text = f"{value:.4g}"
    if low is not None and high is not None:
        text += f" [{low:.4g}, {high:.4g}]"
    mark = MARKS.get(verdict or "", "")
    if regression:
        mark = " -!"
    return text + mark


def _has_language(conn: duckdb.DuckDBPyConnection) -> bool:
    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' "
        "AND table_name = 'leaderboard'"
    ).fetchall()
    return ("language",) in columns


def leaderboard_languages(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The languages with rows of their own in the leaderboard (empty for a table from before them)."""
    if not _has_language(conn):
        return []
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT language FROM main.leaderboard WHERE language <> 'all' ORDER BY language"
        ).fetchall()
    ]


def leaderboard_frame(conn: duckdb.DuckDBPyConnection, language: str = "all") -> pl.DataFrame:
    """Metrics x systems over all emotions, for every item (`language` 'all') or one language's items."""
    if _has_language(conn):
        board = conn.execute(
            "SELECT * FROM main.leaderboard WHERE emotion = 'all' AND language = ?", [language]
        ).pl()
    else:  # a leaderboard built before per-language rows
        board = conn.execute("SELECT * FROM main.leaderboard WHERE emotion = 'all'").pl()
    if not board.height:
        return pl.DataFrame()
    systems = (
        board.select("system", "is_baseline")
        .unique()
        .sort(["is_baseline", "system"], descending=[True, False])["system"]
        .to_list()
    )
    cells = board.with_columns(
        pl.struct("value", "ci_low", "ci_high", "verdict", "regression")
        .map_elements(
            lambda r: _cell(r["value"], r["ci_low"], r["ci_high"], r["verdict"], r["regression"]),
            return_dtype=pl.String,
        )
        .alias("cell"),
        pl.col("direction")
        .replace_strict({1: "higher", -1: "lower", 0: "-"}, return_dtype=pl.String)
        .alias("better"),
    )
    n = cells.group_by("metric").agg(pl.col("n").max().alias("n"))
    wide = cells.pivot(on="system", index=["metric", "better"], values="cell", aggregate_function="first")
    wide = wide.join(n, on="metric", how="left")
    return wide.select("metric", "better", "n", *[s for s in systems if s in wide.columns]).sort("metric")


def leaderboard_text(warehouse_or_path) -> str:
    """The overall leaderboard, then one per language when the items are in more than one (Japanese
    items reported on their own, in their own units and without the metrics that cannot score them)."""

    def frames(conn):
        languages = leaderboard_languages(conn)
        per_language = (
            [(lang, leaderboard_frame(conn, lang)) for lang in languages] if len(languages) > 1 else []
        )
        return leaderboard_frame(conn), per_language

    if isinstance(warehouse_or_path, (str, Path)):
        conn = duckdb.connect(str(warehouse_or_path), read_only=True)
        try:
            frame, per_language = frames(conn)
        finally:
            conn.close()
    else:
        with warehouse_or_path.connect(read_only=True) as conn:
            frame, per_language = frames(conn)
    if not frame.height:
        return "(the leaderboard is empty: materialize the evaluate group and the leaderboard SQL models)"
    table = tabulate(frame.rows(), headers=frame.columns, tablefmt="github")
    text = (
        "Leaderboard over all emotions: mean [95% bootstrap interval], n = items; against the baseline "
        "(paired test, Benjamini-Hochberg): + better, - worse, -! regression, ~ inconclusive\n\n" + table
    )
    for lang, sub in per_language:
        if sub.height:
            text += (
                f"\n\nLanguage {lang!r} only (its items; a metric that cannot score {lang!r} has no row):\n\n"
                + tabulate(sub.rows(), headers=sub.columns, tablefmt="github")
            )
    return text
