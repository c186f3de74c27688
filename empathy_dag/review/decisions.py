"""Review decision files: read, validate, quarantine. Pure functions (no Dagster).

A decision file is JSONL (one object a line) or CSV with a header, from any reviewer, dropped in
`<landing_dir>/reviews/`. Columns: item_id, reviewer, decision (accept | edit | reject), reason (one of
REASONS; required for reject, allowed otherwise), edited_reply (required for edit), note (optional).
Extra columns (e.g. the item fields of an exported batch CSV sent back as is) are ignored, and rows
whose decision is left empty in such a CSV are skipped as "not reviewed", not quarantined.

Everything is accounted for like corpus ingestion (`ingest/records.py`): the raw file is archived under
its sha256 first; a file that cannot be read at all is one quarantine entry with line = null; every
other row is either a decision, a quarantine entry with a reason code, or skipped (blank decision,
identical repeat). Row reason codes: invalid_json, not_an_object, wrong_field_count, missing_field,
bad_label, missing_reason, missing_edited_reply, text_too_long, unknown_item, conflicting_duplicate.

Duplicates: the same (reviewer, item) twice with the same decision, reason and edited reply is one
decision (the repeat is skipped); with anything different, every row of that pair is quarantined as
`conflicting_duplicate`, because nothing says which one the reviewer meant. To change a decision, a
reviewer replaces their file (same name) rather than adding a second one.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from empathy_dag.ingest.corpus import QUARANTINE_POLARS_SCHEMA, archive_raw_file
from empathy_dag.ingest.landing import IN_PROGRESS_SUFFIXES
from empathy_dag.ingest.readers import check_bytes, csv_records_strict, read_jsonl, sha256_bytes
from empathy_dag.ingest.records import FileRejected, QuarantineEntry, RawRow, ValidationLimits, printable_raw
from empathy_dag.models import sha256_file

DECISIONS = ("accept", "edit", "reject")
REASONS = ("empathetic_toxicity", "medical_misinformation", "wrong_emotion", "unsafe", "other")
DECISION_COLUMNS = ("item_id", "reviewer", "decision", "reason", "edited_reply", "note")

DECISION_SCHEMA = {
    "item_id": pl.String,
    "emotion": pl.String,
    "reviewer": pl.String,
    "decision": pl.String,
    "reason": pl.String,
    "edited_reply": pl.String,
    "note": pl.String,
    "item_in_training_data": pl.Boolean,
    "file": pl.String,
    "file_sha256": pl.String,
    "line": pl.Int64,
}
QUARANTINE_SCHEMA = QUARANTINE_POLARS_SCHEMA


@dataclass
class DecisionFileOutcome:
    file: str
    file_sha256: str
    rows_in: int = 0
    decisions: list[dict] = field(default_factory=list)
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    @property
    def whole_file_rejected(self) -> bool:
        return any(q.line is None for q in self.quarantined)

    @property
    def balanced(self) -> bool:
        rows = sum(1 for q in self.quarantined if q.line is not None)
        return self.whole_file_rejected or self.rows_in == len(self.decisions) + rows + sum(
            self.skipped.values()
        )


def decision_files(folder: Path) -> list[Path]:
    """Top-level files of the reviews folder, minus hidden and still-being-copied ones."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.lower().endswith(IN_PROGRESS_SUFFIXES)
    )


def _read_csv(data: bytes, name: str) -> list[RawRow]:
    text = check_bytes(data, name)
    header, records = csv_records_strict(text, name)
    missing = [c for c in ("item_id", "reviewer", "decision") if c not in header]
    if missing:
        raise FileRejected(
            "missing_columns",
            f"{name}: missing required column(s) {', '.join(missing)}; found {', '.join(header)}",
        )
    if not records:
        raise FileRejected("empty_file", f"{name} has a header but no rows")
    rows = []
    for line, record, raw in records:
        if len(record) != len(header):
            rows.append(
                RawRow(
                    line, None, raw, ("wrong_field_count", f"{len(record)} fields, header has {len(header)}")
                )
            )
            continue
        rows.append(RawRow(line, {k: v for k, v in zip(header, record) if k in DECISION_COLUMNS}, raw))
    return rows


def read_rows(data: bytes, name: str) -> list[RawRow]:
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(data, name)
    if suffix == ".csv":
        return _read_csv(data, name)
    raise FileRejected(
        "unsupported_format",
        f"{Path(name).name}: unsupported file type {suffix or '(none)'}; use .jsonl, .ndjson or .csv",
    )


def _text(value) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def check_row(
    values: dict, known_items: dict[str, tuple[str, bool]], limits: ValidationLimits
) -> tuple[dict | None, tuple[str, str] | None, str | None]:
    """(decision, None, None) for a good row; (None, (code, message), None) for a bad one;
    (None, None, skip_reason) for a row to skip."""
    item_id, reviewer = _text(values.get("item_id")), _text(values.get("reviewer"))
    decision = (_text(values.get("decision")) or "").lower() or None
    reason = (_text(values.get("reason")) or "").lower() or None
    edited, note = _text(values.get("edited_reply")), _text(values.get("note"))
    if decision is None and reason is None and edited is None and item_id is not None:
        return None, None, "no decision filled in"
    missing = [
        k for k, v in (("item_id", item_id), ("reviewer", reviewer), ("decision", decision)) if v is None
    ]
    if missing:
        return None, ("missing_field", f"missing {', '.join(missing)}"), None
    if decision not in DECISIONS:
        return None, ("bad_label", f"decision {decision!r} is not one of {', '.join(DECISIONS)}"), None
    if reason is not None and reason not in REASONS:
        return None, ("bad_label", f"reason {reason!r} is not one of {', '.join(REASONS)}"), None
    if decision == "reject" and reason is None:
        return None, ("missing_reason", f"reject needs a reason ({', '.join(REASONS)})"), None
    if decision == "edit" and edited is None:
        return None, ("missing_edited_reply", "edit needs edited_reply"), None
    if edited is not None and len(edited) > limits.max_text_chars:
        return (
            None,
            ("text_too_long", f"edited_reply has {len(edited)} characters, over {limits.max_text_chars}"),
            None,
        )
    if item_id not in known_items:
        return None, ("unknown_item", f"item_id {item_id!r} is not a curated or filtered dialogue"), None
    emotion, in_training = known_items[item_id]
    return (
        {
            "item_id": item_id,
            "emotion": emotion,
            "reviewer": reviewer,
            "decision": decision,
            "reason": reason,
            "edited_reply": edited if decision == "edit" else None,
            "note": note,
            "item_in_training_data": in_training,
        },
        None,
        None,
    )


def validate_decision_bytes(
    data: bytes, name: str, known_items: dict[str, tuple[str, bool]], limits: ValidationLimits
) -> DecisionFileOutcome:
    """One file's rows, checked on their own (conflicts across rows are `resolve_duplicates`' job)."""
    sha = sha256_bytes(data)
    outcome = DecisionFileOutcome(file=name, file_sha256=sha)
    try:
        rows = read_rows(data, name)
    except FileRejected as rejected:
        outcome.quarantined.append(
            QuarantineEntry(
                name,
                sha,
                None,
                rejected.reason_code,
                rejected.message,
                printable_raw(data[:200].decode("utf-8", "replace")),
            )
        )
        return outcome
    outcome.rows_in = len(rows)
    for raw in rows:
        if raw.parse_error is not None:
            code, message = raw.parse_error
            outcome.quarantined.append(
                QuarantineEntry(name, sha, raw.line, code, message, printable_raw(raw.raw))
            )
            continue
        decision, problem, skip = check_row(raw.values or {}, known_items, limits)
        if skip:
            outcome.skip(skip)
        elif problem:
            outcome.quarantined.append(
                QuarantineEntry(name, sha, raw.line, problem[0], problem[1], printable_raw(raw.raw))
            )
        else:
            outcome.decisions.append(
                {
                    **decision,
                    "file": name,
                    "file_sha256": sha,
                    "line": raw.line,
                    "_raw": printable_raw(raw.raw),
                }
            )
    return outcome


def resolve_duplicates(outcomes: list[DecisionFileOutcome]) -> None:
    """Across every file: identical repeats of (reviewer, item) are skipped, conflicting ones are all
    quarantined (in place, so each file's accounting stays balanced)."""
    groups: dict[tuple[str, str], list[tuple[DecisionFileOutcome, dict]]] = defaultdict(list)
    for outcome in outcomes:
        for d in outcome.decisions:
            groups[(d["reviewer"], d["item_id"])].append((outcome, d))
    drop: set[int] = set()
    for (reviewer, item_id), members in groups.items():
        if len(members) == 1:
            continue
        variants = {(d["decision"], d["reason"], d["edited_reply"]) for _, d in members}
        if len(variants) == 1:
            for outcome, d in members[1:]:
                outcome.skip("identical repeat of a decision")
                drop.add(id(d))
            continue
        where = ", ".join(f"{Path(d['file']).name}:{d['line']}" for _, d in members)
        for outcome, d in members:
            outcome.quarantined.append(
                QuarantineEntry(
                    d["file"],
                    d["file_sha256"],
                    d["line"],
                    "conflicting_duplicate",
                    f"{reviewer} decided {item_id} differently in {where}",
                    d["_raw"],
                )
            )
            drop.add(id(d))
    for outcome in outcomes:
        outcome.decisions = [d for d in outcome.decisions if id(d) not in drop]


def ingest_decision_files(
    paths: list[Path],
    known_items: dict[str, tuple[str, bool]],
    limits: ValidationLimits | None = None,
    archive_dir: Path | None = None,
) -> list[DecisionFileOutcome]:
    """Archive every raw file (content-addressed, like corpus files), then validate them together."""
    limits = limits or ValidationLimits()
    outcomes = []
    for path in paths:
        size = path.stat().st_size
        if size > limits.max_file_mb * 1024 * 1024:
            sha = sha256_file(path)
            archive_raw_file(path, sha, archive_dir)
            outcome = DecisionFileOutcome(file=str(path), file_sha256=sha)
            outcome.quarantined.append(
                QuarantineEntry(
                    str(path),
                    sha,
                    None,
                    "file_too_large",
                    f"{path.name} is {size / 1024 / 1024:.1f} MB, over the {limits.max_file_mb:g} MB limit",
                )
            )
            outcomes.append(outcome)
            continue
        data = path.read_bytes()
        archive_raw_file(path, sha256_bytes(data), archive_dir)
        outcomes.append(validate_decision_bytes(data, str(path), known_items, limits))
    resolve_duplicates(outcomes)
    return outcomes


def decisions_frame(outcomes: list[DecisionFileOutcome]) -> pl.DataFrame:
    rows = [{k: d[k] for k in DECISION_SCHEMA} for o in outcomes for d in o.decisions]
    return pl.DataFrame(rows, schema=DECISION_SCHEMA, orient="row").sort("item_id", "reviewer")


def quarantine_frame(outcomes: list[DecisionFileOutcome]) -> pl.DataFrame:
    rows = [q.as_dict() for o in outcomes for q in o.quarantined]
    return pl.DataFrame(rows, schema=QUARANTINE_SCHEMA, orient="row").sort("file", "line", nulls_last=False)


def file_summary(outcomes: list[DecisionFileOutcome]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "file": Path(o.file).name,
                "sha256": o.file_sha256[:12],
                "rows_in": o.rows_in,
                "valid": len(o.decisions),
                "quarantined": len(o.quarantined),
                "skipped": sum(o.skipped.values()),
                "whole_file_rejected": o.whole_file_rejected,
                "balanced": o.balanced,
            }
            for o in outcomes
        ],
        schema={
            "file": pl.String,
            "sha256": pl.String,
            "rows_in": pl.Int64,
            "valid": pl.Int64,
            "quarantined": pl.Int64,
            "skipped": pl.Int64,
            "whole_file_rejected": pl.Boolean,
            "balanced": pl.Boolean,
        },
    )


# What of a decision changes `reviewed_dialogues` (the note does not; the file does not).
FINGERPRINT_COLUMNS = ("item_id", "reviewer", "decision", "reason", "edited_reply")


def decision_fingerprints(decisions: pl.DataFrame) -> dict[str, str]:
    """Per emotion, a hash of the decisions that `reviewed_dialogues` of that emotion reads: the review
    sensor compares two of these to rebuild only the emotions whose decisions changed."""
    out = {}
    for emotion in sorted(set(decisions["emotion"].drop_nulls().to_list())) if decisions.height else []:
        rows = (
            decisions.filter(pl.col("emotion") == emotion)
            .select(FINGERPRINT_COLUMNS)
            .sort(FINGERPRINT_COLUMNS, nulls_last=True)
            .rows()
        )
        out[emotion] = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
    return out


def changed_emotions(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Emotions whose decisions differ between two fingerprint maps (added, changed or withdrawn)."""
    return sorted(e for e in set(before) | set(after) if before.get(e) != after.get(e))
