"""From review decisions to the dialogues that may train a model. Pure functions (no Dagster).

Consensus over the reviewers of one item (`consensus`):
1. Veto: any `reject` whose reason is in `veto_reasons` (default unsafe, medical_misinformation)
   rejects the item, whatever the others said: one person seeing a safety problem is enough.
2. Otherwise the majority of accept / edit / reject wins; a tie goes to the more conservative outcome
   (reject > edit > accept), so two reviewers who disagree never let an item through unchanged.
3. An `edit` outcome takes the edited reply most reviewers wrote; a tie between different edits takes
   the one of the alphabetically first reviewer (deterministic).

`apply_review` then, per emotion: edited rows get the new reply (the curated one kept in
`original_reply`, null for rows not edited), rejected rows leave, and, with
`allow_unreviewed_synthetic=False`, synthetic rows without any decision are held back too. Corpus rows
without a decision stay (`review_status` = "unreviewed"). Dialogues a filter removed (`filtered`, from
`filter_report`, reviewed as borderline) come back when the consensus is accept or edit, with the name
of the filter people overruled in `overruled_filter` (null on every other row): the filters are
heuristics near their thresholds there, and a person who read the dialogue outranks them. A filtered
item that is not in `filtered` (a report written before it kept whole rows) cannot come back; it is
counted in `not_reinstatable`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import polars as pl

DEFAULT_VETO_REASONS = ("unsafe", "medical_misinformation")
# Higher wins a tie.
CONSERVATIVENESS = {"accept": 0, "edit": 1, "reject": 2}
REVIEW_STATUSES = ("accepted", "edited", "unreviewed")


@dataclass(frozen=True)
class Consensus:
    item_id: str
    outcome: str  # accept | edit | reject
    edited_reply: str | None
    reviewers: int
    rule: str  # veto | majority | tie->conservative | single


def consensus(item_id: str, votes: list[dict], veto_reasons=DEFAULT_VETO_REASONS) -> Consensus:
    """`votes`: dicts with reviewer, decision, reason, edited_reply (one per reviewer)."""
    vetoes = [v for v in votes if v["decision"] == "reject" and v.get("reason") in set(veto_reasons)]
    if vetoes:
        return Consensus(item_id, "reject", None, len(votes), "veto")
    counts = Counter(v["decision"] for v in votes)
    top = max(counts.values())
    leaders = [d for d, n in counts.items() if n == top]
    outcome = max(leaders, key=CONSERVATIVENESS.__getitem__)
    rule = "single" if len(votes) == 1 else ("majority" if len(leaders) == 1 else "tie->conservative")
    edited = None
    if outcome == "edit":
        edits = sorted((v for v in votes if v["decision"] == "edit"), key=lambda v: v["reviewer"])
        texts = Counter(v["edited_reply"] for v in edits)
        best = max(texts.values())
        edited = next(v["edited_reply"] for v in edits if texts[v["edited_reply"]] == best)
    return Consensus(item_id, outcome, edited, len(votes), rule)


def consensus_frame(decisions: pl.DataFrame, veto_reasons=DEFAULT_VETO_REASONS) -> pl.DataFrame:
    schema = {
        "item_id": pl.String,
        "outcome": pl.String,
        "edited_reply": pl.String,
        "reviewers": pl.Int64,
        "rule": pl.String,
    }
    if decisions.height == 0:
        return pl.DataFrame(schema=schema)
    rows = []
    for (item_id,), part in decisions.sort("item_id", "reviewer").group_by("item_id", maintain_order=True):
        c = consensus(item_id, part.to_dicts(), veto_reasons)
        rows.append(
            {
                "item_id": c.item_id,
                "outcome": c.outcome,
                "edited_reply": c.edited_reply,
                "reviewers": c.reviewers,
                "rule": c.rule,
            }
        )
    return pl.DataFrame(rows, schema=schema)


@dataclass
class ReviewResult:
    frame: pl.DataFrame
    counts: dict[str, int]


def apply_review(
    curated: pl.DataFrame,
    consensus_by_item: pl.DataFrame,
    allow_unreviewed_synthetic: bool = True,
    filtered: pl.DataFrame | None = None,
) -> ReviewResult:
    """`curated` (curated_dialogues of one emotion) after review: same columns + review_status,
    original_reply, overruled_filter. `consensus_by_item` is `consensus_frame` of the decisions (any
    emotions). `filtered`: the rows filters removed, on `curated`'s columns + `filter`."""
    columns = curated.columns
    c = consensus_by_item.select(
        "item_id", pl.col("outcome").alias("_outcome"), pl.col("edited_reply").alias("_edited")
    )
    joined = curated.join(c, left_on="dialogue_id", right_on="item_id", how="left").with_columns(
        pl.lit(None, dtype=pl.String).alias("overruled_filter")
    )
    is_synthetic = pl.col("origin") == "synthetic" if "origin" in columns else pl.lit(False)
    unreviewed_synthetic = pl.col("_outcome").is_null() & is_synthetic
    rejected = joined.filter(pl.col("_outcome") == "reject").height
    held_back = 0 if allow_unreviewed_synthetic else joined.filter(unreviewed_synthetic).height
    kept = joined.filter(pl.col("_outcome").is_null() | (pl.col("_outcome") != "reject"))
    if not allow_unreviewed_synthetic:
        kept = kept.filter(~unreviewed_synthetic)
    reinstated = 0
    if filtered is not None and filtered.height:
        back = (
            filtered.filter(~pl.col("dialogue_id").is_in(curated["dialogue_id"].implode()))
            .unique("dialogue_id", keep="first", maintain_order=True)
            .join(c, left_on="dialogue_id", right_on="item_id", how="inner")
            .filter(pl.col("_outcome").is_in(["accept", "edit"]))
            .rename({"filter": "overruled_filter"})
        )
        reinstated = back.height
        kept = pl.concat([kept, back.select(kept.columns)], how="vertical_relaxed")
    edited = pl.col("_outcome") == "edit"
    out = kept.with_columns(
        pl.when(edited).then(pl.col("_edited")).otherwise(pl.col("listener_reply")).alias("listener_reply"),
        pl.when(edited)
        .then(pl.col("listener_reply"))
        .otherwise(None)
        .cast(pl.String)
        .alias("original_reply"),
        pl.when(edited)
        .then(pl.lit("edited"))
        .when(pl.col("_outcome") == "accept")
        .then(pl.lit("accepted"))
        .otherwise(pl.lit("unreviewed"))
        .alias("review_status"),
    ).select(*columns, "review_status", "original_reply", "overruled_filter")
    counts = {
        "in": curated.height,
        "out": out.height,
        "rejected": rejected,
        "held_back_unreviewed_synthetic": held_back,
        "accepted": out.filter(pl.col("review_status") == "accepted").height,
        "edited": out.filter(pl.col("review_status") == "edited").height,
        "unreviewed": out.filter(pl.col("review_status") == "unreviewed").height,
        "reinstated": reinstated,
    }
    return ReviewResult(out, counts)
