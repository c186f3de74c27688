"""Evaluation items: one row per (system, item) with the prompt side (situation, earlier turns,
speaker turn), the reference reply and the system's prediction. Pipeline generations and external
predictions share this schema, so every metric scores both side by side.

External predictions (CSV, TSV, any separator, or JSONL), one `ExternalPredictionSpec` per file:
- the fields are `prediction`, `reference`, `emotion`, `system`, `speaker_utterance` (the speaker's
  turn; `context` / `prompt` are accepted names for it), and optionally `situation`, `language`,
  `item_id`, `history` (earlier turns); `columns` maps a field to the file's column name;
- `system` names the system of the whole file (one file = one system; no system column needed);
- `history` is a JSON list of turns or one string split on `history_separator`; without a speaker
  column, the last turn of the history is the speaker's turn;
- `item_id_column` takes the ids from the file (to join human ratings keyed by the user's ids).

Item id rule, when the file gives none: `item_id(emotion, speaker_utterance, reference, history)` =
the first 16 hex digits of sha256 of the JSON list `[emotion, speaker_utterance, reference]`
(`ensure_ascii=False`, emotion after taxonomy normalization), with the history (turns joined by a
newline) appended to the list only when there is one. The same prompt and reference get the same id
whichever system answered, so systems line up; a user computes it with `item_id`.

Emotions are normalized with the taxonomy (EmpatheticDialogues labels map onto GoEmotions ones);
rows with an unknown emotion keep it lower-cased so they are still scored, and are counted."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
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
    "history": pl.String,  # earlier turns, one a line; "" for a two-turn dialogue
}

CONTEXT_COLUMNS = ("speaker_utterance", "context", "prompt")
FIELDS = (
    "prediction",
    "reference",
    "emotion",
    "system",
    "speaker_utterance",
    "situation",
    "language",
    "item_id",
    "history",
)


def item_id(emotion: str, speaker_utterance: str, reference: str, history: str = "") -> str:
    """The same prompt and reference get the same id whichever system answered: items line up. The
    history enters the key only when there is one, so two-turn items keep the ids they always had."""
    parts = [emotion, speaker_utterance or "", reference or ""] + ([history] if history else [])
    key = json.dumps(parts, ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=ITEM_SCHEMA)


def with_history_column(frame: pl.DataFrame) -> pl.DataFrame:
    """Frames written before items had a history (two-turn items) get an empty one."""
    return (
        frame
        if "history" in frame.columns
        else frame.with_columns(pl.lit("", dtype=pl.String).alias("history"))
    )


def dialogue_text(speaker_utterance: str, history: str | None) -> str:
    """The speaker side as a judge or a namer reads it: the earlier turns, then the speaker's turn."""
    if not history:
        return speaker_utterance or ""
    return f"(earlier turns)\n{history}\n(last turn) {speaker_utterance or ''}"


@dataclass(frozen=True)
class ExternalPredictionSpec:
    """How to read one prediction file without editing it (see the module docstring)."""

    path: str
    separator: str | None = None  # None: tab for .tsv, comma otherwise
    columns: dict[str, str] = field(default_factory=dict)  # field -> column of the file
    system: str | None = None  # one file = one system
    item_id_column: str | None = None
    history_separator: str | None = None  # None: a JSON list, else one turn per line
    format: str | None = None  # csv or jsonl; None: from the suffix (.jsonl/.ndjson/.json = jsonl)


def _read_table(spec: ExternalPredictionSpec) -> pl.DataFrame:
    path = Path(spec.path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: external prediction file does not exist")
    suffix = path.suffix.lower()
    fmt = spec.format or ("jsonl" if suffix in (".jsonl", ".ndjson", ".json") else "csv")
    if fmt == "jsonl":
        return pl.read_ndjson(path, infer_schema_length=None)
    if fmt != "csv":
        raise ValueError(f"{path}: format must be csv or jsonl, got {fmt!r}")
    separator = spec.separator or ("\t" if suffix == ".tsv" else ",")
    if len(separator) != 1:
        raise ValueError(f"{path}: separator must be one character, got {separator!r}")
    return pl.read_csv(path, separator=separator, infer_schema_length=0, quote_char='"')


def split_history(value, separator: str | None) -> list[str]:
    """Turns of a history cell: a JSON list (or a list already, from JSONL), else split on the separator."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(t).strip() for t in value if str(t).strip()]
    text = str(value).strip()
    if not text:
        return []
    if separator is None:
        if text.startswith("["):
            try:
                turns = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"history {text[:60]!r} is not a JSON list: set history_separator") from exc
            return [str(t).strip() for t in turns if str(t).strip()]
        return [t.strip() for t in text.splitlines() if t.strip()]
    return [t.strip() for t in text.split(separator) if t.strip()]


def resolve_columns(spec: ExternalPredictionSpec, columns: list[str]) -> dict[str, str]:
    """field -> the file's column, from `columns`, `item_id_column` and the default names; raises a
    ValueError naming the file and every mapped or required column it lacks."""
    path, have = spec.path, set(columns)
    unknown_fields = sorted(set(spec.columns) - set(FIELDS))
    if unknown_fields:
        raise ValueError(f"{path}: columns maps unknown fields {unknown_fields}; fields are {list(FIELDS)}")
    mapped = dict(spec.columns)
    if spec.item_id_column:
        mapped["item_id"] = spec.item_id_column
    missing_mapped = {f: c for f, c in mapped.items() if c not in have}
    lowered = {c.strip().lower(): c for c in columns}
    resolved = {f: c for f, c in mapped.items() if c in have}
    for f in FIELDS:
        if f in resolved or f in mapped:
            continue
        names = CONTEXT_COLUMNS if f == "speaker_utterance" else (f,)
        found = next((lowered[n] for n in names if n in lowered), None)
        if found is not None:
            resolved[f] = found
    required = ["prediction", "reference", "emotion"] + ([] if spec.system else ["system"])
    missing = [f for f in required if f not in resolved and f not in missing_mapped]
    if (
        "speaker_utterance" not in resolved
        and "history" not in resolved
        and "speaker_utterance" not in missing_mapped
    ):
        missing.append("speaker_utterance (or context/prompt, or a history)")
    if missing_mapped or missing:
        parts = []
        if missing_mapped:
            parts.append(
                "mapped columns not in the file: "
                + ", ".join(f"{f} -> {c!r}" for f, c in missing_mapped.items())
            )
        if missing:
            parts.append(
                f"missing fields {missing} (map them with `columns`, or set `system` for a one-system file)"
            )
        raise ValueError(f"{path}: {'; '.join(parts)}; the file has columns {columns}")
    return resolved


def read_external_predictions(
    path_or_spec: str | Path | ExternalPredictionSpec, taxonomy: Taxonomy
) -> tuple[pl.DataFrame, dict]:
    """Items from one file, plus counts for the metadata (rows, unknown emotions). Raises before
    returning anything when a column is missing, so a bad file never lands half-read."""
    spec = (
        path_or_spec
        if isinstance(path_or_spec, ExternalPredictionSpec)
        else ExternalPredictionSpec(str(path_or_spec))
    )
    raw = _read_table(spec)
    col = resolve_columns(spec, raw.columns)
    rows, unknown, empty_ids = [], 0, 0

    def cell(rec, name):
        return rec.get(col[name]) if name in col else None

    for rec in raw.iter_rows(named=True):
        label = taxonomy.normalize_label(str(cell(rec, "emotion") or ""))
        if label is None:
            unknown += 1
            label = str(cell(rec, "emotion") or "").strip().lower()
        turns = split_history(cell(rec, "history"), spec.history_separator)
        speaker = cell(rec, "speaker_utterance")
        if speaker is None and turns:
            speaker, turns = turns[-1], turns[:-1]  # the speaker's turn is the last of the history
        speaker, history = str(speaker or ""), "\n".join(turns)
        reference = str(cell(rec, "reference") or "")
        given_id = str(cell(rec, "item_id") or "").strip()
        if "item_id" in col and not given_id:
            empty_ids += 1
        rows.append(
            {
                "item_id": given_id or item_id(label, speaker, reference, history),
                "system": str(spec.system or cell(rec, "system") or "").strip(),
                "origin": "external",
                "emotion": label,
                "language": str(cell(rec, "language") or guess_language(speaker + reference)),
                "situation": str(cell(rec, "situation") or ""),
                "speaker_utterance": speaker,
                "reference": reference,
                "prediction": str(cell(rec, "prediction") or ""),
                "history": history,
            }
        )
    if empty_ids:
        raise ValueError(f"{spec.path}: {empty_ids} rows have an empty item id in column {col['item_id']!r}")
    frame = pl.DataFrame(rows, schema=ITEM_SCHEMA) if rows else empty_items()
    if frame.filter(pl.col("system") == "").height:
        raise ValueError(
            f"{spec.path}: {frame.filter(pl.col('system') == '').height} rows have no system name "
            "(column empty): set `system` for the file"
        )
    return frame, {
        "file": spec.path,
        "rows": frame.height,
        "unknown_emotions": unknown,
        "systems": sorted(frame["system"].unique().to_list()),
        "columns": col,
        "multi_turn_rows": int((frame["history"] != "").sum()),
    }


RATING_FIELDS = ("item_id", "system", "dimension", "rater", "score")


def read_human_ratings(
    path: str | Path,
    *,
    separator: str | None = None,
    columns: dict[str, str] | None = None,
    dimension_map: dict[str, str] | None = None,
    system: str | None = None,
) -> pl.DataFrame:
    """Human ratings as (item_id, system, dimension, rater, score) rows: `columns` maps a field to the
    file's column (default names; `item` is accepted for item_id), `dimension_map` renames the raters'
    dimensions to the judge's, `system` names the system of every row when the file has no column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: human ratings file does not exist")
    sep = separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
    raw = pl.read_csv(path, separator=sep, infer_schema_length=0)
    mapped = dict(columns or {})
    lowered = {c.strip().lower(): c for c in raw.columns}
    missing_mapped = {f: c for f, c in mapped.items() if c not in raw.columns}
    resolved = {f: c for f, c in mapped.items() if c in raw.columns}
    for f in RATING_FIELDS:
        if f not in mapped:
            name = next((lowered[n] for n in ((f, "item") if f == "item_id" else (f,)) if n in lowered), None)
            if name is not None:
                resolved[f] = name
    missing = [
        f
        for f in RATING_FIELDS
        if f not in resolved and f not in missing_mapped and not (f == "system" and system)
    ]
    if missing_mapped or missing:
        parts = []
        if missing_mapped:
            parts.append(
                "mapped columns not in the file: "
                + ", ".join(f"{f} -> {c!r}" for f, c in missing_mapped.items())
            )
        if missing:
            parts.append(f"missing fields {missing} (map them with human_ratings_columns)")
        raise ValueError(f"{path}: human ratings: {'; '.join(parts)}; the file has columns {raw.columns}")
    out = raw.select(
        pl.col(resolved["item_id"]).cast(pl.String).str.strip_chars().alias("item_id"),
        (pl.lit(system) if system else pl.col(resolved["system"]).cast(pl.String).str.strip_chars()).alias(
            "system"
        ),
        pl.col(resolved["dimension"])
        .cast(pl.String)
        .str.strip_chars()
        .replace(dict(dimension_map or {}))
        .alias("dimension"),
        pl.col(resolved["rater"]).cast(pl.String).alias("rater"),
        pl.col(resolved["score"]).cast(pl.Float64, strict=False).alias("score"),
    )
    bad = raw.filter(out["score"].is_null() & pl.col(resolved["score"]).is_not_null())
    if bad.height:
        raise ValueError(
            f"{path}: {bad.height} scores are not numbers, e.g. {bad[resolved['score']].head(3).to_list()}"
        )
    return out


def unmatched_ratings(ratings: pl.DataFrame, items: pl.DataFrame, path: str | Path) -> None:
    """Raise, naming the file and the items, when ratings refer to (item, system) pairs that were not
    predicted: such ratings would silently drop out of the agreement."""
    known = items.select("item_id", "system").unique()
    orphans = ratings.select("item_id", "system").unique().join(known, on=["item_id", "system"], how="anti")
    if orphans.height:
        sample = [f"{i} ({s})" for i, s in orphans.sort("item_id").head(10).iter_rows()]
        unknown_items = orphans.join(known.select("item_id").unique(), on="item_id", how="anti").height
        raise ValueError(
            f"{path}: {orphans.height} rated (item, system) pairs match no prediction ({unknown_items} of them no "
            f"item id at all), e.g. {sample}. Item ids are the prediction file's item_id_column or the content "
            "hash `empathy_dag.evaluate.items.item_id(emotion, speaker_utterance, reference, history)`."
        )
