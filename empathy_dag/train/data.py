"""From frames to trl datasets (conversational format), and content fingerprints of what a run used."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import polars as pl

from empathy_dag.frames import concat_partitions


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


def stable_sample(frame: pl.DataFrame, id_column: str, max_rows: int) -> pl.DataFrame:
    """At most `max_rows` of `frame` (0 = all): those whose sha256(id) sorts first, in their original order.
    The sample is stable: the same rows give the same sample on every machine, and new rows only displace
    members that sort after them."""
    if max_rows <= 0 or frame.height <= max_rows:
        return frame
    ranked = sorted(frame[id_column].to_list(), key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    return frame.filter(pl.col(id_column).is_in(ranked[:max_rows]))


def capped_pairs(pairs: pl.DataFrame, max_pairs: int) -> pl.DataFrame:
    """At most `max_pairs` train pairs (0 = all), a `stable_sample` by pair_id. Quick runs (a few DPO steps)
    use it so that the reference log-probs are computed for the pairs the trainer can reach, not for all."""
    return stable_sample(pairs, "pair_id", max_pairs)


class TrainingDataError(ValueError):
    """The data cannot support the configured run; the message names the emotion partitions and counts."""


def split_counts(frames: dict[str, pl.DataFrame], split: str) -> dict[str, int]:
    """Rows of `split` per emotion partition (every partition given, zeros included)."""
    return {
        e: (df.filter(pl.col("split") == split).height if df.height and "split" in df.columns else 0)
        for e, df in sorted(frames.items())
    }


def describe_counts(counts: dict[str, int]) -> str:
    present = {e: n for e, n in counts.items() if n}
    listed = ", ".join(f"{e} {n}" for e, n in sorted(present.items(), key=lambda kv: (-kv[1], kv[0])))
    empty = len(counts) - len(present)
    return f"{listed or 'none'}" + (
        f"; {empty} partition{'s' if empty != 1 else ''} with none" if empty else ""
    )


def check_training_data(
    asset: str, unit: str, train: dict[str, int], validation: dict[str, int], cfg
) -> None:
    """Refuse, before any model is loaded, a run the data cannot support: an empty train split, fewer train
    items than one optimizer step's batch, more passes over the train split than `cfg.max_epochs` for the
    configured `max_steps`, or an empty validation split (nothing would measure generalisation)."""
    n_train, n_val = sum(train.values()), sum(validation.values())
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    where = f"{len([n for n in train.values() if n])} of {len(train)} emotion partitions"
    if n_train == 0:
        raise TrainingDataError(
            f"{asset}: no train {unit} in any of the {len(train)} emotion partitions given "
            f"(validation: {describe_counts(validation)}): materialize dataset_splits / preference_pairs "
            "for these emotions first"
        )
    if n_train < batch:
        raise TrainingDataError(
            f"{asset}: {n_train} train {unit} in {where} ({describe_counts(train)}) is fewer than one "
            f"optimizer step's batch ({cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} "
            f"accumulation = {batch}): lower per_device_train_batch_size or add data"
        )
    if cfg.max_steps > 0 and (epochs := cfg.max_steps * batch / n_train) > cfg.max_epochs:
        raise TrainingDataError(
            f"{asset}: {n_train} train {unit} in {where} ({describe_counts(train)}) is too few for "
            f"max_steps={cfg.max_steps} x batch {batch} = {cfg.max_steps * batch} examples ({epochs:.1f} passes "
            f"over the train split, max_epochs={cfg.max_epochs:g}): lower max_steps, raise max_epochs, or add data"
        )
    if n_val == 0:
        raise TrainingDataError(
            f"{asset}: the validation split is empty in all {len(validation)} emotion partitions (train {unit}: "
            f"{describe_counts(train)}), so nothing would measure held-out loss: raise dataset_splits' "
            "validation_fraction or add situations (splits are drawn per situation)"
        )


def sft_records(dialogues: pl.DataFrame, system_prompt: str | None = None) -> list[dict]:
    """Prompt-completion records: trl computes the loss on the completion (the listener's turn) only."""
    return [
        {
            "prompt": messages(r["speaker_utterance"], system_prompt),
            "completion": [{"role": "assistant", "content": r["listener_reply"]}],
        }
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
    payload = json.dumps(
        [row.get("system_prompt"), row["prompt"], row["chosen"], row["rejected"], max_length]
    )
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
