"""From frames to trl datasets (conversational format), and content fingerprints of what a run used."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import polars as pl

from empathy_dag.io_managers import concat_partitions


def messages(prompt: str, system_prompt: str | None = None) -> list[dict]:
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return turns + [{"role": "user", "content": prompt}]


def concat_frames(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Every emotion's frame in emotion-name order (training data does not depend on dict order)."""
    return concat_partitions(dict(sorted(frames.items())))


def train_dialogues(frames: dict[str, pl.DataFrame], split: str = "train") -> pl.DataFrame:
    df = concat_frames(frames)
    return df.filter(pl.col("split") == split).sort("dialogue_id") if df.height else df


def train_pairs(frames: dict[str, pl.DataFrame], split: str = "train") -> pl.DataFrame:
    df = concat_frames(frames)
    return df.filter(pl.col("split") == split).sort("pair_id") if df.height else df


def capped_pairs(pairs: pl.DataFrame, max_pairs: int) -> pl.DataFrame:
    """At most `max_pairs` of `pairs` (0 = all): those whose sha256(pair_id) sorts first, in their original
    order. The sample is stable: the same pairs give the same sample on every machine, and new pairs only
    displace members that sort after them. Quick runs (a few DPO steps) use it so that the reference
    log-probs are computed for the pairs the trainer can reach, not for all of them."""
    if max_pairs <= 0 or pairs.height <= max_pairs:
        return pairs
    ranked = sorted(pairs["pair_id"].to_list(), key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    return pairs.filter(pl.col("pair_id").is_in(ranked[:max_pairs]))


def sft_records(dialogues: pl.DataFrame, system_prompt: str | None = None) -> list[dict]:
    """Prompt-completion records: trl computes the loss on the completion (the listener's turn) only."""
    return [
        {"prompt": messages(r["speaker_utterance"], system_prompt),
         "completion": [{"role": "assistant", "content": r["listener_reply"]}]}
        for r in dialogues.iter_rows(named=True)
    ]


def dpo_record(row: dict) -> dict:
    return {
        "prompt": messages(row["prompt"], row.get("system_prompt")),
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    }


def pair_key(row: dict, max_length: int) -> str:
    """What a pair's reference log-probs depend on besides the reference weights: the rendered texts
    and the truncation length."""
    payload = json.dumps([row.get("system_prompt"), row["prompt"], row["chosen"], row["rejected"], max_length])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def frame_fingerprint(frame: pl.DataFrame, id_column: str, columns: Iterable[str]) -> str:
    """Content hash of a frame, independent of row order."""
    h = hashlib.sha256()
    if frame.height:
        cols = [id_column, *[c for c in columns if c in frame.columns and c != id_column]]
        for row in frame.sort(id_column).select(cols).iter_rows():
            h.update("\x1f".join("" if v is None else str(v) for v in row).encode() + b"\x1e")
    return h.hexdigest()


def partition_fingerprints(frames: dict[str, pl.DataFrame], id_column: str, columns: Iterable[str]) -> dict:
    cols = list(columns)
    return {e: frame_fingerprint(df, id_column, cols)[:16] for e, df in sorted(frames.items()) if df.height}


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
