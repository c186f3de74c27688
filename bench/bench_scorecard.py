"""The scorecard's statistics (`scorecard_tables`: summaries with intervals, paired comparisons with
permutation tests) on an existing warehouse, this checkout against another one, in alternating subprocesses:
seconds per run, the paired ratio with its t interval, and whether both wrote the same tables.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/bench_scorecard.py --warehouse <DAGSTER_HOME>/data/warehouse.duckdb \\
        --reference-tree /tmp/before --rounds 3

The warehouse is opened read-only (copy it first if a run may be writing to it)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_once(warehouse: str, out_prefix: str) -> float:
    """In this process (the code on sys.path): both scorecard tables of `warehouse`, written as Parquet."""
    import time

    import duckdb

    from empathy_dag.defs.evaluate.assets import EvaluationConfig
    from empathy_dag.evaluate import scorecard
    from empathy_dag.warehouse.tables import WAREHOUSE_SCHEMA

    conn = duckdb.connect(warehouse, read_only=True)
    present = {
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [WAREHOUSE_SCHEMA]
        ).fetchall()
    }
    names = [*scorecard.METRIC_TABLES, "evaluation_items", "evaluation_systems"]
    tables = {
        n: conn.execute(f'SELECT * FROM {WAREHOUSE_SCHEMA}."{n}"').pl() if n in present else None
        for n in names
    }
    items, systems = tables.pop("evaluation_items"), tables.pop("evaluation_systems")
    baseline = systems.filter(systems["is_baseline"])["system"].to_list()[0]
    settings = EvaluationConfig().scorecard_settings()
    start = time.perf_counter()
    long, _ = scorecard.item_scores(tables)
    summaries = scorecard.metric_summaries(
        long, settings, items=items, retention=tables.get("metric_retention")
    )
    comparisons = scorecard.paired_comparisons(long, {"baseline": baseline}, settings, items=items)
    seconds = time.perf_counter() - start
    summaries.write_parquet(f"{out_prefix}_summaries.parquet")
    comparisons.write_parquet(f"{out_prefix}_comparisons.parquet")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--reference-tree", default=None, help="another checkout to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # (warehouse, out prefix): child mode
    args = ap.parse_args()
    if args.one:
        print(json.dumps({"seconds": run_once(*args.one)}))
        return

    import polars as pl
    from _hardware import cpu_info
    from _stats import t_interval
    from polars.testing import assert_frame_equal

    trees = {"this": str(ROOT)}
    if args.reference_tree:
        trees["reference"] = str(Path(args.reference_tree).resolve())
    report: dict = {"warehouse": args.warehouse, "hardware_before": cpu_info(), "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
            for name in order:
                env = {**os.environ, "PYTHONPATH": trees[name]}
                out = subprocess.run(
                    [sys.executable, __file__, "--warehouse", args.warehouse, "--one", args.warehouse,
                     f"{tmp}/{name}"],
                    env=env, capture_output=True, text=True, check=True, cwd=trees[name],
                )  # fmt: skip
                seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
                report["seconds"].setdefault(name, []).append(round(seconds, 2))
                print(name, round(seconds, 2), flush=True)
        if "reference" in trees:
            same = True
            for table in ("summaries", "comparisons"):
                try:
                    assert_frame_equal(
                        pl.read_parquet(f"{tmp}/reference_{table}.parquet"),
                        pl.read_parquet(f"{tmp}/this_{table}.parquet"),
                        rel_tol=1e-9,
                        abs_tol=1e-12,
                    )
                except AssertionError as err:
                    same = False
                    report[f"{table}_difference"] = str(err)[:500]
            report["identical_tables"] = same
            ratios = [r / t for r, t in zip(report["seconds"]["reference"], report["seconds"]["this"])]
            low, high = t_interval(ratios) if len(ratios) > 1 else (None, None)
            report["speedup_reference_over_this"] = {
                "mean": round(statistics.mean(ratios), 3),
                "ci95": [round(low, 3), round(high, 3)] if low is not None else None,
            }
    report["hardware_after"] = cpu_info()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
