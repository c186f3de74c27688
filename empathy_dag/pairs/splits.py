"""Train / validation / test splits that never move.

A dialogue's split is a pure function of its `situation_id` (a content hash): the id is hashed with a
salt into a number in [0, 1) and the fractions cut that interval into buckets. So

- every dialogue of a situation lands in the same split (no situation leaks across splits);
- adding data never moves an old row, and the test set stays comparable across retrains;
- splits are stratified by emotion in expectation: the buckets are applied inside each emotion
  partition and the hash is independent of the emotion, so each emotion gets the configured
  fractions up to sampling noise. Exact per-emotion proportions would need a rank-based cut, which
  moves rows whenever data is added; stability wins.

Changing the fractions or the salt does move rows: that is a new split definition (code version).

A minimum test size per emotion (`min_test_dialogues`): with ~10 situations per emotion, a 10% hash cut
leaves several emotions with no test item at all, and a scorecard that cannot see an emotion cannot
say anything about it. When an emotion's natural test region holds fewer complete dialogues than the
minimum, the train situations with the highest buckets (the nearest to the validation and test
regions) are added to test until the minimum is met; validation is never taken (the trainers' held-out
measurements need it). Rows in the natural test region never
move; a topped-up row moves back only if a new situation of the same emotion ranks above it, which
stops happening once the emotion has enough data of its own (`top_up` marks these rows)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitFractions:
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    salt: str = "empathy-dag-splits-v1"

    def __post_init__(self):
        values = (self.train, self.validation, self.test)
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-9:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {values}")


def split_bucket(situation_id: str, salt: str) -> float:
    """A number in [0, 1), uniform over ids, the same on every machine and Python version."""
    digest = hashlib.sha256(f"{salt}\x1f{situation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(situation_id: str, fractions: SplitFractions = SplitFractions()) -> str:
    bucket = split_bucket(situation_id, fractions.salt)
    if bucket < fractions.train:
        return "train"
    if bucket < fractions.train + fractions.validation:
        return "validation"
    return "test"


def assign_splits(
    frame: pl.DataFrame, fractions: SplitFractions = SplitFractions(), min_test_dialogues: int = 0
) -> pl.DataFrame:
    """The frame with a `split` column (and the `split_bucket` it came from, and `top_up`: moved into
    test to reach `min_test_dialogues` complete dialogues), rows in id order. Apply it to one emotion
    at a time (the minimum is per emotion)."""
    ids = frame["situation_id"].to_list()
    out = frame.with_columns(
        pl.Series("split", [split_of(s, fractions) for s in ids], dtype=pl.String),
        pl.Series("split_bucket", [split_bucket(s, fractions.salt) for s in ids], dtype=pl.Float64),
        pl.lit(False).alias("top_up"),
    )
    if min_test_dialogues > 0 and out.height:
        complete = (
            pl.col("speaker_utterance").is_not_null() & pl.col("listener_reply").is_not_null()
            if {"speaker_utterance", "listener_reply"} <= set(out.columns)
            else pl.lit(True)
        )
        have = out.filter((pl.col("split") == "test") & complete).height
        if have < min_test_dialogues:
            candidates = (
                out.filter((pl.col("split") == "train") & complete)
                .group_by("situation_id")
                .agg(pl.col("split_bucket").first(), pl.len().alias("dialogues"))
                .sort(["split_bucket", "situation_id"], descending=[True, False])
            )
            chosen = []
            for sid, _, dialogues in candidates.iter_rows():
                if have >= min_test_dialogues:
                    break
                chosen.append(sid)
                have += dialogues
            moved = pl.col("situation_id").is_in(chosen)
            out = out.with_columns(
                pl.when(moved).then(pl.lit("test")).otherwise(pl.col("split")).alias("split"),
                moved.alias("top_up"),
            )
    return out.sort("dialogue_id")


def split_counts(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per emotion: dialogues and situations per split (for the UI)."""
    rows = []
    for emotion, df in frames.items():
        row = {"emotion": emotion}
        for s in SPLITS:
            part = df.filter(pl.col("split") == s) if df.height else df
            row[s] = part.height
            row[f"{s}_situations"] = part["situation_id"].n_unique() if part.height else 0
        rows.append(row)
    return pl.DataFrame(rows)
