"""The judge's digit-probability scoring (`metric_judge`, judge_scoring="probabilities") on the
embedded SmolLM2-135M, three ways on the same prompts, interleaved in one process (order rotated per
round), paired ratios with a t interval:
- full_logits: length-sorted batches, the LM head on every position (before issue 23);
- last_logits: the same batches, `logits_to_keep=1` (what a GPU run uses);
- shared_prefix_per_item: the dimensions of one item share their prompt prefix's KV cache (what a CPU
  run uses, `digit_probabilities(groups=...)`).

    .venv/bin/python bench/bench_judge.py --items 20 --rounds 3

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
    import torch
    from _hardware import cpu_info
    from _stats import t_interval

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

    def full_logits(batch_size: int) -> list:
        # before issue 23: length-sorted batches, logits at every position (LM head on every token)
        digits = [tokenizer.encode(d, add_special_tokens=False)[0] for d in "12345"]
        prompts = [
            tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs
        ]
        order = sorted(
            range(len(prompts)),
            key=lambda i: -len(tokenizer(prompts[i], add_special_tokens=False)["input_ids"]),
        )
        out = [None] * len(prompts)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            enc = tokenizer(
                [prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
            )
            with torch.no_grad():
                logits = model(**enc).logits[:, -1, :]
            for i, probs in zip(batch, torch.softmax(logits[:, digits].float(), -1).tolist()):
                out[i] = probs
        tokenizer.padding_side = side
        return out

    groups = [i // len(rubric.dimensions) for i in range(len(convs))]  # the dimensions of one item
    arms = {
        f"full_logits_batch_{args.batch_size}": lambda: full_logits(args.batch_size),
        f"last_logits_batch_{args.batch_size}": lambda: digit_probabilities(
            model, tokenizer, convs, batch_size=args.batch_size
        ),
        "shared_prefix_per_item": lambda: digit_probabilities(model, tokenizer, convs, groups=groups),
    }
    digit_probabilities(model, tokenizer, convs[:8], batch_size=8)  # warm-up
    times = {name: [] for name in arms}
    results = {}
    for round_no in range(args.rounds):
        names = list(arms)
        names = names[round_no % len(names) :] + names[: round_no % len(names)]  # rotate the order
        for name in names:
            start = time.perf_counter()
            results[name] = arms[name]()
            times[name].append(time.perf_counter() - start)
    reference = f"full_logits_batch_{args.batch_size}"
    speedups = {}
    for name in arms:
        if name == reference:
            continue
        ratios = [o / n for o, n in zip(times[reference], times[name])]
        low, high = t_interval(ratios) if len(ratios) > 1 else (None, None)
        speedups[name] = {
            "mean": round(statistics.mean(ratios), 3),
            "ci95": [round(low, 3), round(high, 3)] if low is not None else None,
            "per_round": [round(r, 3) for r in ratios],
        }
    max_diff = {
        name: max(abs(a - b) for pa, pb in zip(results[reference], results[name]) for a, b in zip(pa, pb))
        for name in arms
        if name != reference
    }
    rendered = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs]
    tokens = sum(len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"])
    out = {
        "prompts": len(convs),
        "items": df.height,
        "prompt_tokens": tokens,
        "rounds": args.rounds,
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "prompts_per_s": {k: round(len(convs) / statistics.median(v), 2) for k, v in times.items()},
        "speedup_vs_full_logits_paired": speedups,
        "max_probability_difference_vs_full_logits": max_diff,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "hardware_before": hardware_before,
        "hardware_after": cpu_info(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
