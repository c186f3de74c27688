"""Agreement between the LLM judge and human raters, per rubric dimension.

Human scores are averaged over raters per (item, system, dimension) and paired with the judge's
score for the same triple; Spearman, Kendall (tau-b) and Pearson come from scipy, each with a
percentile bootstrap confidence interval over the pairs (`scipy.stats.bootstrap`, paired). Next to
them, Krippendorff's alpha between the raters themselves (`krippendorff`), the ceiling."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

CORRELATIONS: dict[str, Callable] = {
    "spearman": lambda x, y: stats.spearmanr(x, y).statistic,
    "kendall": lambda x, y: stats.kendalltau(x, y).statistic,
    "pearson": lambda x, y: stats.pearsonr(x, y).statistic,
}


def _safe(fn: Callable, x, y) -> float:
    """NaN instead of a warning-and-NaN or an error when a resample has no variance."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(fn(x, y))


def correlation_with_ci(
    x: Sequence[float],
    y: Sequence[float],
    method: str,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    fn = CORRELATIONS[method]
    point = _safe(fn, x, y)
    low = high = float("nan")
    if len(x) >= 3 and not np.isnan(point):
        res = stats.bootstrap(
            (np.asarray(x, float), np.asarray(y, float)),
            lambda a, b: _safe(fn, a, b),
            paired=True,
            vectorized=False,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {method: point, f"{method}_ci_low": low, f"{method}_ci_high": high}


def judge_human_agreement(
    judge_rows: Sequence[dict],
    human_rows: Sequence[dict],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """judge_rows: item_id, system, dimension, score (None = parse failure, left out).
    human_rows: item_id, system, dimension, rater, score. One result row per dimension."""
    human: dict[tuple, list[float]] = {}
    for r in human_rows:
        if r.get("score") is not None:
            human.setdefault((str(r["item_id"]), r["system"], r["dimension"]), []).append(float(r["score"]))
    judged = {
        (str(r["item_id"]), r["system"], r["dimension"]): float(r["score"])
        for r in judge_rows
        if r.get("score") is not None
    }
    out = []
    for dim in sorted({k[2] for k in human}):
        keys = sorted(k for k in human if k[2] == dim and k in judged)
        x = [judged[k] for k in keys]
        y = [float(np.mean(human[k])) for k in keys]
        row: dict = {
            "dimension": dim,
            "pairs": len(keys),
            "raters": len({r["rater"] for r in human_rows if r["dimension"] == dim}),
        }
        for method in CORRELATIONS:
            row.update(
                correlation_with_ci(x, y, method, n_resamples=n_resamples, confidence=confidence, seed=seed)
            )
        # the humans' own agreement next to the judge's: a judge cannot be expected to beat it
        row.update(
            rater_alpha(human_rows, dim, n_resamples=min(n_resamples, 200), confidence=confidence, seed=seed)
        )
        out.append(row)
    return out


def rater_alpha(
    human_rows: Sequence[dict],
    dimension: str,
    *,
    level: str = "ordinal",
    n_resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Krippendorff's alpha between the human raters of one dimension (units: (item, system); ordinal
    1-5 scores by default), the ceiling a judge-human correlation can be read against, with a
    percentile bootstrap interval over units. NaN with fewer than two raters or two units rated twice."""
    import krippendorff

    rows = [r for r in human_rows if r["dimension"] == dimension and r.get("score") is not None]
    raters = sorted({str(r["rater"]) for r in rows})
    units = sorted({(str(r["item_id"]), str(r["system"])) for r in rows})
    out = {
        "rater_alpha": float("nan"),
        "rater_alpha_ci_low": float("nan"),
        "rater_alpha_ci_high": float("nan"),
        "units_rated_twice": 0,
    }
    if len(raters) < 2:
        return out
    r_index, u_index = {r: i for i, r in enumerate(raters)}, {u: j for j, u in enumerate(units)}
    data = np.full((len(raters), len(units)), np.nan)
    for r in rows:
        data[r_index[str(r["rater"])], u_index[(str(r["item_id"]), str(r["system"]))]] = float(r["score"])
    pairable = np.flatnonzero((~np.isnan(data)).sum(axis=0) >= 2)
    out["units_rated_twice"] = len(pairable)
    data = data[:, pairable]
    if data.shape[1] < 2 or len(np.unique(data[~np.isnan(data)])) < 2:
        return out

    def alpha(matrix):
        try:
            return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
        except (ValueError, ZeroDivisionError):  # a resample with a single value has no alpha
            return float("nan")

    out["rater_alpha"] = alpha(data)
    rng = np.random.default_rng(seed)
    boots = [alpha(data[:, rng.integers(0, data.shape[1], data.shape[1])]) for _ in range(n_resamples)]
    boots = [b for b in boots if not np.isnan(b)]
    if boots:
        tail = (1 - confidence) / 2
        out["rater_alpha_ci_low"], out["rater_alpha_ci_high"] = (
            float(np.quantile(boots, tail)),
            float(np.quantile(boots, 1 - tail)),
        )
    return out
