"""Evaluation items: one row per (system, item) with the prompt side (situation, speaker turn), the
reference reply and the system's prediction. Pipeline generations and external predictions share
this schema, so every metric scores both side by side.

External predictions (CSV or JSONL) need the columns `prediction`, `reference`, `emotion`, `system`,
and one of `context` / `prompt` / `speaker_utterance` (the speaker's turn); `situation`, `language`
and `item_id` are optional. Emotions are normalized with the taxonomy (EmpatheticDialogues labels
map onto GoEmotions ones); rows with an unknown emotion keep it lower-cased so they are still
scored, and are counted in the metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from empathy_dag.evaluate.metrics.text import guess_language
from empathy_dag.taxonomy import Taxonomy

ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String,
    "system": pl.String,
    "origin": pl.String,  # "pipeline" (test_generations) or "external"
    "emotion": pl.String,
    "language": pl.String,
    "situation": pl.String,
    "speaker_utterance": pl.String,
    "reference": pl.String,
    "prediction": pl.String,
}

CONTEXT_COLUMNS = ("context", "prompt", "speaker_utterance")
REQUIRED = ("prediction", "reference", "emotion", "system")


def item_id(emotion: str, speaker_utterance: str, reference: str) -> str:
    """The same prompt and reference get the same id whichever system answered: items line up."""
    key = json.dumps([emotion, speaker_utterance or "", reference or ""], ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=ITEM_SCHEMA)


def _read_table(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return pl.read_ndjson(path, infer_schema_length=None)
    if suffix in (".csv", ".tsv"):
        return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=0)
    raise ValueError(f"{path}: external predictions must be .csv, .tsv or .jsonl")


def read_external_predictions(path: str | Path, taxonomy: Taxonomy) -> tuple[pl.DataFrame, dict]:
    """Items from one file, plus counts for the metadata (rows, unknown emotions)."""
    path = Path(path)
    raw = _read_table(path)
    raw = raw.rename({c: c.strip().lower() for c in raw.columns})
    missing = [c for c in REQUIRED if c not in raw.columns]
    context_col = next((c for c in CONTEXT_COLUMNS if c in raw.columns), None)
    if missing or context_col is None:
        raise ValueError(f"{path}: missing columns {missing + ([] if context_col else ['context|prompt'])}; "
                         f"has {raw.columns}")
    rows, unknown = [], 0
    for rec in raw.iter_rows(named=True):
        label = taxonomy.normalize_label(str(rec["emotion"] or ""))
        if label is None:
            unknown += 1
            label = str(rec["emotion"] or "").strip().lower()
        speaker = str(rec[context_col] or "")
        reference = str(rec["reference"] or "")
        rows.append({
            "item_id": str(rec.get("item_id") or item_id(label, speaker, reference)),
            "system": str(rec["system"]).strip(),
            "origin": "external",
            "emotion": label,
            "language": str(rec.get("language") or guess_language(speaker + reference)),
            "situation": str(rec.get("situation") or ""),
            "speaker_utterance": speaker,
            "reference": reference,
            "prediction": str(rec["prediction"] or ""),
        })
    frame = pl.DataFrame(rows, schema=ITEM_SCHEMA) if rows else empty_items()
    return frame, {"file": str(path), "rows": frame.height, "unknown_emotions": unknown}
