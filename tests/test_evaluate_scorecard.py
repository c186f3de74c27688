"""The scorecard's statistics against scipy on fixed data, the gate's decisions on synthetic per-item
scores, the per-emotion test minimum of the splits, and the leaderboard built from whichever metric
tables exist (external predictions only, judge / alignment / retention absent)."""

import csv

import duckdb
import numpy as np
import polars as pl
import pytest
from dagster import materialize
from scipy import stats

from empathy_dag.evaluate import scorecard as sc
from empathy_dag.evaluate.metrics.diversity import diversity_scores

SETTINGS = sc.ScorecardSettings(n_resamples=2000, seed=0)


# ------------------------------------------------------------------ one sample: mean, se, interval


def test_summary_matches_scipy_bootstrap_and_sem():
    x = np.array([0.31, 0.42, 0.28, 0.55, 0.47, 0.39, 0.36, 0.51, 0.44, 0.33])
    got = sc.summarize(x, SETTINGS)
    ref = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=2000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(0),
    )
    assert got["n"] == 10 and got["value"] == pytest.approx(x.mean())
    assert got["std_error"] == pytest.approx(stats.sem(x))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(
        (ref.confidence_interval.low, ref.confidence_interval.high)
    )
    assert got["ci_low"] < x.mean() < got["ci_high"]


def test_fewer_than_two_items_report_n_and_no_interval():
    one = sc.summarize([0.7], SETTINGS)
    assert one == {
        "n": 1,
        "value": 0.7,
        "std_error": None,
        "ci_low": None,
        "ci_high": None,
        "interval_note": "fewer than 2 items: no interval",
    }
    assert sc.summarize([], SETTINGS)["n"] == 0
    equal = sc.summarize([2.0, 2.0, 2.0], SETTINGS)
    assert (equal["ci_low"], equal["ci_high"], equal["std_error"]) == (2.0, 2.0, 0.0)


def test_set_metric_statistic_equals_the_diversity_definitions():
    texts = [
        "I am so sorry to hear that.",
        "That sounds hard, I am sorry.",
        "Wow that is great news!",
        "I am so sorry to hear that.",
        "心配ですね。大丈夫ですか",
    ]
    langs = ["en", "en", "en", "en", "ja"]
    for metric in sc.SET_METRICS:
        expected = (
            0.8 * diversity_scores(texts[:4], "en")[metric] + 0.2 * diversity_scores(texts[4:], "ja")[metric]
        )
        assert float(sc.SetStatistic(metric, texts, langs)(np.arange(5))) == pytest.approx(expected, rel=1e-5)
    # a batch of resamples at once (what scipy passes when vectorized) equals one call per resample
    st = sc.SetStatistic("distinct_2", texts, langs)
    idx = np.array([[0, 0, 1, 2, 4], [3, 3, 3, 3, 3]])
    assert st(idx).tolist() == pytest.approx([float(st(idx[0])), float(st(idx[1]))])
    # a resample with repeats equals the diversity definitions on the texts it picks, for every metric
    # (the statistic sums n-gram counts as picks x counts: a repeated reply counts twice)
    for metric in sc.SET_METRICS:
        picks = [0, 0, 2, 4, 4]
        en, ja = [texts[i] for i in picks if langs[i] == "en"], [texts[i] for i in picks if langs[i] == "ja"]
        expected = 0.6 * diversity_scores(en, "en")[metric] + 0.4 * diversity_scores(ja, "ja")[metric]
        batch = sc.SetStatistic(metric, texts, langs)(np.array([picks, picks[::-1]]))
        assert batch.shape == (2,) and batch.tolist() == pytest.approx([expected, expected], rel=1e-5)


def test_set_metric_interval_contains_its_estimate_and_matches_the_sampling_spread():
    """Distinct-n of replies drawn from a Zipf vocabulary: the half-sample interval is centred on the
    estimate (a with-replacement bootstrap puts it entirely below: repeated replies repeat n-grams), its
    standard error is close to the spread over independent samples, and it covers the population value."""
    rng = np.random.default_rng(7)
    vocabulary = np.array([f"w{i}" for i in range(400)])
    weights = 1 / np.arange(1, 401) ** 1.1
    weights /= weights.sum()

    def sample(n):
        return [" ".join(rng.choice(vocabulary, size=8, p=weights)) for _ in range(n)]

    def distinct_2(texts):
        return float(sc.SetStatistic("distinct_2", texts, ["en"] * len(texts))(np.arange(len(texts))))

    n, settings = 60, sc.ScorecardSettings(n_resamples=400)
    independent = [distinct_2(sample(n)) for _ in range(60)]
    expected, spread = float(np.mean(independent)), float(np.std(independent))  # distinct-2 at this size
    covered, ratios = 0, []
    for _ in range(20):
        texts = sample(n)
        got = sc.summarize(
            (), settings, statistic=sc.SetStatistic("distinct_2", texts, ["en"] * n), data=np.arange(n)
        )
        assert got["ci_low"] <= got["value"] <= got["ci_high"]
        ratios.append(got["std_error"] / spread)
        covered += got["ci_low"] <= expected <= got["ci_high"]
    assert covered >= 16, covered  # nominal 95% of 20
    assert 0.6 < float(np.median(ratios)) < 1.6, ratios


# ------------------------------------------------------------------ paired comparisons


def test_paired_test_known_exact_p_value_and_scipy_agreement():
    # four items, all better: of the 2^4 sign patterns only all-positive and all-negative are as
    # extreme, so the exact two-sided p-value is 2/16
    x, y = np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.4, 0.4, 0.4, 0.4])
    got = sc.paired_test(x, y, SETTINGS)
    assert got["p_value"] == pytest.approx(2 / 16) and got["delta"] == pytest.approx(0.25)
    rng = np.random.default_rng(3)
    a = rng.normal(0.5, 0.1, 40)
    b = a - 0.03 + rng.normal(0, 0.05, 40)
    got = sc.paired_test(a, b, SETTINGS)
    ref = stats.permutation_test(
        (a, b),
        lambda u, v, axis: np.mean(u - v, axis=axis),
        permutation_type="samples",
        n_resamples=2000,
        random_state=np.random.default_rng(0),
    )
    boot = stats.bootstrap(
        (a, b),
        lambda u, v, axis: np.mean(u - v, axis=axis),
        paired=True,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(0),
    )
    assert got["p_value"] == pytest.approx(ref.pvalue)
    assert (got["delta_ci_low"], got["delta_ci_high"]) == pytest.approx(
        (boot.confidence_interval.low, boot.confidence_interval.high)
    )
    assert sc.paired_test(a[:1], b[:1], SETTINGS)["p_value"] is None  # one item: no test


def test_benjamini_hochberg_and_verdicts():
    rows = [
        {"metric": m, "direction": d, "delta": delta, "p_value": p, "delta_ci_low": lo, "delta_ci_high": hi}
        for m, d, delta, p, lo, hi in [
            ("bertscore_f1", 1, 0.05, 0.001, 0.02, 0.08),  # better
            ("diff_epitome_er", -1, 0.30, 0.004, 0.10, 0.50),  # lower is better: worse, a regression
            ("diff_epitome_ip", -1, 0.05, 0.06, -0.01, 0.11),  # adjusted p above alpha
            ("vader_response", 0, 0.2, None, None, None),  # descriptive
        ]
    ]
    sc.adjust_family(rows, sc.ScorecardSettings())
    adjusted = stats.false_discovery_control([0.001, 0.004, 0.06], method="bh")
    assert [r["p_adjusted"] for r in rows[:3]] == pytest.approx(list(adjusted))
    assert [r["verdict"] for r in rows] == ["better", "worse", "inconclusive", "descriptive"]
    assert [r["regression"] for r in rows] == [False, True, False, None]
    # a margin wider than the whole interval: worse, but not a regression beyond the margin
    rows[1]["regression"] = sc.is_regression(rows[1], margin=0.2)
    assert rows[1]["regression"] is False


def _long_scores(
    shifts: dict[str, float], n_per_emotion: int = 6, emotions: int = 28, noise: float = 0.05, seed: int = 0
) -> pl.DataFrame:
    """Per-item scores: every system answers the same items; a system's score is the item's difficulty
    plus its shift plus noise (so paired tests see the shift, not the item spread)."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(emotions):
        for k in range(n_per_emotion):
            difficulty = rng.normal(0.5, 0.15)
            for system, shift in shifts.items():
                for metric, sign in (
                    ("bertscore_f1", 1),
                    ("diff_epitome_er", -1),
                    ("judge_general_empathy", 1),
                ):
                    rows.append(
                        {
                            "system": system,
                            "emotion": f"e{e}",
                            "language": "en",
                            "item_id": f"e{e}-{k}",
                            "metric": metric,
                            "value": difficulty + sign * shift + rng.normal(0, noise),
                        }
                    )
    return pl.DataFrame(rows)


@pytest.mark.parametrize("shift,decision", [(0.0, "kept"), (0.05, "promoted"), (-0.05, "rejected")])
def test_gate_decides_on_paired_evidence(shift, decision):
    scores = _long_scores({"base": 0.0, "dpo": shift})
    comparisons = sc.paired_comparisons(scores, {"baseline": "base"}, SETTINGS)
    headline = ("bertscore_f1", "diff_epitome_er", "judge_general_empathy")
    got = sc.gate_decision(comparisons, "dpo", "base", headline)
    assert got.decision == decision, got.reasons
    assert got.promote == (decision == "promoted")
    assert len(got.compared) == 3 and all(r["n"] == 28 * 6 for r in got.compared)
    if decision == "kept":  # noise only: nothing confidently better, nothing a regression
        assert {r["verdict"] for r in got.compared} == {"inconclusive"}


def test_per_emotion_rows_and_intervals_over_all_items():
    scores = _long_scores({"base": 0.0, "dpo": 0.05}, n_per_emotion=1, emotions=5)
    summaries = sc.metric_summaries(scores, SETTINGS)
    per_emotion = summaries.filter(pl.col("emotion") != sc.ALL)
    assert per_emotion["ci_low"].is_null().all() and (per_emotion["n"] == 1).all()
    overall = summaries.filter(pl.col("emotion") == sc.ALL)
    assert (overall["n"] == 5).all() and overall["ci_low"].is_not_null().all()


def test_resolve_baseline():
    assert sc.resolve_baseline(["base", "dpo"], "base") == ("base", "")
    name, why = sc.resolve_baseline(["oracle", "shuffled", "baseline"], "base")
    assert name == "baseline" and "not scored" in why
    assert sc.resolve_baseline(["x", "y"], "base")[0] == "x"
    assert sc.resolve_baseline([], "base")[0] is None


# ------------------------------------------------------------------ splits: every emotion has test items


def test_min_test_dialogues_reach_every_emotion_without_moving_natural_test_rows():
    from empathy_dag.pairs.splits import assign_splits

    def frame(n, prefix="s"):
        return pl.DataFrame(
            {
                "situation_id": [f"{prefix}{i}" for i in range(n)],
                "dialogue_id": [f"{prefix}{i}-d" for i in range(n)],
                "speaker_utterance": ["turn"] * n,
                "listener_reply": ["reply"] * n,
            }
        )

    plain = assign_splits(frame(10))
    topped = assign_splits(frame(10), min_test_dialogues=3)
    assert topped.filter(pl.col("split") == "test").height >= 3
    natural = set(plain.filter(pl.col("split") == "test")["situation_id"])
    assert natural <= set(topped.filter(pl.col("split") == "test")["situation_id"])
    moved = topped.filter(pl.col("top_up"))
    # topped-up rows are those nearest the test region
    rest = topped.filter(~pl.col("top_up") & (pl.col("split") == "train"))
    assert (
        topped.filter(pl.col("split") == "validation").height
        == plain.filter(pl.col("split") == "validation").height
    )
    assert moved["split_bucket"].min() >= rest["split_bucket"].max()
    # an emotion with enough test data of its own: the minimum changes nothing
    big = assign_splits(frame(200), min_test_dialogues=3)
    assert not big["top_up"].any() and big["split"].to_list() == assign_splits(frame(200))["split"].to_list()


# ------------------------------------------------------------------ leaderboard from whichever tables exist


@pytest.mark.slow
def test_leaderboard_from_external_predictions_without_optional_metrics(resources, data_root, tmp_path):
    """Scoring someone else's predictions: external file -> items -> BERTScore and valence only (judge,
    alignment, retention, Epitome never materialized) -> scorecard -> leaderboard, no baseline configured."""
    from empathy_dag.defs.evaluate import assets as ev
    from empathy_dag.defs.evaluate.resources import EvaluationConfig
    from empathy_dag.defs.warehouse.definitions import sql_assets

    turns = [
        (
            "sadness",
            "My mum's dementia is getting worse and she didn't know me today.",
            "That must be heartbreaking, to sit with her and not be recognised.",
        ),
        (
            "joy",
            "My scan came back clear after two years of treatment!",
            "Two years of treatment and a clear scan, that is wonderful news.",
        ),
        (
            "fear",
            "They found a shadow on my lung and I wait a week for the biopsy.",
            "A week of waiting with that on your mind sounds frightening.",
        ),
        (
            "gratitude",
            "The nurse stayed late to explain my insulin pump to me.",
            "She gave you her own time so you would feel safe with it; that is real care.",
        ),
        (
            "anger",
            "The clinic cancelled my appointment for the third time.",
            "Three cancellations when you need care is infuriating.",
        ),
        ("relief", "The lump was benign.", "What a weight off after all that worry."),
    ]
    # Japanese items (language guessed from the text): a leaderboard row of their own, no BERTScore
    # without a Japanese backbone and no VADER valence (English lexicon), both left out rather than 0.
    turns += [
        (
            "sadness",
            "母の認知症が進んで、今日は私のことが分からなかったんです。",
            "お母さまに自分のことが分かってもらえないのは、本当におつらいですね。",
        ),
        (
            "joy",
            "二年間の治療のあと、検査の結果がきれいだったんです！",
            "二年間がんばってこられて、本当によかったですね。",
        ),
        (
            "fear",
            "肺に影が見つかって、生検の結果を一週間待たないといけません。",
            "その不安を抱えたまま一週間待つのは、とても怖いと思います。",
        ),
    ]
    path = tmp_path / "preds.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["system", "emotion", "context", "reference", "prediction"])
        for _i, (emotion, turn, reply) in enumerate(turns):
            w.writerow(["oracle", emotion, turn, reply, reply])
            w.writerow(["generic", emotion, turn, reply, "I see. Tell me more."])
    resources["evaluation"] = EvaluationConfig(
        systems=[],
        external_prediction_files=[str(path)],
        judge_enabled=False,
        alignment_enabled=False,
        bootstrap_resamples=500,
    )
    picked = [
        a
        for a in sql_assets
        if a.key.path[-1]
        in ("leaderboard", "leaderboard_overall", "leaderboard_history", "leaderboard_by_language")
    ]
    result = materialize(
        [
            ev.external_predictions,
            ev.evaluation_items,
            ev.metric_bertscore,
            ev.metric_valence,
            ev.scorecard_tables,
            *picked,
        ],
        resources=resources,
    )
    assert result.success
    md = result.asset_materializations_for_node("scorecard_tables")
    item_md = next(m for m in md if m.asset_key.path[-1] == "metric_item_scores").metadata
    assert {"metric_judge", "metric_alignment", "metric_retention", "metric_epitome"} <= set(
        item_md["missing_metric_tables"].value
    )
    with duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True) as db:
        board = db.execute(
            "SELECT * FROM leaderboard WHERE emotion = 'all' AND language = 'all' AND metric = 'bertscore_f1'"
        ).pl()
        by_language = db.execute("SELECT * FROM leaderboard_by_language").pl()
        bertscore_ja = db.execute("SELECT * FROM metric_bertscore WHERE language = 'ja'").pl()
        vader_ja = db.execute("SELECT vader_response FROM metric_valence WHERE language = 'ja'").pl()
        systems = db.execute("SELECT system, is_baseline FROM evaluation_systems").pl()
        history = db.execute("SELECT * FROM leaderboard_history").pl()
    # 'base' was not scored: the first system by name is the baseline, and said so
    assert dict(systems.iter_rows()) == {"generic": True, "oracle": False}
    rows = {r["system"]: r for r in board.iter_rows(named=True)}
    assert (
        rows["oracle"]["n"] == 6
        and rows["oracle"]["ci_low"] <= rows["oracle"]["value"] <= rows["oracle"]["ci_high"]
    )
    assert rows["oracle"]["delta"] > 0 and rows["oracle"]["p_value"] is not None
    assert rows["generic"]["verdict"] == "baseline" and rows["generic"]["delta"] is None
    assert set(history["system"]) == {"generic", "oracle"} and history["run_id"].n_unique() == 1
    # Japanese: scored where a metric covers it, reported per language, never on the English backbone.
    assert bertscore_ja.height == 6 and bertscore_ja["bertscore_f1"].null_count() == 6
    assert set(bertscore_ja["backbone"]) == {"not scored: no Japanese backbone"}
    bs_md = result.asset_materializations_for_node("metric_bertscore")[0].metadata
    assert bs_md["not_scored"].value == {"ja": {"items": 6, "reason": "not scored: no Japanese backbone"}}
    assert vader_ja["vader_response"].null_count() == 3 * 2
    ja = {
        (r["system"], r["metric"]): r
        for r in by_language.filter(pl.col("language") == "ja").iter_rows(named=True)
    }
    assert ja[("oracle", "distinct_2")]["n"] == 3 and ja[("generic", "distinct_2")]["n"] == 3
    assert not any(m in ("bertscore_f1", "vader_response") for _, m in ja)
    en = {
        (r["system"], r["metric"]): r
        for r in by_language.filter(pl.col("language") == "en").iter_rows(named=True)
    }
    assert en[("oracle", "bertscore_f1")]["n"] == 6
    # The demo's closing leaderboard: overall, then each language on its own.
    from empathy_dag.evaluate.report import leaderboard_text

    text = leaderboard_text(data_root / "warehouse.duckdb")
    overall, _, rest = text.partition("Language 'en' only")
    assert "bertscore_f1" in overall and "Language 'ja' only" in rest
    assert "bertscore_f1" not in rest.split("Language 'ja' only")[1]
