"""Reference log-probabilities of DPO pairs, computed once and kept.

With LoRA, the DPO reference is the SFT policy with frozen weights, so a pair's reference
log-probs depend only on (reference weights, pair texts, truncation length). trl can precompute them
for one run but keeps them in a datasets cache tied to that run; here they live in a Parquet file keyed
by (reference sha256, pair key), so a retraining after new pairs arrive computes only the new ones.

The numbers are computed exactly as trl's `DPOTrainer.compute_ref_log_probs` does (same
tokenization, same collator and truncation, trl's fused LM head), so they can replace it."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import polars as pl

from empathy_dag.models import hub_offline_by_default, torch_dtype

CACHE_SCHEMA = {
    "ref_sha256": pl.String,
    "pair_key": pl.String,
    "ref_chosen_logps": pl.Float64,
    "ref_rejected_logps": pl.Float64,
}


def tokenize_pair(tokenizer, record: dict) -> dict:
    """prompt_ids / chosen_ids / rejected_ids as trl's DPOTrainer tokenizes a conversational pair."""
    from trl.data_utils import _tokenize, common_prefix_length

    prompt_ids = _tokenize(tokenizer, record["prompt"], add_generation_prompt=True)["input_ids"]
    chosen_ids = _tokenize(tokenizer, record["prompt"] + record["chosen"])["input_ids"]
    rejected_ids = _tokenize(tokenizer, record["prompt"] + record["rejected"])["input_ids"]
    n = min(common_prefix_length(prompt_ids, chosen_ids), common_prefix_length(prompt_ids, rejected_ids))
    return {"prompt_ids": prompt_ids[:n], "chosen_ids": chosen_ids[n:], "rejected_ids": rejected_ids[n:]}


def load_reference_model(
    base_dir: Path, adapter_dir: Path | None, device: str = "cpu", dtype: str = "float32"
):
    """The frozen reference policy (base + SFT adapter), with trl's fused LM head, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    hub_offline_by_default()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        str(base_dir), dtype=torch_dtype(dtype), use_safetensors=True
    )
    add_fused_lm_head(model)  # before PEFT wraps it, as trl does
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.to(device).eval()
    return model, tokenizer


def compute_reference_logprobs(
    model, tokenizer, records: list[dict], *, max_length: int, batch_size: int = 16, device: str = "cpu"
) -> tuple[list[float], list[float]]:
    """Summed completion log-probs of chosen and rejected under `model`, in the order of `records`.
    Pairs are batched by length (less padding); padding does not change the sums."""
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    tokenized = [tokenize_pair(tokenizer, r) for r in records]
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=max_length)
    order = sorted(
        range(len(tokenized)),
        key=lambda i: (
            len(tokenized[i]["prompt_ids"])
            + max(len(tokenized[i]["chosen_ids"]), len(tokenized[i]["rejected_ids"]))
        ),
    )
    chosen = [0.0] * len(records)
    rejected = [0.0] * len(records)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collator([tokenized[i] for i in idx])
            mask = batch["completion_mask"]
            labels = batch["input_ids"].masked_fill(mask == 0, -100)
            out = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                labels=labels.to(device),
                fused_lm_head=True,
                use_cache=False,
            )
            per_token = out.log_probs[:, -(mask.size(1) - 1) :]
            sums = per_token.sum(dim=1).float().cpu().tolist()
            half = len(idx)
            for j, i in enumerate(idx):
                chosen[i], rejected[i] = sums[j], sums[half + j]
    return chosen, rejected


class ReferenceLogprobCache:
    """A Parquet file of (ref_sha256, pair_key) -> log-probs, written atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> pl.DataFrame:
        if self.path.is_file():
            return pl.read_parquet(self.path)
        return pl.DataFrame(schema=CACHE_SCHEMA)

    def lookup(self, ref_sha256: str, keys: list[str]) -> pl.DataFrame:
        cached = self.read()
        return cached.filter((pl.col("ref_sha256") == ref_sha256) & pl.col("pair_key").is_in(keys))

    def add(self, rows: pl.DataFrame) -> None:
        merged = pl.concat([self.read(), rows.select(list(CACHE_SCHEMA)).cast(CACHE_SCHEMA)])
        merged = merged.unique(subset=["ref_sha256", "pair_key"], keep="last").sort("ref_sha256", "pair_key")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        merged.write_parquet(tmp)
        os.replace(tmp, self.path)


def cached_reference_logprobs(
    cache: ReferenceLogprobCache, ref_sha256: str, keys: list[str], records: list[dict], compute
) -> tuple[pl.DataFrame, dict]:
    """Log-probs for every key (same order), computing only keys the cache lacks.
    `compute(records) -> (chosen, rejected)` runs the reference model."""
    unique_keys = list(dict.fromkeys(keys))
    record_of = dict(zip(keys, records))
    hit = cache.lookup(ref_sha256, unique_keys)
    missing = [k for k in unique_keys if k not in set(hit["pair_key"].to_list())]
    start = time.perf_counter()
    if missing:
        chosen, rejected = compute([record_of[k] for k in missing])
        fresh = pl.DataFrame(
            {
                "ref_sha256": [ref_sha256] * len(missing),
                "pair_key": missing,
                "ref_chosen_logps": chosen,
                "ref_rejected_logps": rejected,
            },
            schema=CACHE_SCHEMA,
        )
        cache.add(fresh)
        hit = pl.concat([hit, fresh])
    by_key = {r["pair_key"]: r for r in hit.iter_rows(named=True)}
    frame = pl.DataFrame([by_key[k] for k in keys], schema=CACHE_SCHEMA)
    stats = {
        "pairs": len(keys),
        "cached": len(unique_keys) - len(missing),
        "computed": len(missing),
        "compute_seconds": round(time.perf_counter() - start, 2),
    }
    return frame, stats
