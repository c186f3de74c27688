"""Ingest of one large JSONL file: the row-wise validator against the columnar one (issue 24, item 3),
in the same process, arms interleaved (the order rotates each repeat) so that load drifts hit all arms.

- rowwise: the path before this change: the file read whole, `validate_rows_rowwise` (one Python call
  per row), the corpus frame built from the records, ids hashed with one `update` per part;
- columnar: `ingest_files` as it is now (polars expressions over each block of the file; the language
  identifier still runs on every row, as the default `detect_declared_language=True` asks);
- columnar_cached: `ingest_files` with the language-guess cache of an earlier run of the same file (what
  every later ingest of a landing zone is: each run re-reads every file), lingua only for texts not in it;
- columnar_no_declared_detection: the same with `detect_declared_language=False` (the bench corpus
  declares "en" on every row, so lingua does not run at all).

rowwise, columnar and columnar_cached must produce the same corpus and quarantine (checked on every
repeat); the last arm differs only in language_detected / language_confidence (checked). The corpus is built like
bench_scale.py's, from ../shared/data (never committed). On a shared machine:

    PYTHONPATH=. nice python bench/bench_ingest_columnar.py --rows 100000 --repeats 5 --out /tmp/ingest.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _hardware import cpu_info
from _stats import t_interval
from bench_scale import build_corpus

from empathy_dag.ingest import corpus as corpus_module
from empathy_dag.ingest import records
from empathy_dag.ingest.corpus import ingest_files
from empathy_dag.ingest.records import ValidationLimits
from empathy_dag.taxonomy import default_taxonomy

ARMS = ("rowwise", "columnar", "columnar_cached", "columnar_no_declared_detection")


def stable_id_before(*parts: str | None) -> str:
    """records.stable_id as it was before this change (same digest, one update call per part)."""
    h = hashlib.sha256()
    for p in parts:
        h.update((p or "").encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:16]


def run(path: Path, arm: str, cache: Path | None = None):
    tax = default_taxonomy()
    patched = []
    if arm == "rowwise":
        patched = [
            (corpus_module, "validate_rows", records.validate_rows_rowwise),
            (records, "stable_id", stable_id_before),
        ]
        limits = ValidationLimits(max_file_mb=4096, stream_block_mb=4096)  # read whole, as before
    else:
        limits = ValidationLimits(
            max_file_mb=4096, detect_declared_language=arm != "columnar_no_declared_detection"
        )
    saved = [(module, name, getattr(module, name)) for module, name, _ in patched]
    for module, name, value in patched:
        setattr(module, name, value)
    records.normalize_text.cache_clear()
    try:
        start = time.perf_counter()
        result = ingest_files(
            [path], taxonomy=tax, limits=limits, language_cache=cache if arm == "columnar_cached" else None
        )
        corpus, quarantine = result.corpus, result.quarantine
        return time.perf_counter() - start, corpus, quarantine
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    hardware_before = cpu_info()
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        built = build_corpus(args.rows, path)
        cache = Path(tmp) / "language_guesses.parquet"
        # Warm-up (lingua's models load once per process, whichever arm goes first), and the earlier run
        # whose guesses the cached arm reads.
        run(path, "columnar_cached", cache)
        reference = None
        for i in range(args.repeats):
            order = ARMS[i % len(ARMS) :] + ARMS[: i % len(ARMS)]
            for arm in order:
                seconds, corpus, quarantine = run(path, arm, cache)
                times[arm].append(seconds)
                print(f"repeat {i} {arm:<32} {seconds:7.2f} s", flush=True)
                if arm == "columnar_no_declared_detection":
                    corpus = corpus.drop("language_detected", "language_confidence")
                    ref = reference[0].drop("language_detected", "language_confidence") if reference else None
                else:
                    ref = reference[0] if reference else None
                if reference is None and arm != "columnar_no_declared_detection":
                    reference = (corpus, quarantine)
                    continue
                if ref is not None:
                    assert corpus.equals(ref) and quarantine.equals(reference[1]), f"{arm} differs"
    report = {
        "rows": args.rows,
        "bytes": built["bytes"],
        "repeats": args.repeats,
        "valid_rows": reference[0].height,
        "quarantined": reference[1].height,
        "seconds": times,
        "rows_per_s_median": {arm: args.rows / statistics.median(v) for arm, v in times.items()},
        "hardware_before": hardware_before,
        "hardware_after": cpu_info(),
    }
    for arm in ARMS[1:]:
        ratios = [o / n for o, n in zip(times["rowwise"], times[arm], strict=True)]
        report[f"speedup_{arm}"] = {
            "mean": statistics.mean(ratios),
            "t95": t_interval(ratios),
            "ratios": ratios,
        }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
