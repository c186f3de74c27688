"""Peak memory of one landing-sensor scan that sees one large JSONL file (issue 24): the resident size before
`scan_landing_zone` and the peak during it (VmHWM, reset first) on a local landing zone holding one generated
file of --mb megabytes, in a fresh process.

The rows are generated (distinct English sentences, every row declaring "en"), and the scan runs with
`detect_declared_language: false` so that the language identifier (constant memory, ~0.2 ms a row) does
not make a 500 MB measurement take most of an hour; everything else is the sensor's default path.

    PYTHONPATH=. python bench/bench_landing_memory.py --mb 500 --out /tmp/landing_memory.json
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTENCE = (
    "my sister finally called me after months of silence and I felt relieved but also nervous about "
    "what she wanted to tell me because the last time we spoke it ended badly with tears"
)
WORDS = SENTENCE.split()


def write_jsonl(path: Path, mb: float, seed: int = 0) -> int:
    """Distinct valid rows, about `mb` megabytes; returns the number of rows."""
    rng = random.Random(seed)
    target, size, n = int(mb * 1024 * 1024), 0, 0
    emotions = ("joy", "sadness", "fear", "anger", "surprise", "gratitude", "pride", "grief")
    with open(path, "w", encoding="utf-8") as fh:
        while size < target:
            words = rng.sample(WORDS, 18)
            row = {
                "emotion": emotions[n % len(emotions)],
                "situation": f"Row {n}: " + " ".join(words) + ".",
                "speaker_utterance": " ".join(rng.sample(WORDS, 14)) + ".",
                "listener_reply": " ".join(rng.sample(WORDS, 12)) + ".",
                "language": "en",
                "domain": "bench",
            }
            line = json.dumps(row) + "\n"
            fh.write(line)
            size += len(line)
            n += 1
    return n


def status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc: ru_maxrss would carry over the peak of the
    process that forked this one."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


def scan(zone_dir: str, stream_block_mb: float) -> dict:
    """One sensor scan of `zone_dir` in this process: what the tick decided, the resident size before it
    and the peak during it."""
    from empathy_dag.ingest.landing import LandingCursor, LocalLandingZone, scan_landing_zone
    from empathy_dag.ingest.records import ValidationLimits
    from empathy_dag.taxonomy import default_taxonomy

    tax = default_taxonomy()
    limits = ValidationLimits(detect_declared_language=False, stream_block_mb=stream_block_mb)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the peak so far := the resident size now
    before = status_mib("VmRSS")
    start = time.perf_counter()
    decisions, _ = scan_landing_zone(LocalLandingZone(zone_dir), LandingCursor(), taxonomy=tax, limits=limits)
    seconds = time.perf_counter() - start
    (d,) = decisions
    return {
        "rss_before_mib": round(before),
        "peak_mib": round(status_mib("VmHWM")),
        "seconds": round(seconds, 1),
        "outcome": d.outcome,
        "rows_in": d.rows_in,
        "valid_rows": d.valid_rows,
        "quarantined_rows": d.quarantined_rows,
        "emotions": len(d.emotions),
        "message": d.message,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=500)
    ap.add_argument("--stream-block-mb", type=float, default=16)
    ap.add_argument("--scan", help=argparse.SUPPRESS)  # child mode: scan this folder, print JSON
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.scan:
        print(json.dumps(scan(args.scan, args.stream_block_mb)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _hardware import cpu_info

    with tempfile.TemporaryDirectory() as tmp:
        zone = Path(tmp) / "landing"
        zone.mkdir()
        path = zone / "big.jsonl"
        rows = write_jsonl(path, args.mb)
        child = subprocess.run(
            [sys.executable, __file__, "--scan", str(zone), "--stream-block-mb", str(args.stream_block_mb)],
            capture_output=True,
            text=True,
            check=True,
        )
        report = {
            "file_mb": round(path.stat().st_size / 1024 / 1024, 1),
            "rows": rows,
            "stream_block_mb": args.stream_block_mb,
            **json.loads(child.stdout.strip().splitlines()[-1]),
            "hardware": cpu_info(),
        }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
