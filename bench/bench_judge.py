"""The judge's digit-probability scoring (`metric_judge`, judge_scoring="probabilities") on the
embedded SmolLM2-135M: the previous way (batches of 8 in input order) against the current one
(length-sorted batches of `--batch-size`), alternating in one process on the same prompts, and the
time that implies for a human-evaluation-sized set (675 texts x 3 dimensions = 2,025 prompts).

    .venv/bin/python bench/bench_judge.py --items 64 --rounds 3

Prompts are the rubric's three dimensions over real EmpatheticDialogues turns (../shared/data), the
reply being the listener's own turn."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import polars as pl
    from _hardware import cpu_info
    from scipy import stats

    from empathy_dag.evaluate.metrics.judge import digit_probabilities, load_rubric
    from empathy_dag.models import convert_gguf_to_safetensors, embedded_smollm2_gguf, load_causal_lm
    from empathy_dag.settings import shared_data_dir

    hardware_before = cpu_info()
    path = shared_data_dir() / "empathetic_dialogues" / "utterance_pairs_valid.csv"
    df = pl.read_csv(path, infer_schema_length=0).filter(pl.col("level") == "1").head(args.items)
    df = df.with_columns(pl.col(c).str.replace_all("_comma_", ",") for c in ("sp1", "sp2", "prompt"))
    rubric = load_rubric()
    convs = [
        rubric.conversation(
            dim, emotion=r["context"], situation=r["prompt"], speaker_utterance=r["sp1"], response=r["sp2"]
        )
        for r in df.iter_rows(named=True)
        for dim in rubric.dimensions
    ]
    model_dir = Path(tempfile.mkdtemp(prefix="bench_judge_")) / "base_model"
    convert_gguf_to_safetensors(embedded_smollm2_gguf(), model_dir)
    model, tokenizer = load_causal_lm(str(model_dir), device="cpu")

    def unsorted_batches(batch_size: int) -> list:
        # the previous implementation: input order, fixed batches
        out = []
        for start in range(0, len(convs), batch_size):
            out.extend(
                digit_probabilities(
                    model, tokenizer, convs[start : start + batch_size], batch_size=batch_size
                )
            )
        return out

    digit_probabilities(model, tokenizer, convs[:8], batch_size=8)  # warm-up
    times = {"input_order_batch_8": [], f"length_sorted_batch_{args.batch_size}": []}
    results = {}
    for _ in range(args.rounds):
        for name, fn in (
            ("input_order_batch_8", lambda: unsorted_batches(8)),
            (
                f"length_sorted_batch_{args.batch_size}",
                lambda: digit_probabilities(model, tokenizer, convs, batch_size=args.batch_size),
            ),
        ):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    old, new = times["input_order_batch_8"], times[f"length_sorted_batch_{args.batch_size}"]
    ratios = [o / n for o, n in zip(old, new)]
    max_diff = max(abs(a - b) for pa, pb in zip(*results.values()) for a, b in zip(pa, pb))
    per_prompt = statistics.median(new) / len(convs)
    out = {
        "prompts": len(convs),
        "items": df.height,
        "rounds": args.rounds,
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "prompts_per_s": {k: round(len(convs) / statistics.median(v), 2) for k, v in times.items()},
        "speedup_median": round(statistics.median(ratios), 3),
        "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "wilcoxon_p_old_slower": (
            float(stats.wilcoxon(old, new, alternative="greater").pvalue) if args.rounds >= 5 else None
        ),
        "max_probability_difference": max_diff,
        "estimated_seconds_for_2025_prompts": round(per_prompt * 2025, 1),
        "hardware_before": hardware_before,
        "hardware_after": cpu_info(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
