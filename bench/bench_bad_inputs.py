"""The generated bad-input corpus (tests/fixtures/bad_input_corpus.py) in one landing zone: kinds
handled, good rows lost, bad rows quarantined, paths accounted for, time to ingest and to scan it; and
real SIGKILLs at three write points (ingest: one output staged, mid-apply after the commit; in the middle
of a Parquet write), each
followed by a normal run whose data is checked for consistency.

    .venv/bin/python bench/bench_bad_inputs.py [--repeats 5] [--kills 3]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl
from _hardware import cpu_info
from scipy import stats

from empathy_dag.ingest.corpus import ingest_files
from empathy_dag.ingest.landing import LandingCursor, LocalLandingZone, scan_landing_zone
from empathy_dag.ingest.records import ValidationLimits
from empathy_dag.ingest.sources import list_landing_folder, printable_name
from empathy_dag.taxonomy import default_taxonomy
from tests.fixtures.bad_input_corpus import MAX_FILE_MB, every, write_corpus

CATCH_ALL = {"reader_error", "ingest_error", "validation_error", "accounting_error", "read_error"}


def interval(xs: list[float]) -> dict:
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return {"n": len(xs), "mean": mean}
    half = stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return {
        "n": len(xs),
        "mean": round(mean, 4),
        "ci95": [round(mean - half, 4), round(mean + half, 4)],
        "median": round(statistics.median(xs), 4),
    }


def corpus_figures(repeats: int) -> dict:
    tax, limits = default_taxonomy(), ValidationLimits(max_file_mb=MAX_FILE_MB)
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        kinds = write_corpus(landing, Path(tmp) / "outside")
        ingest_s, scan_s = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            files, skipped = list_landing_folder(landing, exclude_subfolders=("reviews",))
            result = ingest_files(files, taxonomy=tax, limits=limits, skipped=skipped)
            ingest_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            decisions, _ = scan_landing_zone(
                LocalLandingZone(landing), LandingCursor(), taxonomy=tax, limits=limits
            )
            scan_s.append(time.perf_counter() - start)
        landed = set(result.corpus["situation"])
        good = [t for k in kinds for t in k.good]
        q = result.quarantine
        expected_q = {printable_name(k): v for k, v in every(kinds, "quarantined").items()}
        prefix = printable_name(str(landing)) + "/"
        got_q: dict = {}
        for r in q.iter_rows(named=True):
            per = got_q.setdefault(r["file"].removeprefix(prefix), {})
            per[r["reason_code"]] = per.get(r["reason_code"], 0) + 1
        log = result.summary()
        statuses = {f.removeprefix(prefix): s for f, s in zip(log["file"], log["status"])}
        expected_status = {printable_name(k): v for k, v in every(kinds, "status").items()}
        kinds_ok = sum(
            all(t in landed for t in k.good)
            and all(got_q.get(printable_name(f)) == v for f, v in k.quarantined.items())
            and all(statuses.get(printable_name(f)) == s for f, s in k.status.items())
            for k in kinds
        )
        return {
            "kinds": len(kinds),
            "kinds_handled": kinds_ok,
            "good_rows": len(good),
            "good_rows_lost": sum(t not in landed for t in good),
            "bad_rows_expected": sum(sum(v.values()) for v in expected_q.values()),
            "bad_rows_quarantined_with_expected_reason": sum(
                min(n, got_q.get(f, {}).get(code, 0)) for f, v in expected_q.items() for code, n in v.items()
            ),
            "catch_all_reasons": int(q.filter(pl.col("reason_code").is_in(list(CATCH_ALL))).height),
            "paths": len(expected_status),
            "paths_accounted": sum(statuses.get(f) == s for f, s in expected_status.items()),
            "sensor_decisions": len(decisions),
            "sensor_errors": sum(d.outcome == "error" for d in decisions),
            "ingest_seconds": interval(ingest_s),
            "scan_seconds": interval(scan_s),
        }


def faults(kills: int) -> dict:
    from tests.test_automation_atomic import CHILD, FILE_A, FILE_B, INGEST_CHILD, _ingest_state, _names

    root_dir = Path(__file__).resolve().parent.parent
    survived = {
        "ingest_after_staging_one_output": 0,
        "ingest_after_commit_mid_apply": 0,
        "mid_parquet_write": 0,
    }
    for _ in range(kills):
        for mode, point in (
            ("kill_staged", "ingest_after_staging_one_output"),
            ("kill_applying", "ingest_after_commit_mid_apply"),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp) / "data"
                (root / "landing").mkdir(parents=True)
                (root / "landing" / "a.jsonl").write_text(FILE_A)
                run = [sys.executable, "-c", INGEST_CHILD, str(root)]
                first = subprocess.run(
                    [*run, "ok"], capture_output=True, text=True, cwd=root_dir, check=False
                )
                before = _ingest_state(root)
                (root / "landing" / "b.jsonl").write_text(FILE_B)
                killed = subprocess.run(
                    [*run, mode], capture_output=True, text=True, cwd=root_dir, check=False
                )
                # Before the commit point nothing visible may change; after it the journal is finished by
                # the next run, whose three outputs must then describe the same two files.
                untouched = mode != "kill_staged" or _ingest_state(root) == before
                healed = subprocess.run(
                    [*run, "ok"], capture_output=True, text=True, cwd=root_dir, check=False
                )
                state = _ingest_state(root)
                ok = (
                    "DONE" in first.stdout
                    and killed.returncode == -signal.SIGKILL
                    and untouched
                    and "DONE" in healed.stdout
                    and _names(state["corpus_rows"], 10) == ["a.jsonl", "b.jsonl"]
                    and _names(state["ingest_file_log"], 0) == ["a.jsonl", "b.jsonl"]
                    and [r[3] for r in state["quarantine"]] == ["unknown_emotion"]
                    and not list((root / "staging").iterdir())
                )
                survived[point] += ok
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, tmp, "1", "stall"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                cwd=root_dir,
            )
            for line in proc.stdout:
                if "HALF_WRITTEN" in line:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            proc.wait()
            partial_visible = (Path(tmp) / "frames" / "joy.parquet").exists()
            healed = subprocess.run(
                [sys.executable, "-c", CHILD, tmp, "2", "normal"],
                capture_output=True,
                text=True,
                cwd=root_dir,
                check=False,
            )
            version = pl.read_parquet(Path(tmp) / "frames" / "joy.parquet")["version"].unique().to_list()
            leftovers = list((Path(tmp) / "frames").glob(".*.tmp"))
            survived["mid_parquet_write"] += (
                not partial_visible and "DONE" in healed.stdout and version == [2] and not leftovers
            )
    return {"kills_per_point": kills, "survived": survived}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    out = {"hardware_before": cpu_info()}
    out["corpus"] = corpus_figures(args.repeats)
    out["faults"] = faults(args.kills)
    out["hardware_after"] = cpu_info()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
