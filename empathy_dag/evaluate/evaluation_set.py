"""The held-out evaluation set: what every system is scored on.

Items come from the test split of the pipeline's own dialogues (`dataset_splits`, whose per-emotion
minimum makes every emotion present) and, optionally, from external test files in any format ingest
reads (this project's JSONL/CSV, raw EmpatheticDialogues CSVs, EmPO's utterance-pair or conversation
CSVs; labels mapped onto the 28 GoEmotions ones). An item's id is a content hash of (emotion, speaker
turn, reference), so the same dialogue keeps its id across runs, adding data never reshuffles old
items, and every system's reply to it lines up for the paired tests.

`max_items_per_emotion` takes, per emotion, the items with the smallest ids (a hash order: a stable,
unbiased sample that does not change when other items are added above the cut)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from empathy_dag.evaluate.items import item_id
from empathy_dag.ingest.corpus import validate_bytes
from empathy_dag.ingest.records import ValidationLimits

EVALUATION_SET_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String,
    "emotion": pl.String,
    "language": pl.String,
    "situation": pl.String,
    "speaker_utterance": pl.String,
    "reference": pl.String,
    "source": pl.String,
    "origin": pl.String,  # "test_split" or "external_test_file"
    "source_dialogue_id": pl.String,
}


def empty_evaluation_set() -> pl.DataFrame:
    return pl.DataFrame(schema=EVALUATION_SET_SCHEMA)


def from_test_split(splits: pl.DataFrame) -> pl.DataFrame:
    """Complete test dialogues of one emotion's splits as evaluation items."""
    if not splits.height:
        return empty_evaluation_set()
    test = splits.filter(
        (pl.col("split") == "test")
        & pl.col("speaker_utterance").is_not_null()
        & pl.col("listener_reply").is_not_null()
    )
    return _items(test, origin="test_split")


def _items(frame: pl.DataFrame, origin: str) -> pl.DataFrame:
    if not frame.height:
        return empty_evaluation_set()
    ids = [
        item_id(e, s, r)
        for e, s, r in frame.select("emotion", "speaker_utterance", "listener_reply").iter_rows()
    ]
    return frame.select(
        pl.Series("item_id", ids, dtype=pl.String),
        "emotion",
        pl.col("language").fill_null("en"),
        pl.col("situation").fill_null(""),
        "speaker_utterance",
        pl.col("listener_reply").alias("reference"),
        pl.col("source").cast(pl.String) if "source" in frame.columns else pl.lit(origin).alias("source"),
        pl.lit(origin).alias("origin"),
        pl.col("dialogue_id").cast(pl.String).alias("source_dialogue_id")
        if "dialogue_id" in frame.columns
        else pl.lit(None, dtype=pl.String).alias("source_dialogue_id"),
    ).cast(EVALUATION_SET_SCHEMA)


def read_external_test_file(path: str | Path, taxonomy) -> tuple[pl.DataFrame, dict]:
    """Complete dialogues of one external test file, read and validated by ingest's own readers (so a
    bad row is counted, with its reason, instead of failing the set)."""

    path = Path(path)
    outcome = validate_bytes(path.read_bytes(), str(path), taxonomy=taxonomy, limits=ValidationLimits())
    rows = [r.as_dict() for r in outcome.records if r.speaker_utterance and r.listener_reply]
    frame = pl.DataFrame(rows) if rows else pl.DataFrame()
    items = _items(frame, origin="external_test_file") if frame.height else empty_evaluation_set()
    reasons: dict[str, int] = {}
    for q in outcome.quarantined:
        reasons[q.reason_code] = reasons.get(q.reason_code, 0) + 1
    return items, {
        "file": str(path),
        "items": items.height,
        "rows_in": outcome.rows_in,
        "without_dialogue": len(outcome.records) - len(rows),
        "rejected": reasons,
    }


def build_evaluation_set(parts: list[pl.DataFrame], max_items_per_emotion: int = 0) -> pl.DataFrame:
    """One emotion's items from all sources: one row per item id (the test split wins over an external
    file holding the same dialogue), ordered by id, capped per emotion by a hash order."""
    parts = [p for p in parts if p.height]
    if not parts:
        return empty_evaluation_set()
    items = pl.concat(parts).unique(subset=["item_id"], keep="first", maintain_order=True).sort("item_id")
    return items.head(max_items_per_emotion) if max_items_per_emotion else items


def coverage(frames: dict[str, pl.DataFrame], min_items: int) -> dict:
    """Items per emotion / source / language, and which emotions have fewer than `min_items`."""
    per_emotion = {e: f.height for e, f in frames.items()}
    allitems = (
        pl.concat([f for f in frames.values() if f.height])
        if any(f.height for f in frames.values())
        else empty_evaluation_set()
    )
    count = lambda col: dict(allitems.group_by(col).len().sort(col).iter_rows()) if allitems.height else {}
    return {
        "items": allitems.height,
        "per_emotion": per_emotion,
        "per_source": count("source"),
        "per_language": count("language"),
        "per_origin": count("origin"),
        "below_minimum": {e: n for e, n in per_emotion.items() if n < min_items},
    }
