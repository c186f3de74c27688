"""Agreement between reviewers. Pure functions (no Dagster); the statistics come from maintained
libraries: Krippendorff's alpha from `krippendorff`, Cohen's kappa from scikit-learn.

- Alpha (nominal) over every item with at least two reviewers: one reliability matrix of reviewers x
  items (missing = NaN) for the decision (accept / edit / reject), and one binary matrix per reason,
  where a reviewer *flags* reason r on an item when their decision carries reason r (a reject, or an
  edit or accept annotated with it).
- Kappa for every pair of reviewers, on the items both decided, for the decision and per reason.
- Acceptance rates per reviewer over all their decisions.
A statistic that is undefined (one label only, or fewer than two common items) is null with a note,
never a made-up number.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import numpy as np
import polars as pl

from empathy_dag.review.decisions import DECISIONS, REASONS

DECISION_CODES = {d: i for i, d in enumerate(DECISIONS)}

ALPHA_SCHEMA = {
    "scope": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "items": pl.Int64,
    "reviewers": pl.Int64,
    "positives": pl.Int64,
    "note": pl.String,
}
PAIR_SCHEMA = {
    "reviewer_a": pl.String,
    "reviewer_b": pl.String,
    "scope": pl.String,
    "items": pl.Int64,
    "observed_agreement": pl.Float64,
    "cohen_kappa": pl.Float64,
    "note": pl.String,
}
RATE_SCHEMA = {
    "reviewer": pl.String,
    "decisions": pl.Int64,
    "accepted": pl.Int64,
    "edited": pl.Int64,
    "rejected": pl.Int64,
    "accept_rate": pl.Float64,
    "edit_rate": pl.Float64,
    "reject_rate": pl.Float64,
}


def multi_reviewed(decisions: pl.DataFrame) -> pl.DataFrame:
    """The decisions on items that at least two reviewers decided."""
    if decisions.height == 0:
        return decisions
    multi = (
        decisions.group_by("item_id").agg(pl.col("reviewer").n_unique().alias("n")).filter(pl.col("n") >= 2)
    )
    return decisions.filter(pl.col("item_id").is_in(multi["item_id"].to_list()))


def value_of(scope: str, row: dict) -> float:
    if scope == "decision":
        return float(DECISION_CODES[row["decision"]])
    return 1.0 if row.get("reason") == scope else 0.0


def reliability_matrix(decisions: pl.DataFrame, scope: str) -> tuple[np.ndarray, list[str], list[str]]:
    """reviewers x items (NaN where a reviewer did not decide an item), with the row and column labels."""
    reviewers = sorted(decisions["reviewer"].unique().to_list())
    items = sorted(decisions["item_id"].unique().to_list())
    r_index, i_index = {r: k for k, r in enumerate(reviewers)}, {i: k for k, i in enumerate(items)}
    matrix = np.full((len(reviewers), len(items)), np.nan)
    for row in decisions.iter_rows(named=True):
        matrix[r_index[row["reviewer"]], i_index[row["item_id"]]] = value_of(scope, row)
    return matrix, reviewers, items


def krippendorff_alpha(matrix: np.ndarray) -> tuple[float | None, str]:
    import krippendorff

    values = matrix[~np.isnan(matrix)]
    if values.size == 0:
        return None, "no item has two reviewers"
    if np.unique(values).size < 2:
        return None, "every reviewer gave the same label: alpha is undefined"
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")), ""


def alpha_table(decisions: pl.DataFrame) -> pl.DataFrame:
    multi = multi_reviewed(decisions)
    rows = []
    for scope in ("decision", *REASONS):
        if multi.height == 0:
            rows.append(
                {
                    "scope": scope,
                    "metric": "krippendorff_alpha",
                    "value": None,
                    "items": 0,
                    "reviewers": 0,
                    "positives": 0,
                    "note": "no item has two reviewers",
                }
            )
            continue
        matrix, reviewers, items = reliability_matrix(multi, scope)
        value, note = krippendorff_alpha(matrix)
        positives = None if scope == "decision" else int(np.nansum(matrix))
        rows.append(
            {
                "scope": scope,
                "metric": "krippendorff_alpha",
                "value": value,
                "items": len(items),
                "reviewers": len(reviewers),
                "positives": positives,
                "note": note,
            }
        )
    return pl.DataFrame(rows, schema=ALPHA_SCHEMA)


def cohen_kappa(a: list, b: list) -> tuple[float | None, str]:
    from sklearn.metrics import cohen_kappa_score

    if len(a) < 2:
        return None, "fewer than two common items"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined kappa is reported as null below
        value = float(cohen_kappa_score(a, b))
    if math.isnan(value):
        return None, "both reviewers gave one and the same label: kappa is undefined"
    return value, ""


def pair_table(decisions: pl.DataFrame) -> pl.DataFrame:
    rows = []
    if decisions.height == 0:
        return pl.DataFrame(schema=PAIR_SCHEMA)
    by_reviewer = {
        r: {row["item_id"]: row for row in part.iter_rows(named=True)}
        for (r,), part in decisions.group_by("reviewer")
    }
    for ra, rb in combinations(sorted(by_reviewer), 2):
        common = sorted(set(by_reviewer[ra]) & set(by_reviewer[rb]))
        if not common:
            continue
        for scope in ("decision", *REASONS):
            a = [value_of(scope, by_reviewer[ra][i]) for i in common]
            b = [value_of(scope, by_reviewer[rb][i]) for i in common]
            kappa, note = cohen_kappa(a, b)
            rows.append(
                {
                    "reviewer_a": ra,
                    "reviewer_b": rb,
                    "scope": scope,
                    "items": len(common),
                    "observed_agreement": sum(x == y for x, y in zip(a, b)) / len(common),
                    "cohen_kappa": kappa,
                    "note": note,
                }
            )
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def acceptance_rates(decisions: pl.DataFrame) -> pl.DataFrame:
    if decisions.height == 0:
        return pl.DataFrame(schema=RATE_SCHEMA)
    return (
        decisions.group_by("reviewer")
        .agg(
            pl.len().cast(pl.Int64).alias("decisions"),
            (pl.col("decision") == "accept").sum().cast(pl.Int64).alias("accepted"),
            (pl.col("decision") == "edit").sum().cast(pl.Int64).alias("edited"),
            (pl.col("decision") == "reject").sum().cast(pl.Int64).alias("rejected"),
        )
        .with_columns(
            *(
                (pl.col(c) / pl.col("decisions")).alias(f"{n}_rate")
                for c, n in (("accepted", "accept"), ("edited", "edit"), ("rejected", "reject"))
            )
        )
        .select(list(RATE_SCHEMA))
        .cast(RATE_SCHEMA)
        .sort("reviewer")
    )
