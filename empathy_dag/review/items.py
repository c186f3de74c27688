"""What goes out for review, and the files a reviewer gets. Pure functions (no Dagster).

An item is one dialogue, identified by its `dialogue_id` (item_id == dialogue_id), so a decision joins
straight onto `curated_dialogues` and onto `filter_report`. Three reasons to review an item (`flag`):

- `synthetic`: a generated dialogue that passed every filter and has no review decision yet.
- `borderline`: a generated dialogue a *soft* filter removed close to its threshold (rule below).
- `audit`: a seeded random sample of accepted corpus dialogues (`audit_fraction`), to measure how
  often accepted data is wrong.

Borderline rule (BORDERLINE_FILTERS): a `filter_report` row is borderline when
- filter == near_duplicate and the estimated Jaccard similarity written in its reason is below
  `max_similarity` (default 0.9): similar to an earlier row, but not a copy;
- filter == emotion_consistency and the classifier probability written in its reason (p=...) is below
  `max_probability` (default 0.7): the classifier contradicted the label without much confidence;
- filter == language: short texts fool language detection, so every such drop is worth a look.
A soft-filter row whose score cannot be read from its reason is borderline (a person decides). Hard
filters (empty, length, refusal, prompt_echo, unsafe, exact_duplicate) never are: no reviewer should
spend time on an empty reply or a verbatim copy. A borderline item shows the whole dialogue that
`filter_report` keeps (reports written before curate-v3 hold only "speaker || reply": no situation).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from empathy_dag.safe_paths import spreadsheet_safe

FLAGS = ("synthetic", "borderline", "audit")
BORDERLINE_FILTERS = ("near_duplicate", "emotion_consistency", "language")

ITEM_SCHEMA = {
    "item_id": pl.String,
    "emotion": pl.String,
    "flag": pl.String,
    "why_flagged": pl.String,
    "situation": pl.String,
    "speaker_utterance": pl.String,
    "listener_reply": pl.String,
    "language": pl.String,
    "origin": pl.String,
    "generator": pl.String,
    "in_training_data": pl.Boolean,
}
# The fields a reviewer sees, in this order (files and Label Studio tasks).
REVIEWER_FIELDS = (
    "item_id",
    "emotion",
    "flag",
    "why_flagged",
    "situation",
    "speaker_utterance",
    "listener_reply",
    "language",
    "origin",
    "generator",
)


@dataclass(frozen=True)
class BatchRules:
    audit_fraction: float = 0.05
    audit_seed: str = "empathy-dag-audit-v1"
    max_similarity: float = 0.9
    max_probability: float = 0.7


_SIMILARITY = re.compile(r"~?\s*([01](?:\.\d+)?)\s+Jaccard", re.IGNORECASE)
_PROBABILITY = re.compile(r"p\s*=\s*([01](?:\.\d+)?)")


def borderline_reason(filter_name: str, reason: str, rules: BatchRules) -> str | None:
    """Why a filter_report row is borderline, or None when it is not (see the module docstring)."""
    reason = reason or ""
    if filter_name == "near_duplicate":
        m = _SIMILARITY.search(reason)
        if m is None:
            return f"near_duplicate with no readable similarity ({reason})"
        sim = float(m.group(1))
        return (
            f"near_duplicate at Jaccard {sim:.2f} < {rules.max_similarity:.2f}: {reason}"
            if sim < rules.max_similarity
            else None
        )
    if filter_name == "emotion_consistency":
        m = _PROBABILITY.search(reason)
        if m is None:
            return f"emotion_consistency with no readable probability ({reason})"
        p = float(m.group(1))
        return (
            f"emotion_consistency at p={p:.2f} < {rules.max_probability:.2f}: {reason}"
            if p < rules.max_probability
            else None
        )
    if filter_name == "language":
        return f"language filter (unreliable on short texts): {reason}"
    return None


def audit_draw(item_id: str, seed: str) -> float:
    """A uniform number in [0, 1) from (seed, id): the sample is seeded, reproducible, and an item's
    membership never changes when data is added."""
    digest = hashlib.sha256(f"{seed}\x1f{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split_report_text(text: str) -> tuple[str, str]:
    speaker, sep, reply = (text or "").partition(" || ")
    return (speaker, reply) if sep else ("", text or "")


def review_items(
    curated: pl.DataFrame,
    report: pl.DataFrame | None,
    reviewed_ids: set[str],
    rules: BatchRules = BatchRules(),
) -> pl.DataFrame:
    """The items of one emotion that need review and have no decision yet (ITEM_SCHEMA), sorted by
    (flag, item_id). `curated` has the curated_dialogues columns, `report` the filter_report ones."""
    rows: list[dict] = []
    pending = curated.filter(~pl.col("dialogue_id").is_in(list(reviewed_ids))) if curated.height else curated
    for row in pending.iter_rows(named=True):
        if row.get("origin") == "synthetic":
            flag, why = "synthetic", f"generated by {row.get('generator') or 'a model'}; not reviewed yet"
        elif audit_draw(row["dialogue_id"], rules.audit_seed) < rules.audit_fraction:
            flag, why = "audit", f"random audit of accepted corpus data ({rules.audit_fraction:.0%} sample)"
        else:
            continue
        rows.append(
            {
                "item_id": row["dialogue_id"],
                "emotion": row["emotion"],
                "flag": flag,
                "why_flagged": why,
                "situation": row.get("situation"),
                "speaker_utterance": row.get("speaker_utterance"),
                "listener_reply": row.get("listener_reply"),
                "language": row.get("language"),
                "origin": row.get("origin"),
                "generator": row.get("generator"),
                "in_training_data": True,
            }
        )
    if report is not None and report.height:
        for row in report.iter_rows(named=True):
            if row["id"] in reviewed_ids:
                continue
            why = borderline_reason(row["filter"], row["reason"], rules)
            if why is None:
                continue
            speaker, reply = _split_report_text(row["text"])
            rows.append(
                {
                    "item_id": row["id"],
                    "emotion": row["emotion"],
                    "flag": "borderline",
                    "why_flagged": why,
                    "situation": row.get("situation"),
                    "speaker_utterance": row.get("speaker_utterance") or speaker,
                    "listener_reply": row.get("listener_reply") or reply,
                    "language": row.get("language"),
                    "origin": row.get("origin") or "synthetic",
                    "generator": row.get("generator"),
                    "in_training_data": False,
                }
            )
    if not rows:
        return pl.DataFrame(schema=ITEM_SCHEMA)
    return (
        pl.DataFrame(rows, schema=ITEM_SCHEMA)
        .unique(subset="item_id", keep="first", maintain_order=True)
        .sort("flag", "item_id")
    )


def batch_jsonl(items: pl.DataFrame) -> str:
    return "".join(
        json.dumps({k: r[k] for k in REVIEWER_FIELDS}, ensure_ascii=False, sort_keys=False) + "\n"
        for r in items.sort("emotion", "flag", "item_id").iter_rows(named=True)
    )


def batch_id(items: pl.DataFrame) -> str:
    """Content hash of the batch: the same items give the same id (re-exporting is a no-op)."""
    return hashlib.sha256(batch_jsonl(items).encode("utf-8")).hexdigest()[:16]


def batch_csv(items: pl.DataFrame) -> str:
    """The items plus the empty decision columns a reviewer fills in (a CSV they can send back as is)."""
    buf = io.StringIO()
    # Every cell quoted: a bare "\r" inside a generated reply would otherwise end the record early.
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow([*REVIEWER_FIELDS, "reviewer", "decision", "reason", "edited_reply", "note"])
    for r in items.sort("emotion", "flag", "item_id").iter_rows(named=True):
        # Cells are generated or user text: one starting with "=" (=HYPERLINK(...)) would run as a formula
        # in the reviewer's spreadsheet, so it is written as text (a leading apostrophe).
        writer.writerow(
            [spreadsheet_safe("" if r[k] is None else r[k]) for k in REVIEWER_FIELDS] + ["", "", "", "", ""]
        )
    return buf.getvalue()


def label_studio_tasks(items: pl.DataFrame, batch: str) -> list[dict]:
    """Label Studio's task import format: a list of {"data": {...}} (Import -> JSON)."""
    return [
        {"data": {**{k: r[k] for k in REVIEWER_FIELDS}, "batch_id": batch}}
        for r in items.sort("emotion", "flag", "item_id").iter_rows(named=True)
    ]


def label_studio_config(decisions: tuple[str, ...], reasons: tuple[str, ...]) -> str:
    """A labeling interface for those tasks: the decision, a reason, an edited reply."""
    choices = "\n".join(f'    <Choice value="{d}"/>' for d in decisions)
    reason_choices = "\n".join(f'    <Choice value="{r}"/>' for r in reasons)
    return f"""<View>
  <Header value="$emotion: $why_flagged"/>
  <Text name="situation" value="$situation"/>
  <Text name="speaker" value="$speaker_utterance"/>
  <Text name="reply" value="$listener_reply"/>
  <Choices name="decision" toName="reply" choice="single" required="true">
{choices}
  </Choices>
  <Choices name="reason" toName="reply" choice="single">
{reason_choices}
  </Choices>
  <TextArea name="edited_reply" toName="reply" placeholder="the corrected reply (for edit)"/>
  <TextArea name="note" toName="reply"/>
</View>
"""


def write_batch(
    items: pl.DataFrame, folder: Path, decisions: tuple[str, ...], reasons: tuple[str, ...]
) -> dict[str, Path]:
    """Write the batch files into `folder` (created; files replaced atomically). Returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    bid = folder.name
    counts = dict(sorted(items.group_by("flag").len().iter_rows())) if items.height else {}
    contents = {
        "items.jsonl": batch_jsonl(items),
        "items.csv": batch_csv(items),
        "label_studio_tasks.json": json.dumps(label_studio_tasks(items, bid), ensure_ascii=False, indent=1),
        "label_studio_config.xml": label_studio_config(decisions, reasons),
        "manifest.json": json.dumps(
            {
                "batch_id": bid,
                "items": items.height,
                "per_flag": counts,
                "emotions": sorted(items["emotion"].unique().to_list()) if items.height else [],
                "return_decisions_to": "<landing_dir>/reviews/ as JSONL or CSV with columns item_id, reviewer, "
                "decision, reason, edited_reply, note",
            },
            indent=1,
        ),
    }
    paths = {}
    for name, text in contents.items():
        path = folder / name
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths[name] = path
    return paths
