"""How many training pairs a checkpoint has not seen. Pure functions over the `preference_pairs` Parquet
files (one per emotion, column `pair_id`, column `split`; only `split == "train"` rows train a model).

Contract with the training stage: the `dpo_checkpoint` materialization records
- `n_train_pairs`: how many train pairs it was trained on, and
- `pairs_fingerprint`: `train_pairs_fingerprint(pair_ids)` over those pairs' ids.
The fingerprint says whether anything changed; the count difference says how much was added."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl

PAIRS_ASSET = "preference_pairs"


def train_pairs_fingerprint(pair_ids: Iterable[str]) -> str:
    """Order-free version of a set of train pairs (sha256 over the sorted ids)."""
    h = hashlib.sha256()
    for pid in sorted(set(pair_ids)):
        h.update(pid.encode())
        h.update(b"\n")
    return h.hexdigest()


def train_pairs_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("split") == "train") if "split" in frame.columns else frame


def read_train_pair_ids(parquet_base_dir: str | Path) -> list[str]:
    """Train pair ids currently in the preference_pairs Parquet files (any emotion)."""
    folder = Path(parquet_base_dir) / PAIRS_ASSET
    files = (
        sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []
    )
    ids: list[str] = []
    for path in files:
        frame = pl.read_parquet(path, columns=None)
        if "pair_id" not in frame.columns:
            raise ValueError(f"{path} has no pair_id column")
        ids.extend(train_pairs_frame(frame)["pair_id"].to_list())
    return ids


def count_unseen_train_pairs(
    current_ids: list[str], checkpoint_metadata: Mapping[str, object]
) -> tuple[int, str]:
    """(new train pairs, fingerprint of the current ones).

    No checkpoint metadata: every pair is new. Same fingerprint: none. Otherwise the growth in count;
    pairs replaced without growth count as 1 (the set changed, by how much is unknown from a count
    and a hash), so small edits never reach the threshold alone."""
    fingerprint = train_pairs_fingerprint(current_ids)
    n_current = len(set(current_ids))
    seen_fp = checkpoint_metadata.get("pairs_fingerprint")
    seen_n = checkpoint_metadata.get("n_train_pairs")
    if seen_fp is None and seen_n is None:
        return n_current, fingerprint
    if seen_fp == fingerprint:
        return 0, fingerprint
    growth = n_current - int(seen_n or 0)
    return max(growth, 1), fingerprint
