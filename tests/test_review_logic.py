"""The review stage's pure functions: agreement on a case small enough to check by hand, the consensus
rules, the borderline rule and the audit sample."""

from __future__ import annotations

import polars as pl
import pytest

from empathy_dag.review.agreement import acceptance_rates, alpha_table, pair_table
from empathy_dag.review.consensus import apply_review, consensus, consensus_frame
from empathy_dag.review.decisions import DECISION_SCHEMA
from empathy_dag.review.items import BatchRules, audit_draw, borderline_reason


def _decisions(rows) -> pl.DataFrame:
    full = [
        {
            "item_id": i,
            "emotion": "joy",
            "reviewer": r,
            "decision": d,
            "reason": reason,
            "edited_reply": e,
            "note": None,
            "item_in_training_data": True,
            "file": f"{r}.jsonl",
            "file_sha256": r,
            "line": n,
        }
        for n, (i, r, d, reason, e) in enumerate(rows, start=1)
    ]
    return pl.DataFrame(full, schema=DECISION_SCHEMA)


def test_agreement_on_a_hand_checked_case():
    # Two reviewers, four items: A = accept accept reject reject, B = accept reject reject reject.
    # Kappa: p_o = 3/4, p_e = .5*.25 + .5*.75 = .5 -> (.75 - .5) / .5 = 0.5.
    # Alpha (nominal): coincidences o_aa = 2, o_ar = o_ra = 1, o_rr = 4; n_a = 3, n_r = 5, n = 8;
    # D_o = 2/8, D_e = 2*3*5 / (8*7) = 30/56 -> alpha = 1 - (1/4) / (30/56) = 8/15.
    a = ["accept", "accept", "reject", "reject"]
    b = ["accept", "reject", "reject", "reject"]
    rows = [(f"i{k}", "A", d, "other" if d == "reject" else None, None) for k, d in enumerate(a)]
    rows += [(f"i{k}", "B", d, "other" if d == "reject" else None, None) for k, d in enumerate(b)]
    rows.append(("i9", "A", "accept", None, None))  # one reviewer only: not in the agreement figures
    decisions = _decisions(rows)
    alphas = dict(zip(*alpha_table(decisions).select("scope", "value").to_dict(as_series=False).values()))
    assert alphas["decision"] == pytest.approx(8 / 15)
    assert alphas["other"] == pytest.approx(8 / 15)  # "other" is flagged exactly on the rejects
    assert alphas["unsafe"] is None  # never flagged: undefined
    pair = pair_table(decisions).filter(pl.col("scope") == "decision").row(0, named=True)
    assert pair["items"] == 4 and pair["cohen_kappa"] == pytest.approx(0.5)
    assert pair["observed_agreement"] == pytest.approx(0.75)
    rates = {r["reviewer"]: r for r in acceptance_rates(decisions).iter_rows(named=True)}
    assert rates["A"]["decisions"] == 5 and rates["A"]["accept_rate"] == pytest.approx(3 / 5)
    assert rates["B"]["reject_rate"] == pytest.approx(3 / 4)


def test_consensus_rules():
    v = lambda r, d, reason=None, e=None: {"reviewer": r, "decision": d, "reason": reason, "edited_reply": e}
    # veto: one unsafe reject outweighs two accepts
    assert (
        consensus("x", [v("a", "accept"), v("b", "accept"), v("c", "reject", "unsafe")]).outcome == "reject"
    )
    # without a veto reason the majority wins
    c = consensus("x", [v("a", "accept"), v("b", "accept"), v("c", "reject", "wrong_emotion")])
    assert (c.outcome, c.rule) == ("accept", "majority")
    # ties go to the more conservative outcome
    assert consensus("x", [v("a", "accept"), v("b", "edit", e="new")]).edited_reply == "new"
    assert consensus("x", [v("a", "edit", e="new"), v("b", "reject", "other")]).rule == "tie->conservative"
    # the edit most reviewers wrote; a tie between edits takes the first reviewer's
    c = consensus("x", [v("c", "edit", e="two"), v("a", "edit", e="one"), v("b", "edit", e="two")])
    assert c.edited_reply == "two"
    assert consensus("x", [v("b", "edit", e="bee"), v("a", "edit", e="ay")]).edited_reply == "ay"
    # veto reasons are configurable
    votes = [v("a", "accept"), v("b", "accept"), v("c", "reject", "unsafe")]
    assert consensus("x", votes, veto_reasons=()).outcome == "accept"


def test_apply_review_keeps_columns_and_original_reply():
    curated = pl.DataFrame(
        {
            "dialogue_id": ["a", "b", "c", "d"],
            "emotion": ["joy"] * 4,
            "listener_reply": ["ra", "rb", "rc", "rd"],
            "origin": ["corpus", "synthetic", "synthetic", "corpus"],
            "generator": [None, "m", "m", None],
        }
    )
    decisions = _decisions([("a", "R", "edit", None, "new a"), ("b", "R", "reject", "other", None)])
    result = apply_review(curated, consensus_frame(decisions), allow_unreviewed_synthetic=True)
    assert result.frame.columns == [*curated.columns, "review_status", "original_reply", "overruled_filter"]
    assert result.frame.rows() == [
        ("a", "joy", "new a", "corpus", None, "edited", "ra", None),
        ("c", "joy", "rc", "synthetic", "m", "unreviewed", None, None),
        ("d", "joy", "rd", "corpus", None, "unreviewed", None, None),
    ]
    strict = apply_review(curated, consensus_frame(decisions), allow_unreviewed_synthetic=False)
    assert strict.frame["dialogue_id"].to_list() == ["a", "d"]
    assert strict.counts["held_back_unreviewed_synthetic"] == 1 and strict.counts["rejected"] == 1


def test_apply_review_reinstates_filtered_rows_people_accepted():
    from empathy_dag.defs.curate.assets import filtered_as_dialogues

    curated = pl.DataFrame(
        {
            "dialogue_id": ["a"],
            "situation_id": ["sa"],
            "emotion": ["joy"],
            "language": ["en"],
            "domain": ["x"],
            "situation": ["s"],
            "speaker_utterance": ["u"],
            "listener_reply": ["ra"],
            "source": ["seed"],
            "source_file": ["f"],
            "source_line": [1],
            "origin": ["corpus"],
            "generator": [None],
        },
        schema_overrides={"generator": pl.String},
    )
    report = pl.DataFrame(
        [
            {
                "id": i,
                "emotion": "joy",
                "origin": "synthetic",
                "filter": f,
                "reason": "r",
                "generator": "m",
                "text": f"u{i} || r{i}",
                "situation_id": f"s{i}",
                "language": "en",
                "domain": "x",
                "situation": f"sit {i}",
                "speaker_utterance": f"u{i}",
                "listener_reply": f"r{i}",
                "prompt_version": "v1",
            }
            for i, f in [
                ("f1", "near_duplicate"),
                ("f2", "language"),
                ("f3", "emotion_consistency"),
                ("a", "near_duplicate"),
            ]
        ]
    )
    dropped = filtered_as_dialogues(report, dict(curated.schema))
    assert (
        dropped.columns == [*curated.columns, "filter"] and dropped["source"].to_list() == ["synthetic"] * 4
    )
    decisions = _decisions(
        [
            ("f1", "R", "accept", None, None),
            ("f2", "R", "edit", None, "better"),
            ("f3", "R", "reject", "other", None),
            ("a", "R", "accept", None, None),
        ]
    )
    result = apply_review(curated, consensus_frame(decisions), filtered=dropped)
    rows = {r["dialogue_id"]: r for r in result.frame.iter_rows(named=True)}
    assert set(rows) == {"a", "f1", "f2"}  # f3 rejected; "a" is not added twice
    assert (rows["f1"]["review_status"], rows["f1"]["overruled_filter"]) == ("accepted", "near_duplicate")
    assert (rows["f2"]["listener_reply"], rows["f2"]["original_reply"], rows["f2"]["overruled_filter"]) == (
        "better",
        "rf2",
        "language",
    )
    assert rows["a"]["overruled_filter"] is None and rows["a"]["listener_reply"] == "ra"
    assert result.counts["reinstated"] == 2 and result.counts["out"] == 3
    # A report from before curate-v3 (no dialogue fields) reinstates nothing.
    old = report.select("id", "emotion", "origin", "filter", "reason", "generator", "text")
    assert filtered_as_dialogues(old, dict(curated.schema)).height == 0


def test_borderline_rule_and_audit_sample():
    rules = BatchRules()
    assert borderline_reason("near_duplicate", "~0.85 Jaccard similar to corpus:x", rules)
    assert borderline_reason("near_duplicate", "~0.95 Jaccard similar to corpus:x", rules) is None
    assert borderline_reason("emotion_consistency", "classifier reads it as positive (p=0.62) but", rules)
    assert (
        borderline_reason("emotion_consistency", "classifier reads it as positive (p=0.93) but", rules)
        is None
    )
    assert borderline_reason("language", "language detected as 'ja', expected 'en'", rules)
    for hard in ("empty", "length", "refusal", "prompt_echo", "unsafe", "exact_duplicate"):
        assert borderline_reason(hard, "anything", rules) is None
    draws = [audit_draw(f"id{i}", "seed") for i in range(2000)]
    assert all(0 <= d < 1 for d in draws)
    assert sum(d < 0.1 for d in draws) / len(draws) == pytest.approx(0.1, abs=0.02)
    assert audit_draw("id1", "seed") == draws[1] and audit_draw("id1", "other") != draws[1]
