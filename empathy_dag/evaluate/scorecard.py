"""The scorecard's statistics: every mean with its uncertainty, every comparison paired and tested.

The metric tables (`metric_bertscore`, `metric_epitome`, ...) keep one row per (system, item). This
module turns them into

- `item_scores`: the long form, one row per (system, emotion, item, metric), from whichever metric
  tables exist (a table that was never materialized is listed, not an error);
- `metric_summaries`: per (system, emotion | 'all', metric) the number of items `n`, the mean, its
  standard error and a seeded 95% bootstrap interval over items (`scipy.stats.bootstrap`). Diversity
  (distinct-n, entropy) is a property of a *set* of replies, so its interval comes from resampling the
  replies and recomputing the statistic. A group with fewer than 2 items gets `n` and the mean, and no
  interval (`interval_note` says why) - never a fake one;
- `paired_comparisons`: for a system against a reference system (the baseline; the promoted model),
  on exactly the items both answered: the mean difference, its paired-bootstrap interval and a
  two-sided paired permutation test (`scipy.stats.permutation_test`, sign flips of the per-item
  differences: exact for small n). The p-values of one family (a system, a reference, an emotion: the
  directional metrics compared) are adjusted with Benjamini-Hochberg
  (`scipy.stats.false_discovery_control`), and each row gets a verdict from the adjusted p-value and
  the metric's direction: `better`, `worse` or `inconclusive` (`descriptive` for metrics without a
  good direction). `regression` is "worse, and the whole interval of the directional difference lies
  beyond the margin" - a confident regression, never a fixed percentage of the baseline.

Every group is (emotion, language): 'all'/'all' over every item, each emotion over all languages, and
each language over all emotions (a Japanese system's or items' own row, never only mixed into 'all';
a consumer of the overall rows filters emotion = 'all' AND language = 'all').

Nothing here imports Dagster: the evaluate assets call these functions, tests call them on fixed data."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import sparse, stats

from empathy_dag.evaluate.metrics.text import ngrams, tokens

ALL = "all"

# metric -> (table, column). Per-item metrics: the mean over items is the score.
ITEM_METRICS: dict[str, tuple[str, str]] = {
    "bertscore_precision": ("metric_bertscore", "bertscore_precision"),
    "bertscore_recall": ("metric_bertscore", "bertscore_recall"),
    "bertscore_f1": ("metric_bertscore", "bertscore_f1"),
    "diff_epitome_er": ("metric_epitome", "er_squared_diff"),
    "diff_epitome_ip": ("metric_epitome", "ip_squared_diff"),
    "diff_epitome_ex": ("metric_epitome", "ex_squared_diff"),
    "epitome_er_level": ("metric_epitome", "er_prediction"),
    "epitome_ip_level": ("metric_epitome", "ip_prediction"),
    "epitome_ex_level": ("metric_epitome", "ex_prediction"),
    "vader_response": ("metric_valence", "vader_response"),
    "vader_difference": ("metric_valence", "vader_difference"),
    "diff_valence": ("metric_valence", "diff_valence"),
    "diff_arousal": ("metric_valence", "diff_arousal"),
    "diff_dominance": ("metric_valence", "diff_dominance"),
    "alignment_bertscore_f1": ("metric_alignment", "alignment_bertscore_f1"),
    "alignment_exact": ("metric_alignment", "alignment_exact"),
    "alignment_ekman": ("metric_alignment", "alignment_ekman"),
}
# Judge scores are per (item, dimension): metric `judge_<dimension>` from `expected_score`, and the
# share of replies without a parseable score.
JUDGE_TABLE = "metric_judge"
# Set-level metrics: a statistic of the whole set of replies of a group (from `metric_diversity`'s
# definition in `empathy_dag.evaluate.metrics.diversity`).
SET_METRICS = ("distinct_1", "distinct_2", "entropy_1", "entropy_2", "unique_share")
# Per-system numbers without items (one text, one question set): n and value, no interval.
RETENTION_TABLE = "metric_retention"

SET_BATCH = 64

METRIC_TABLES = tuple(sorted({t for t, _ in ITEM_METRICS.values()} | {JUDGE_TABLE, RETENTION_TABLE}))

DEFAULT_HEADLINE_METRICS = (
    "diff_epitome_er",
    "diff_epitome_ip",
    "diff_epitome_ex",
    "bertscore_f1",
    "judge_general_empathy",
)

ITEM_SCORE_SCHEMA = {
    "system": pl.String,
    "emotion": pl.String,
    "language": pl.String,
    "item_id": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
}
SUMMARY_SCHEMA = {
    "system": pl.String,
    "emotion": pl.String,
    "language": pl.String,
    "metric": pl.String,
    "direction": pl.Int64,
    "kind": pl.String,
    "n": pl.Int64,
    "value": pl.Float64,
    "std_error": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "interval_note": pl.String,
}
COMPARISON_SCHEMA = {
    "system": pl.String,
    "versus": pl.String,
    "versus_role": pl.String,
    "emotion": pl.String,
    "language": pl.String,
    "metric": pl.String,
    "direction": pl.Int64,
    "n": pl.Int64,
    "value": pl.Float64,
    "versus_value": pl.Float64,
    "delta": pl.Float64,
    "delta_ci_low": pl.Float64,
    "delta_ci_high": pl.Float64,
    "p_value": pl.Float64,
    "p_adjusted": pl.Float64,
    "verdict": pl.String,
    "regression": pl.Boolean,
    "note": pl.String,
}


def direction_of(metric: str) -> int:
    """1 higher is better, -1 lower is better, 0 descriptive (no good direction: never a verdict)."""
    if metric.startswith("diff_") or metric in ("perplexity", "judge_parse_failure_rate"):
        return -1
    if metric in ("vader_response", "vader_difference") or (
        metric.startswith("epitome_") and metric.endswith("_level")
    ):
        return 0
    return 1


@dataclass(frozen=True)
class ScorecardSettings:
    """How intervals and tests are computed. `margin` is in the metric's own units (per-metric values
    override `default_margin`): a regression must be worse than this with confidence."""

    confidence_level: float = 0.95
    n_resamples: int = 2000
    alpha: float = 0.05
    seed: int = 0
    default_margin: float = 0.0
    margins: Mapping[str, float] = field(default_factory=dict)
    bootstrap_method: str = "percentile"

    def margin(self, metric: str) -> float:
        return float(self.margins.get(metric, self.default_margin))


# ------------------------------------------------------------------------------- per-item long form


def item_scores(tables: Mapping[str, pl.DataFrame | None]) -> tuple[pl.DataFrame, list[str]]:
    """(long per-item scores, metric tables that are missing). `tables` maps a table name to its frame,
    None (or absent) when the table does not exist in the warehouse."""
    parts, missing = [], [t for t in METRIC_TABLES if tables.get(t) is None]
    keys = ["system", "emotion", "language", "item_id"]
    for metric, (table, column) in ITEM_METRICS.items():
        frame = tables.get(table)
        if frame is None or column not in frame.columns or not frame.height:
            continue
        parts.append(
            frame.select(
                *keys, pl.lit(metric).alias("metric"), pl.col(column).cast(pl.Float64).alias("value")
            )
        )
    judge = tables.get(JUDGE_TABLE)
    if judge is not None and judge.height:
        parts.append(
            judge.select(
                *keys,
                ("judge_" + pl.col("dimension")).alias("metric"),
                pl.col("expected_score").cast(pl.Float64).alias("value"),
            )
        )
        parts.append(
            judge.select(
                *keys,
                pl.lit("judge_parse_failure_rate").alias("metric"),
                pl.col("score").is_null().cast(pl.Float64).alias("value"),
            )
        )
    if not parts:
        return pl.DataFrame(schema=ITEM_SCORE_SCHEMA), missing
    long = pl.concat([p.cast(ITEM_SCORE_SCHEMA) for p in parts]).filter(
        pl.col("value").is_not_null() & pl.col("value").is_finite()
    )
    return long.sort("system", "metric", "emotion", "item_id"), missing


# ------------------------------------------------------------------------------------ one sample


def summarize(
    values: Iterable[float],
    settings: ScorecardSettings = ScorecardSettings(),
    statistic: Callable | None = None,
    data: np.ndarray | None = None,
) -> dict:
    """n, mean (or `statistic` of the whole set), its standard error and bootstrap interval.

    Per-item metrics pass `values`. Set-level metrics pass `data` (an index array over the group's
    replies) and `statistic(indices) -> float`; the standard error is then the bootstrap's."""
    if statistic is None:
        x = np.asarray(list(values), dtype=float)
        n = int(x.size)
        if n == 0:
            return _summary(0, None, None, None, None, "no items")
        mean = float(x.mean())
        if n < 2:
            return _summary(n, mean, None, None, None, "fewer than 2 items: no interval")
        se = float(x.std(ddof=1) / np.sqrt(n))
        if np.all(x == x[0]):
            return _summary(n, mean, 0.0, mean, mean, "all items equal")
        res = stats.bootstrap(
            (x,),
            np.mean,
            confidence_level=settings.confidence_level,
            n_resamples=settings.n_resamples,
            method=settings.bootstrap_method,
            random_state=np.random.default_rng(settings.seed),
            vectorized=True,
        )
        return _summary(n, mean, se, *_interval(res, mean))
    idx = np.asarray(data)
    n = int(idx.size)
    if n == 0:
        return _summary(0, None, None, None, None, "no items")
    value = float(statistic(idx))
    if n < 2:
        return _summary(n, value, None, None, None, "fewer than 2 items: no interval")
    se, low, high, note = half_sample_interval(
        lambda positions: statistic(idx[positions]), n, value, settings
    )
    return _summary(n, value, se, low, high, note)


def half_sample_interval(
    statistic: Callable, n: int, point: float, settings: ScorecardSettings
) -> tuple[float | None, float | None, float | None, str]:
    """(standard error, low, high, note) of a set statistic by the delete-d jackknife with d = n/2
    (half-samples without replacement; Shao & Wu 1989, consistent for non-smooth statistics), as a normal
    interval around the full-sample `point`. `statistic(positions)` takes a (..., m) array of item positions.

    Why not the bootstrap: resampling with replacement repeats replies, and a repeated reply repeats all its
    n-grams, so every resample's distinct-n and entropy fall below the sample's own; the percentile interval
    then lies entirely below the estimate (measured on the replication run: base distinct-2 0.314, bootstrap
    interval [0.210, 0.239]). Half-samples repeat nothing; their spread estimates the full sample's variance
    (variance factor m / (n - m), 1 for even n)."""
    m = n // 2
    rng = np.random.default_rng(settings.seed)
    values = []
    for start in range(0, settings.n_resamples, SET_BATCH):
        rows = min(SET_BATCH, settings.n_resamples - start)
        positions = np.argsort(rng.random((rows, n)), axis=1)[:, :m]
        values.append(np.asarray(statistic(positions), dtype=float).reshape(rows))
    values = np.concatenate(values)
    se = float(np.sqrt(m / (n - m) * values.var()))
    if not np.isfinite(se):
        return None, None, None, "half-sample distribution degenerate: no interval"
    z = float(stats.norm.ppf(0.5 + settings.confidence_level / 2))
    return se, point - z * se, point + z * se, "half-sample (delete-n/2 jackknife) normal interval"


def _interval(res, point: float) -> tuple[float | None, float | None, str]:
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return None, None, "bootstrap distribution degenerate: no interval"
    return low, high, ""


def _summary(n, value, se, low, high, note) -> dict:
    return {"n": n, "value": value, "std_error": se, "ci_low": low, "ci_high": high, "interval_note": note}


# ---------------------------------------------------------------------------------------- paired


def paired_test(
    x: np.ndarray,
    y: np.ndarray,
    settings: ScorecardSettings = ScorecardSettings(),
    statistic: Callable | None = None,
) -> dict:
    """Difference x - y on the same items: mean difference (or `statistic(x_idx, y_idx)` for set
    metrics, where x and y are index arrays into each system's replies), paired-bootstrap interval and
    two-sided paired permutation p-value (each item's two values swapped or not)."""
    x, y = np.asarray(x), np.asarray(y)
    n = int(x.size)
    batch = None
    if statistic is None:

        def statistic(a, b, axis=-1):
            return np.mean(a - b, axis=axis)
    else:
        batch = SET_BATCH  # set statistics gather a (batch, n, vocabulary) array: bound its memory
    delta = float(statistic(x, y))
    if n < 2:
        return {
            "n": n,
            "delta": delta if n else None,
            "delta_ci_low": None,
            "delta_ci_high": None,
            "p_value": None,
            "note": "fewer than 2 paired items: no test",
        }
    if batch is None and np.all(x == y):
        return {
            "n": n,
            "delta": 0.0,
            "delta_ci_low": 0.0,
            "delta_ci_high": 0.0,
            "p_value": 1.0,
            "note": "identical on every item",
        }
    if batch is None:
        boot = stats.bootstrap(
            (x, y),
            statistic,
            paired=True,
            vectorized=True,
            confidence_level=settings.confidence_level,
            n_resamples=settings.n_resamples,
            method=settings.bootstrap_method,
            random_state=np.random.default_rng(settings.seed),
        )
        low, high, note = _interval(boot, delta)
    else:  # a set statistic: half-samples of the items, both systems' replies of the same items
        _, low, high, note = half_sample_interval(
            lambda positions: statistic(x[positions], y[positions]), n, delta, settings
        )
    perm = stats.permutation_test(
        (x, y),
        statistic,
        permutation_type="samples",
        vectorized=True,
        batch=batch,
        n_resamples=settings.n_resamples,
        alternative="two-sided",
        random_state=np.random.default_rng(settings.seed),
    )
    return {
        "n": n,
        "delta": delta,
        "delta_ci_low": low,
        "delta_ci_high": high,
        "p_value": float(min(1.0, perm.pvalue)),
        "note": note,
    }


def verdict(direction: int, delta: float | None, p_adjusted: float | None, alpha: float) -> str:
    if direction == 0:
        return "descriptive"
    if delta is None or p_adjusted is None or p_adjusted >= alpha or delta == 0:
        return "inconclusive"
    return "better" if direction * delta > 0 else "worse"


def is_regression(row: Mapping, margin: float) -> bool | None:
    """Worse with confidence, and the interval of the directional difference entirely beyond -margin."""
    if row["direction"] == 0 or row["delta"] is None:
        return None
    if row["verdict"] != "worse":
        return False
    low, high = row["delta_ci_low"], row["delta_ci_high"]
    if low is None or high is None:
        return False
    worst_good_side = max(row["direction"] * low, row["direction"] * high)  # the bound nearest to "better"
    return bool(worst_good_side < -margin)


def adjust_family(rows: list[dict], settings: ScorecardSettings) -> None:
    """Benjamini-Hochberg over the directional metrics of one family (in place), then verdicts."""
    tested = [r for r in rows if r["direction"] != 0 and r["p_value"] is not None]
    if tested:
        adjusted = stats.false_discovery_control([r["p_value"] for r in tested], method="bh")
        for r, p in zip(tested, adjusted):
            r["p_adjusted"] = float(p)
    for r in rows:
        r.setdefault("p_adjusted", None)
        r["verdict"] = verdict(r["direction"], r["delta"], r["p_adjusted"], settings.alpha)
        r["regression"] = is_regression(r, settings.margin(r["metric"]))


# ------------------------------------------------------------------------------------ whole tables


def _groups(frame: pl.DataFrame) -> list[tuple[tuple[str, str], pl.DataFrame]]:
    """((emotion, language), rows): everything, each emotion, each language."""
    groups = [((ALL, ALL), frame)] + [
        ((e, ALL), f) for (e,), f in frame.group_by("emotion", maintain_order=True)
    ]
    if "language" in frame.columns:
        groups += [
            ((ALL, lang), f)
            for (lang,), f in frame.sort("language").group_by("language", maintain_order=True)
        ]
    return groups


def metric_summaries(
    scores: pl.DataFrame,
    settings: ScorecardSettings = ScorecardSettings(),
    items: pl.DataFrame | None = None,
    retention: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per (system, emotion | 'all', metric): n, value, standard error, interval."""
    rows = []
    for (system, metric), frame in scores.group_by("system", "metric", maintain_order=True):
        for (emotion, language), sub in _groups(frame):
            rows.append(
                {
                    "system": system,
                    "emotion": emotion,
                    "language": language,
                    "metric": metric,
                    "direction": direction_of(metric),
                    "kind": "item",
                    **summarize(sub["value"].to_numpy(), settings),
                }
            )
    if items is not None and items.height:
        for (system,), frame in items.group_by("system", maintain_order=True):
            for (emotion, language), sub in _groups(frame):
                texts, langs = sub["prediction"].to_list(), sub["language"].to_list()
                for metric in SET_METRICS:
                    rows.append(
                        {
                            "system": system,
                            "emotion": emotion,
                            "language": language,
                            "metric": metric,
                            "direction": direction_of(metric),
                            "kind": "set",
                            **summarize(
                                (),
                                settings,
                                statistic=SetStatistic(metric, texts, langs),
                                data=np.arange(len(texts)),
                            ),
                        }
                    )
    if retention is not None and retention.height:
        for rec in retention.iter_rows(named=True):
            for metric, n_col in (("perplexity", "text_tokens"), ("mmlu_accuracy", "mmlu_questions")):
                if rec.get(metric) is None:
                    continue
                rows.append(
                    {
                        "system": rec["system"],
                        "emotion": ALL,
                        "language": ALL,
                        "metric": metric,
                        "direction": direction_of(metric),
                        "kind": "system",
                        **_summary(
                            int(rec.get(n_col) or 0),
                            float(rec[metric]),
                            None,
                            None,
                            None,
                            "one score per system (no items): no interval",
                        ),
                    }
                )
    if not rows:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA).sort("system", "emotion", "language", "metric")


class SetStatistic:
    """A set metric (distinct-n, n-gram entropy, unique share; definitions of
    `empathy_dag.evaluate.metrics.diversity`) of the replies picked by index arrays, vectorized for
    scipy: each reply is a row of n-gram counts, so a batch of resamples is one gather and one sum.
    Languages get column blocks of their own and the result is their mean weighted by reply count, so a
    system answering in two languages is measured in each language's own units (words, characters)."""

    def __init__(self, metric: str, texts: list[str], languages: list[str]):
        if metric not in SET_METRICS:
            raise ValueError(f"unknown set metric {metric!r}")
        self.metric = metric
        self.langs = np.asarray([str(lang) for lang in languages], dtype=object)
        self.blocks: list[tuple[np.ndarray, slice]] = []
        vocab: dict[tuple, int] = {}
        rows: list[dict[int, int]] = []
        for text, lang in zip(texts, self.langs):
            if metric == "unique_share":
                keys = [(lang, " ".join((text or "").split()))]
            else:
                keys = [
                    (lang, g) for g in ngrams(tokens(text or "", lang), 2 if metric.endswith("_2") else 1)
                ]
            row: dict[int, int] = {}
            for k in keys:
                j = vocab.setdefault(k, len(vocab))
                row[j] = row.get(j, 0) + 1
            rows.append(row)
        # replies x n-grams, sparse (a reply has tens of n-grams out of thousands), stored transposed for
        # the product in __call__
        row_ids = [i for i, row in enumerate(rows) for _ in row]
        col_ids = [j for row in rows for j in row]
        values = [c for row in rows for c in row.values()]
        self.counts_t = sparse.csr_matrix(
            (np.asarray(values, dtype=np.float32), (col_ids, row_ids)),
            shape=(max(len(vocab), 1), len(texts)),
        )
        lang_of_col = np.empty(max(len(vocab), 1), dtype=object)
        for (lang, _), j in vocab.items():
            lang_of_col[j] = lang
        for lang in sorted(set(self.langs.tolist())):
            self.blocks.append((self.langs == lang, np.flatnonzero(lang_of_col == lang)))

    def __call__(self, idx, axis=-1) -> np.ndarray:
        idx = np.asarray(idx, dtype=int)
        lead, k = idx.shape[:-1], idx.shape[-1]
        flat = idx.reshape(-1, k)
        rows, replies = flat.shape[0], self.counts_t.shape[1]
        # How often each reply is picked in each resample, then one sparse product for the summed n-gram
        # counts: the same integers as gathering a dense (resamples, k, V) array and summing it (exact in
        # float32 below 2^24), without the gather's memory traffic (it was ~80% of the demo scorecard).
        weights = np.bincount(
            (np.arange(rows)[:, None] * replies + flat).ravel(), minlength=rows * replies
        ).reshape(rows, replies)
        summed = np.asarray(self.counts_t @ weights.T.astype(np.float32)).T  # (rows, V)
        value = np.zeros(rows)
        for is_lang, cols in self.blocks:
            share = weights[:, is_lang].sum(axis=-1) / k
            counts = summed[:, cols]
            total = counts.sum(axis=-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                if self.metric == "unique_share" or self.metric.startswith("distinct"):
                    stat = np.where(total > 0, (counts > 0).sum(axis=-1) / total, 0.0)
                else:
                    p = counts / np.where(total > 0, total, 1)[..., None]
                    stat = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0).sum(axis=-1)
            value = value + share * stat
        return np.asarray(value, dtype=float).reshape(lead)


def _paired_set_statistic(statistic: SetStatistic) -> Callable:
    """For a paired test of a set metric: the two samples are index arrays into x's replies followed by
    y's (0..n-1 and n..2n-1), so a permutation swaps one item's two replies and a paired bootstrap
    resamples items; the statistic is S(x's picked replies) - S(y's picked replies)."""

    def paired(xi, yi, axis=-1):
        return statistic(xi) - statistic(yi)

    return paired


def paired_comparisons(
    scores: pl.DataFrame,
    references: Mapping[str, str],
    settings: ScorecardSettings = ScorecardSettings(),
    items: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every system against each reference (`{role: system}`, e.g. {"baseline": "base",
    "promoted": "promoted"}), per emotion and over all, on the items both answered."""
    rows: list[dict] = []
    systems = sorted(
        set(scores["system"].unique().to_list())
        | (set(items["system"].unique().to_list()) if items is not None and items.height else set())
    )
    for role, versus in references.items():
        if versus not in systems:
            continue
        for system in systems:
            if system == versus:
                continue
            family: dict[tuple[str, str], list[dict]] = {}
            _item_pairs(scores, system, versus, role, settings, family)
            if items is not None and items.height:
                _set_pairs(items, system, versus, role, settings, family)
            for fam in family.values():
                adjust_family(fam, settings)
                rows.extend(fam)
    if not rows:
        return pl.DataFrame(schema=COMPARISON_SCHEMA)
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA).sort(
        "versus_role", "system", "emotion", "language", "metric"
    )


def _item_pairs(scores, system, versus, role, settings, family):
    a = scores.filter(pl.col("system") == system)
    b = scores.filter(pl.col("system") == versus).select(
        "item_id", "metric", pl.col("value").alias("versus_v")
    )
    joined = a.join(b, on=["item_id", "metric"], how="inner")
    for (metric,), frame in joined.group_by("metric", maintain_order=True):
        for group, sub in _groups(frame):
            x, y = sub["value"].to_numpy(), sub["versus_v"].to_numpy()
            test = paired_test(x, y, settings)
            family.setdefault(group, []).append(
                _comparison_row(system, versus, role, group, metric, x, y, test)
            )


def _set_pairs(items, system, versus, role, settings, family):
    a = items.filter(pl.col("system") == system).select("item_id", "emotion", "language", "prediction")
    b = items.filter(pl.col("system") == versus).select(
        "item_id", pl.col("prediction").alias("versus_prediction")
    )
    joined = a.join(b, on="item_id", how="inner").sort("item_id")
    for group, sub in _groups(joined):
        n, x_texts, y_texts = sub.height, sub["prediction"].to_list(), sub["versus_prediction"].to_list()
        langs = sub["language"].to_list()
        for metric in SET_METRICS:
            x_idx, y_idx = np.arange(n), np.arange(n, 2 * n)
            if x_texts == y_texts:
                test = {
                    "n": n,
                    "delta": 0.0,
                    "delta_ci_low": 0.0,
                    "delta_ci_high": 0.0,
                    "p_value": 1.0,
                    "note": "identical on every item",
                }
            else:
                both = SetStatistic(metric, x_texts + y_texts, langs * 2)
                test = paired_test(x_idx, y_idx, settings, statistic=_paired_set_statistic(both))
            row = _comparison_row(system, versus, role, group, metric, None, None, test)
            row["value"] = float(SetStatistic(metric, x_texts, langs)(x_idx)) if n else None
            row["versus_value"] = float(SetStatistic(metric, y_texts, langs)(x_idx)) if n else None
            family.setdefault(group, []).append(row)


def _comparison_row(system, versus, role, group, metric, x, y, test) -> dict:
    emotion, language = group
    return {
        "system": system,
        "versus": versus,
        "versus_role": role,
        "emotion": emotion,
        "language": language,
        "metric": metric,
        "direction": direction_of(metric),
        "value": float(np.mean(x)) if x is not None and len(x) else None,
        "versus_value": float(np.mean(y)) if y is not None and len(y) else None,
        **{k: test[k] for k in ("n", "delta", "delta_ci_low", "delta_ci_high", "p_value")},
        "note": test.get("note", ""),
    }


def resolve_baseline(
    systems: list[str], configured: str | None, pipeline_systems: Iterable[str] = ()
) -> tuple[str | None, str]:
    """(the baseline system, a note when it is not the configured one). With no configured system
    scored (e.g. only external predictions), the one named `baseline` or `base`, else the first
    configured pipeline system that was scored, else the first system by name."""
    if not systems:
        return None, "no systems scored: no baseline"
    if configured in systems:
        return configured, ""
    for name in ("baseline", "base", *pipeline_systems, *sorted(systems)):
        if name in systems:
            return name, (
                f"baseline_system {configured!r} was not scored; comparing with {name!r} instead "
                "(set evaluation.baseline_system to choose)"
            )
    return None, "no baseline"


def items_fingerprint(item_ids: Iterable[str]) -> str:
    """Which items a scorecard is on: equal fingerprints mean comparable numbers across runs."""
    return hashlib.sha256("\n".join(sorted(set(item_ids))).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ the gate


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    decision: str  # promoted | rejected | kept (no evidence of improvement) | no_evidence
    reasons: list[str]
    compared: list[dict]


def gate_decision(
    comparisons: pl.DataFrame,
    candidate: str,
    versus: str,
    headline: Iterable[str] = DEFAULT_HEADLINE_METRICS,
    min_improved: int = 1,
) -> GateDecision:
    """Promote `candidate` over `versus` only on evidence: no headline metric a confident regression,
    and at least `min_improved` headline metrics confidently better (over all emotions). A candidate
    better only by noise is `kept` out: "inconclusive" is the honest answer on a small set."""
    # Over every item: emotion and language 'all' (a table written before the language column: emotion only).
    every_language = (pl.col("language") == ALL) if "language" in comparisons.columns else pl.lit(True)
    rows = comparisons.filter(
        (pl.col("system") == candidate)
        & (pl.col("versus") == versus)
        & (pl.col("emotion") == ALL)
        & every_language
        & pl.col("metric").is_in(list(headline))
    )
    found = {r["metric"]: r for r in rows.iter_rows(named=True)}
    reasons, compared = [], []
    for metric in headline:
        r = found.get(metric)
        if r is None:
            reasons.append(f"{metric}: not measured for both {candidate} and {versus} (not compared)")
            continue
        compared.append(r)
        ci = (
            f"[{r['delta_ci_low']:+.4g}, {r['delta_ci_high']:+.4g}]"
            if r["delta_ci_low"] is not None
            else "no interval"
        )
        p = f"p={r['p_value']:.3g}, p_adj={r['p_adjusted']:.3g}" if r["p_adjusted"] is not None else "no test"
        flag = " REGRESSION" if r["regression"] else ""
        reasons.append(f"{metric}: delta {r['delta']:+.4g} {ci}, {p}, n={r['n']}: {r['verdict']}{flag}")
    if not compared:
        why = f"no headline metric measured for both {candidate} and {versus}: cannot decide, not promoted"
        return GateDecision(False, "no_evidence", [*reasons, why], [])
    regressions = [r["metric"] for r in compared if r["regression"]]
    improved = [r["metric"] for r in compared if r["verdict"] == "better"]
    if regressions:
        return GateDecision(
            False, "rejected", reasons + [f"confident regression on {', '.join(regressions)}"], compared
        )
    if len(improved) < min_improved:
        why = (
            f"{len(improved)} headline metric(s) confidently better, {min_improved} needed: no evidence of "
            f"improvement over {versus}, not promoted"
        )
        return GateDecision(False, "kept", [*reasons, why], compared)
    return GateDecision(
        True, "promoted", reasons + [f"confidently better on {', '.join(improved)}, no regression"], compared
    )
