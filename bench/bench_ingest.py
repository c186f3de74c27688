"""Ingest of one large JSONL file, before and after the columnar corpus frame (issue 24, item 3), in the
same process, arms alternated so that load drifts hit both.

- old: the corpus frame from `dataclasses.asdict` per record (a recursive deep copy per row), and every
  text normalised twice per row (once to check its length, once to store it);
- new: `corpus_frame` (columns filled from the records' attributes) and `normalize_text` memoised for
  the row's second call.

Both arms must produce the same corpus and quarantine (checked). Since ingest validates in polars
(ingest/columnar.py) both arms run that validator, so this script no longer separates what it measured;
it stays for the BENCHMARKS.md figures it produced. The current comparison is bench_ingest_columnar.py. The corpus is built like
bench_scale.py's, from ../shared/data (never committed). Keep it short on a shared machine:

    PYTHONPATH=. python bench/bench_ingest.py --rows 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _hardware import cpu_info
from _stats import t_interval
from bench_scale import build_corpus

from empathy_dag.ingest import corpus as corpus_module
from empathy_dag.ingest import records
from empathy_dag.ingest.corpus import CORPUS_POLARS_SCHEMA, ingest_files
from empathy_dag.ingest.records import ValidationLimits
from empathy_dag.taxonomy import default_taxonomy


def old_corpus(result) -> pl.DataFrame:
    rows = [r.as_dict() for o in result.outcomes for r in o.records]
    return pl.DataFrame(rows, schema=CORPUS_POLARS_SCHEMA, orient="row")


def run(path: Path, arm: str) -> tuple[float, pl.DataFrame, pl.DataFrame]:
    memoised = records.normalize_text
    if arm == "old":
        records.normalize_text = memoised.__wrapped__
    memoised.cache_clear()
    try:
        start = time.perf_counter()
        result = ingest_files(
            [path], taxonomy=default_taxonomy(), limits=ValidationLimits(max_text_chars=4000)
        )
        corpus = old_corpus(result) if arm == "old" else corpus_module.IngestResult.corpus.fget(result)
        quarantine = result.quarantine
        return time.perf_counter() - start, corpus, quarantine
    finally:
        records.normalize_text = memoised


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    hardware_before = cpu_info()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        built = build_corpus(args.rows, path)
        times: dict[str, list[float]] = {"old": [], "new": []}
        reference = None
        for i in range(args.repeats):
            for arm in ("old", "new") if i % 2 == 0 else ("new", "old"):
                seconds, corpus, quarantine = run(path, arm)
                times[arm].append(seconds)
                if reference is None:
                    reference = (corpus, quarantine)
                assert corpus.equals(reference[0]) and quarantine.equals(reference[1]), f"{arm} differs"
    ratios = [o / n for o, n in zip(times["old"], times["new"], strict=True)]
    report = {
        "rows": args.rows,
        "bytes": built["bytes"],
        "repeats": args.repeats,
        "valid_rows": reference[0].height,
        "quarantined": reference[1].height,
        "old_s": times["old"],
        "new_s": times["new"],
        "old_rows_per_s_median": args.rows / statistics.median(times["old"]),
        "new_rows_per_s_median": args.rows / statistics.median(times["new"]),
        "speedup_mean": statistics.mean(ratios),
        "speedup_95ci": t_interval(ratios),
        "hardware_before": hardware_before,
        "hardware_after": cpu_info(),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
