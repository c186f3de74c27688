"""DPO throughput: plain trl `DPOTrainer` defaults vs the pipeline's DPO, side by side in one run.

Same model (SmolLM2-135M-Instruct, the base_model folder), same pairs (EmPO pairs from the seed
corpus), same LoRA (r=8 on q/v), batch 8, max length 128, one epoch. Each variant runs in its own
process (clean peak memory):

- trl_defaults: `DPOTrainer(model, args=DPOConfig(per_device_train_batch_size=8, max_length=128),
  peft_config=LoraConfig(r=8, q/v))`, everything else trl's default (reference forward every step,
  gradient checkpointing on, bf16 autocast; `use_cpu=True` where there is no GPU, which trl's bf16
  default requires on a CPU).
- pipeline_first: the `reference_logprobs` + `dpo_checkpoint` code path with an empty cache: reference
  log-probs computed once (no grad, batched by length), then `run_dpo` with them in the dataset.
- pipeline_retrain: the same after new pairs were added: old pairs' log-probs come from the cache,
  only the new ones are computed, and DPO trains on old + new.

The "SFT adapter" the pipeline continues from is a freshly initialised LoRA (B = 0), i.e. exactly the
base model trl uses as its reference, so both sides do the same work per pair.

    .venv/bin/python bench/bench_dpo.py [--base-model DIR] [--pairs 48] [--new-pairs 16]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH, MAX_LENGTH, LORA_R, TARGETS = 8, 128, 8, ["q_proj", "v_proj"]


def build_pairs(n_old: int, n_new: int) -> tuple[list[dict], list[dict]]:
    import polars as pl

    from empathy_dag.ingest.corpus import dialogues_frame, ingest_files
    from empathy_dag.pairs.build import build_preference_pairs
    from empathy_dag.pairs.splits import assign_splits
    from empathy_dag.settings import assets_dir
    from empathy_dag.taxonomy import default_taxonomy

    tax = default_taxonomy()
    corpus = ingest_files(sorted((assets_dir() / "seed").glob("*.jsonl")), taxonomy=tax).corpus
    df = assign_splits(dialogues_frame(corpus))
    frames = [
        build_preference_pairs(df, df, emotion=e, opposite=tax.opposite(e), k=3, seed=0, same_split=False)[0]
        for e in tax.labels
    ]
    pairs = pl.concat(frames).sort("pair_id").to_dicts()
    if len(pairs) < n_old + n_new:
        raise SystemExit(f"only {len(pairs)} pairs available")
    return pairs[:n_old], pairs[n_old : n_old + n_new]


def count_tokens(base_dir: Path, pairs: list[dict]) -> int:
    """Non-padding tokens the policy sees per epoch (prompt + chosen, prompt + rejected, truncated)."""
    from transformers import AutoTokenizer

    from empathy_dag.train.data import dpo_record
    from empathy_dag.train.refcache import tokenize_pair

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    total = 0
    for p in pairs:
        t = tokenize_pair(tok, dpo_record(p))
        n = len(t["prompt_ids"])
        total += min(n + len(t["chosen_ids"]), MAX_LENGTH) + min(n + len(t["rejected_ids"]), MAX_LENGTH)
    return total


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def variant_trl_defaults(base_dir: Path, pairs: list[dict], work: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from empathy_dag.train.data import dpo_record

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    args = DPOConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=BATCH,
        max_length=MAX_LENGTH,
        num_train_epochs=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([dpo_record(p) for p in pairs]),
        processing_class=tok,
        peft_config=LoraConfig(r=LORA_R, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"),
    )
    trainer.train()
    return {
        "seconds": time.perf_counter() - start,
        "trained_pairs": len(pairs),
        "ref_computed": len(pairs),
        "settings": {
            "gradient_checkpointing": args.gradient_checkpointing,
            "bf16": args.bf16,
            "learning_rate": args.learning_rate,
            "beta": args.beta,
        },
    }


def _fresh_adapter(base_dir: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if not (out / "adapter_model.safetensors").is_file():
        model = AutoModelForCausalLM.from_pretrained(str(base_dir))
        peft = get_peft_model(
            model, LoraConfig(r=LORA_R, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM")
        )
        peft.save_pretrained(str(out))
    return out


def _pipeline(base_dir: Path, train: list[dict], work: Path, cache_path: Path) -> dict:
    from empathy_dag.models import pick_device
    from empathy_dag.train.config import DPOTrainingConfig
    from empathy_dag.train.data import dpo_record, pair_key
    from empathy_dag.train.refcache import (
        ReferenceLogprobCache,
        cached_reference_logprobs,
        compute_reference_logprobs,
        load_reference_model,
    )
    from empathy_dag.train.trainers import prepare_work_dir, run_dpo

    adapter = _fresh_adapter(base_dir, work / "sft_adapter")
    start = time.perf_counter()
    device = pick_device("auto")
    keys = [pair_key(p, MAX_LENGTH) for p in train]
    records = [dpo_record(p) for p in train]

    def compute(missing):
        model, tok = load_reference_model(base_dir, adapter, device=device)
        return compute_reference_logprobs(
            model, tok, missing, max_length=MAX_LENGTH, batch_size=16, device=device
        )

    frame, stats = cached_reference_logprobs(
        ReferenceLogprobCache(cache_path), "bench-ref", keys, records, compute
    )
    ref_seconds = time.perf_counter() - start
    with_ref = [
        {**r, "ref_chosen_logps": c, "ref_rejected_logps": j}
        for r, c, j in zip(records, frame["ref_chosen_logps"], frame["ref_rejected_logps"])
    ]
    cfg = DPOTrainingConfig(
        per_device_train_batch_size=BATCH,
        max_length=MAX_LENGTH,
        lora_r=LORA_R,
        target_modules=TARGETS,
        num_train_epochs=1,
        save_steps=10_000,
        learning_rate=1e-6,
    )
    run_dpo(
        base_dir,
        adapter,
        with_ref,
        cfg,
        out_dir=work / "dpo_out",
        work_dir=prepare_work_dir(work / "dpo_work", f"n{len(train)}"),
    )
    return {
        "seconds": time.perf_counter() - start,
        "trained_pairs": len(train),
        "ref_computed": stats["computed"],
        "ref_seconds": round(ref_seconds, 2),
        "settings": {
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "bf16": bool(cfg.bf16),
            "reference": "cached log-probs",
        },
    }


def _child(name: str, base_dir: str, pairs: list[dict], work: str, cache_path: str, queue) -> None:
    import torch

    torch.manual_seed(0)
    work_p = Path(work)
    if name == "trl_defaults":
        out = variant_trl_defaults(Path(base_dir), pairs, work_p)
    else:
        out = _pipeline(Path(base_dir), pairs, work_p, Path(cache_path))
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    queue.put(out)


def run_variant(name: str, base_dir: Path, pairs: list[dict], work: Path, cache_path: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, str(base_dir), pairs, str(work), str(cache_path), queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-model", type=Path, default=None, help="base_model folder (default: convert)")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--new-pairs", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench_dpo_"))
    base_dir = args.base_model
    if base_dir is None:
        from empathy_dag.models import convert_gguf_to_safetensors, embedded_smollm2_gguf

        base_dir = work / "base_model"
        convert_gguf_to_safetensors(embedded_smollm2_gguf(), base_dir)
    old, new = build_pairs(args.pairs, args.new_pairs)
    cache = work / "ref_cache.parquet"
    tokens = {"old": count_tokens(base_dir, old), "all": count_tokens(base_dir, old + new)}

    results = {}
    for name, pairs, tok_key in (
        ("trl_defaults", old, "old"),
        ("pipeline_first", old, "old"),
        ("pipeline_retrain", old + new, "all"),
    ):
        r = run_variant(name, base_dir, pairs, work / name, cache)
        r["pairs_per_s"] = r["trained_pairs"] / r["seconds"]
        r["tokens_per_s"] = tokens[tok_key] / r["seconds"]
        results[name] = r
        print(
            f"{name:18s} {r['trained_pairs']:4d} pairs {r['seconds']:7.1f}s  {r['pairs_per_s']:.3f} pairs/s  "
            f"{r['tokens_per_s']:.0f} tok/s  peak RSS {r['peak_rss_mb']:.0f} MB  ref computed {r['ref_computed']}",
            flush=True,
        )
    base = results["trl_defaults"]["pairs_per_s"]
    for name in ("pipeline_first", "pipeline_retrain"):
        results[name]["ratio_vs_trl"] = results[name]["pairs_per_s"] / base
        print(f"{name}: {results[name]['ratio_vs_trl']:.2f}x trl defaults pairs/s")
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor(),
        "cores": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "batch": BATCH,
        "max_length": MAX_LENGTH,
        "lora": f"r={LORA_R} {TARGETS}",
        "pairs_old": len(old),
        "pairs_new": len(new),
    }
    print(json.dumps(meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
