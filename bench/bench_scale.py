"""The data path at scale: ingest -> curate (every filter) -> splits -> pairs, at 1k / 10k / 105k dialogues.

Corpora are built from real sentences in ../shared/data (never committed): the speaker's turn is a
GoEmotions comment followed by an EmpatheticDialogues speaker turn, the reply an EmpatheticDialogues
listener turn, the situation an EmpatheticDialogues prompt; emotions are drawn with GoEmotions'
(skewed) label frequencies. About 5% of rows are near-duplicates of an earlier row (one word inserted,
one in two relabelled with another emotion), so dedup has real work across partitions.

Each size runs in its own process so that peak RSS is that size's own. Per step: seconds, rows/s and
the process's peak RSS after the step (ru_maxrss, monotonic). The emotion-consistency filter needs the
trained `emotion_classifier`; pass --classifier FOLDER to include it (any kind: a MiniLM forward pass runs
at ~30-300 rows/s on 2 cores and dominates at 105k; the n-gram classifier, `model=ngram`, saved by
bench_consistency_classifier.py --save-ngram, does not), otherwise it is reported as skipped.

    PYTHONPATH=. python bench/bench_scale.py --sizes 1000 10000 105578 --out /tmp/bench_scale.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(
    os.environ.get("EMPATHY_DAG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
NEAR_DUPLICATE_FRACTION = 0.05


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_sources(data: Path):
    labels = (data / "goemotions" / "emotions.txt").read_text().split()
    by_label: dict[str, list[str]] = {}
    with open(data / "goemotions" / "train.tsv", encoding="utf-8") as f:
        for line in f:
            text, ids, _ = line.rstrip("\n").split("\t")
            if "," in ids:  # single-label rows only, so the label is the comment's
                continue
            by_label.setdefault(labels[int(ids)], []).append(text)
    turns, prompts = [], []
    with open(data / "empathetic_dialogues" / "utterance_pairs_valid.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            turns.append((row["sp1"].replace("_comma_", ","), row["sp2"].replace("_comma_", ",")))
            prompts.append(row["prompt"].replace("_comma_", ","))
    return by_label, turns, sorted(set(prompts))


def build_corpus(n: int, path: Path, seed: int = 0) -> dict:
    by_label, turns, prompts = load_sources(DATA)
    rng = random.Random(seed)
    labels = sorted(by_label)
    weights = [len(by_label[label]) for label in labels]
    rows, near = [], 0
    fillers = ("really", "honestly", "just", "so", "truly")
    for _i in range(n):
        if rows and rng.random() < NEAR_DUPLICATE_FRACTION:
            src = dict(rng.choice(rows))
            words = src["listener_reply"].split()
            words.insert(rng.randrange(len(words) + 1), rng.choice(fillers))
            src["listener_reply"] = " ".join(words)
            if rng.random() < 0.5:
                src["emotion"] = rng.choices(labels, weights)[0]
            rows.append(src)
            near += 1
            continue
        emotion = rng.choices(labels, weights)[0]
        speaker, reply = rng.choice(turns)
        rows.append(
            {
                "emotion": emotion,
                "situation": rng.choice(prompts),
                "speaker_utterance": f"{rng.choice(by_label[emotion])} {speaker}",
                "listener_reply": reply,
                "language": "en",
                "domain": "bench",
            }
        )
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return {"rows": n, "near_duplicates_planted": near, "bytes": path.stat().st_size}


def run_size(n: int, classifier: str | None) -> dict:
    import polars as pl

    from empathy_dag.curate.filters import CurationPolicy, FilterConfig, curate_partitions
    from empathy_dag.ingest.corpus import dialogues_frame, ingest_files
    from empathy_dag.ingest.records import ValidationLimits
    from empathy_dag.pairs.build import build_preference_pairs
    from empathy_dag.pairs.splits import assign_splits
    from empathy_dag.taxonomy import default_taxonomy

    tax = default_taxonomy()
    out: dict = {"rows": n, "steps": []}

    def step(name, rows, fn):
        t = time.perf_counter()
        value = fn()
        s = time.perf_counter() - t
        out["steps"].append(
            {
                "step": name,
                "rows": rows,
                "seconds": round(s, 2),
                "rows_per_s": round(rows / s) if s else None,
                "peak_rss_mib": round(_peak_rss_mib()),
            }
        )
        print(
            f"  {n:>7} {name:<8} {s:7.2f} s  {rows / s if s else 0:9.0f} rows/s  peak RSS {_peak_rss_mib():.0f} MiB",
            flush=True,
        )
        return value

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        out["corpus"] = build_corpus(n, path)
        # The bench file is larger than the default 20 MB cap at 105k rows; the cap is raised here.
        result = step(
            "ingest", n, lambda: ingest_files([path], taxonomy=tax, limits=ValidationLimits(max_file_mb=1024))
        )
        corpus = result.corpus
        out["ingest_quarantined"] = result.quarantine.height
    dialogues = dialogues_frame(corpus).with_columns(
        pl.lit("corpus").alias("origin"), pl.lit(None, dtype=pl.String).alias("generator")
    )
    frames = {e: dialogues.filter(pl.col("emotion") == e) for e in tax.labels}
    predict = None
    if classifier:
        from empathy_dag.curate.classifier import load_emotion_classifier

        clf = load_emotion_classifier(Path(classifier))
        predict = lambda texts: clf.predict_groups(texts, tax)
    # Every filter on for the bench source (the default policy would let an ingested corpus skip refusal,
    # prompt_echo and emotion consistency).
    policy = CurationPolicy(skip={"bench": ()})
    cur = step(
        "curate",
        dialogues.height,
        lambda: curate_partitions(
            frames, FilterConfig(), policy, predict_groups=predict, sentiment_of=tax.sentiment
        ),
    )
    out["emotion_consistency"] = "on" if classifier else "skipped (no --classifier)"
    out["dropped_per_filter"] = cur.counts_per_filter()
    kept_rows = sum(f.height for f in cur.kept.values())
    splits = step("splits", kept_rows, lambda: {e: assign_splits(f) for e, f in cur.kept.items()})

    def pairs():
        total = 0
        for e in tax.labels:
            o = tax.opposite(e)
            p, _ = build_preference_pairs(splits[e], splits[o], emotion=e, opposite=o, k=3, seed=0)
            total += p.height
        return total

    out["pairs"] = step("pairs", kept_rows, pairs)
    out["total_seconds"] = round(sum(s["seconds"] for s in out["steps"]), 2)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--classifier", default=None, help="emotion_classifier folder (enables consistency)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=1, help="processes per size (for an interval)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(run_size(args.one, args.classifier)))
        return
    if not (DATA / "goemotions" / "train.tsv").exists():
        sys.exit(f"no shared data at {DATA}: set EMPATHY_DAG_SHARED_DATA")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in subprocess.run(
                ["lscpu"], check=False, capture_output=True, text=True
            ).stdout.splitlines()
            if line.startswith("Model name")
        ),
        "?",
    )
    report = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
        "repeats": args.repeats,
        "sizes": [],
    }
    for n in args.sizes:
        for _ in range(args.repeats):
            cmd = [sys.executable, __file__, "--one", str(n)] + (
                ["--classifier", args.classifier] if args.classifier else []
            )
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
            sys.stdout.write(proc.stdout.split("RESULT ")[0])
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            report["sizes"].append(json.loads(proc.stdout.split("RESULT ", 1)[1]))
    report["load_after"] = os.getloadavg()
    report["table"] = markdown(report)
    print(report["table"])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval over repeats (a single repeat has no interval: nan)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def markdown(report: dict) -> str:
    by: dict[tuple[int, str], list[dict]] = {}
    totals: dict[int, list[float]] = {}
    for run in report["sizes"]:
        totals.setdefault(run["rows"], []).append(run["total_seconds"])
        for st in run["steps"]:
            by.setdefault((run["rows"], st["step"]), []).append(st)
    lines = [
        "| rows | step | n | seconds (mean [95% CI]) | rows/s | peak RSS MiB (max) |",
        "|---:|---|---:|---|---:|---:|",
    ]
    for (rows, step), runs in by.items():
        mean, low, high = _mean_ci([r["seconds"] for r in runs])
        rate = runs[0]["rows"] / mean if mean else 0
        lines.append(
            f"| {rows} | {step} | {len(runs)} | {mean:.2f} [{low:.2f}, {high:.2f}] | {rate:,.0f} | "
            f"{max(r['peak_rss_mib'] for r in runs)} |"
        )
    for rows, values in totals.items():
        mean, low, high = _mean_ci(values)
        lines.append(
            f"| {rows} | **total** | {len(values)} | {mean:.2f} [{low:.2f}, {high:.2f}] | "
            f"{rows / mean:,.0f} | |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
