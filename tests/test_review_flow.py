"""The review loop end to end on the real assets: a batch goes out, two reviewers who disagree send
decisions back through the landing zone, the dialogues that reach `dataset_splits` change accordingly,
and agreement is measured (checked against krippendorff / scikit-learn called directly). A stand-in
with the keys and contract of `curated_dialogues` + `filter_report` stands for the curate stage, so no
generation runs here."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, AssetOut, Output, materialize, multi_asset

from empathy_dag.defs.partitions import emotion_partitions, single_run

EMOTIONS = ("remorse", "sadness")  # neighbours in taxonomy order: one partition range, one run
TAGS = {"dagster/asset_partition_range_start": EMOTIONS[0], "dagster/asset_partition_range_end": EMOTIONS[1]}
AUDIT = 0.5


def _dialogue(dialogue_id: str, emotion: str, origin: str, n: int) -> dict:
    return {
        "dialogue_id": dialogue_id,
        "situation_id": f"sit-{dialogue_id}",
        "emotion": emotion,
        "language": "en",
        "domain": "everyday life",
        "situation": f"Situation {n} where I felt {emotion}.",
        "speaker_utterance": f"I keep thinking about what happened, number {n}.",
        "listener_reply": f"That sounds really hard, I am here for you ({dialogue_id}).",
        "source": "synthetic" if origin == "synthetic" else "seed",
        "source_file": "synthetic:v1" if origin == "synthetic" else "seed.jsonl",
        "source_line": None if origin == "synthetic" else n,
        "origin": origin,
        "generator": "smollm2" if origin == "synthetic" else None,
    }


def curated_frame() -> pl.DataFrame:
    rows = [_dialogue(f"rem-c{i}", "remorse", "corpus", i) for i in range(1, 7)]
    rows += [_dialogue(f"rem-s{i}", "remorse", "synthetic", 10 + i) for i in range(1, 4)]
    rows += [_dialogue(f"sad-c{i}", "sadness", "corpus", 20 + i) for i in range(1, 5)]
    rows += [_dialogue(f"sad-s{i}", "sadness", "synthetic", 30 + i) for i in range(1, 3)]
    return pl.DataFrame(rows, schema={**dict.fromkeys(rows[0], pl.String), "source_line": pl.Int64})


def report_frame() -> pl.DataFrame:
    """filter_report rows as curate writes them (reasons in its wording, the dialogue kept whole)."""

    def row(i, emotion, name, reason):
        return {
            "id": i,
            "emotion": emotion,
            "origin": "synthetic",
            "filter": name,
            "reason": reason,
            "generator": "smollm2",
            "text": f"speaker turn of {i} || reply of {i}",
            "situation_id": f"sit-{i}",
            "language": "en",
            "domain": "chronic pain",
            "situation": f"Situation of {i}.",
            "speaker_utterance": f"speaker turn of {i}",
            "listener_reply": f"reply of {i}",
            "prompt_version": "v1",
        }

    return pl.DataFrame(
        [
            row("rem-f1", "remorse", "near_duplicate", "~0.83 Jaccard similar to corpus:rem-c1"),
            row("rem-f2", "remorse", "near_duplicate", "~0.97 Jaccard similar to synthetic:rem-s1"),
            row(
                "rem-f3",
                "remorse",
                "emotion_consistency",
                "classifier reads it as positive (p=0.55) but the emotion 'remorse' is negative",
            ),
            row("rem-f4", "remorse", "unsafe", "unsafe or profane term 'xxx'"),
            row("sad-f5", "sadness", "language", "language detected as 'ja', expected 'en'"),
            row(
                "sad-f6",
                "sadness",
                "emotion_consistency",
                "classifier reads it as positive (p=0.91) but the emotion 'sadness' is negative",
            ),
        ]
    )


def curate_stand_in(curated: pl.DataFrame, report: pl.DataFrame):
    """Assets with the keys and contract of the curate stage's outputs, serving fixed frames."""

    @multi_asset(
        name="curate_stand_in",
        partitions_def=emotion_partitions,
        backfill_policy=single_run,
        outs={
            "curated_dialogues": AssetOut(io_manager_key="parquet_io_manager"),
            "filter_report": AssetOut(io_manager_key="parquet_io_manager"),
        },
    )
    def _curate(context):
        keys = context.partition_keys
        yield Output(
            {e: curated.filter(pl.col("emotion") == e) for e in keys}, output_name="curated_dialogues"
        )
        yield Output({e: report.filter(pl.col("emotion") == e) for e in keys}, output_name="filter_report")

    return _curate


def table(resources: dict, name: str) -> pl.DataFrame:
    with duckdb.connect(resources["warehouse"].database, read_only=True) as conn:
        return conn.execute(f"SELECT * FROM main.{name}").pl()


def partition(resources: dict, asset: str, emotion: str) -> pl.DataFrame:
    return pl.read_parquet(Path(resources["parquet_io_manager"].base_dir) / asset / f"{emotion}.parquet")


def meta(result, node: str, output: str | None = None) -> dict:
    events = result.asset_materializations_for_node(node)
    if output:
        events = [e for e in events if e.asset_key == AssetKey(output)]
    return {k: v.value for k, v in events[0].metadata.items()}


# Two reviewers who disagree: (item, alice's decision, bob's decision); a decision is
# (decision, reason, edited_reply). Alice alone decided rem-c2.
EDIT_S1 = "I can hear how much this weighs on you; wanting to make it right says a lot about you."
EDIT_C1 = "It is clear you regret it. Would it help to talk about what you could say to them?"
VOTES = [
    ("rem-s1", ("accept", None, None), ("edit", None, EDIT_S1)),  # tie -> edit (conservative)
    ("rem-s2", ("reject", "wrong_emotion", None), ("accept", None, None)),  # tie -> reject
    ("rem-c1", ("edit", None, EDIT_C1), ("edit", None, EDIT_C1)),  # both edit the same way
    ("sad-s1", ("reject", "unsafe", None), ("accept", None, None)),  # veto
    ("sad-s2", ("accept", None, None), ("accept", None, None)),
    ("sad-c1", ("reject", "other", None), ("reject", "other", None)),  # corpus row rejected
    ("rem-f1", ("accept", None, None), ("reject", "empathetic_toxicity", None)),  # borderline, stays out
    ("rem-f3", ("accept", None, None), ("accept", None, None)),  # borderline, filter overruled
]


def write_decisions(reviews: Path) -> None:
    """alice sends JSONL, bob fills in the exported batch CSV (item columns and all)."""
    reviews.mkdir(parents=True, exist_ok=True)
    alice = [
        {"item_id": item, "reviewer": "alice", "decision": a[0], "reason": a[1], "edited_reply": a[2]}
        for item, a, _ in VOTES
    ]
    alice.append({"item_id": "rem-c2", "reviewer": "alice", "decision": "accept", "note": "fine"})
    (reviews / "alice.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alice))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["item_id", "emotion", "speaker_utterance", "reviewer", "decision", "reason", "edited_reply", "note"]
    )
    for item, _, (decision, reason, edited) in VOTES:
        w.writerow([item, "x", "text, with a comma", "bob", decision, reason or "", edited or "", ""])
    w.writerow(["rem-c3", "x", "not reviewed: decision left empty", "", "", "", "", ""])
    (reviews / "bob.csv").write_text(buf.getvalue())


def test_batch_out_decisions_in_dialogues_changed_agreement_measured(resources):
    from empathy_dag.defs.pairs.assets import dataset_splits
    from empathy_dag.defs.review.assets import (
        review_agreement,
        review_batches,
        review_decisions,
        reviewed_dialogues,
    )
    from empathy_dag.review.items import audit_draw

    curated, report = curated_frame(), report_frame()
    stand_in = curate_stand_in(curated, report)
    batch_config = {"ops": {"review_batches": {"config": {"audit_fraction": AUDIT}}}}

    # 1. A batch goes out: every synthetic row, the borderline drops, a seeded audit sample of the corpus.
    first = materialize(
        [stand_in, review_decisions, review_batches], resources=resources, tags=TAGS, run_config=batch_config
    )
    assert first.success
    m = meta(first, "review_batches")
    audit = sorted(
        i
        for i in curated.filter(pl.col("origin") == "corpus")["dialogue_id"]
        if audit_draw(i, "empathy-dag-audit-v1") < AUDIT
    )
    assert 0 < len(audit) < 10  # the sample is a sample
    assert m["per_flag"] == {"audit": len(audit), "borderline": 3, "synthetic": 5}
    folder = Path(resources["review_store"].outbox_dir) / m["batch_id"]
    jsonl = (folder / "items.jsonl").read_text()
    assert m["batch_id"] == hashlib.sha256(jsonl.encode()).hexdigest()[:16]
    items = [json.loads(line) for line in jsonl.splitlines()]
    by_id = {i["item_id"]: i for i in items}
    assert set(by_id) == {
        "rem-s1",
        "rem-s2",
        "rem-s3",
        "sad-s1",
        "sad-s2",
        "rem-f1",
        "rem-f3",
        "sad-f5",
        *audit,
    }
    for item in items:
        assert item["why_flagged"] and item["emotion"] in EMOTIONS and item["listener_reply"]
    assert by_id["rem-s1"]["situation"].startswith("Situation 11") and by_id["rem-s1"]["flag"] == "synthetic"
    assert by_id["rem-f1"]["flag"] == "borderline" and "0.83" in by_id["rem-f1"]["why_flagged"]
    assert by_id["rem-f1"]["speaker_utterance"] == "speaker turn of rem-f1"
    assert (
        by_id["rem-f1"]["situation"] == "Situation of rem-f1."
        and by_id["rem-f1"]["listener_reply"] == "reply of rem-f1"
    )
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == len(items)
    assert all(set(t) == {"data"} and t["data"]["batch_id"] == m["batch_id"] for t in tasks)
    assert {t["data"]["item_id"] for t in tasks} == set(by_id)
    rows = list(csv.DictReader((folder / "items.csv").open()))
    assert len(rows) == len(items) and {
        "item_id",
        "why_flagged",
        "decision",
        "reason",
        "edited_reply",
    } <= set(rows[0])
    frames = {e: partition(resources, "review_batches", e) for e in EMOTIONS}
    assert sum(f.height for f in frames.values()) == len(items)
    assert (frames["sadness"]["batch_id"] == m["batch_id"]).all()
    # Same content, same batch id.
    again = materialize(
        [stand_in, review_decisions, review_batches], resources=resources, tags=TAGS, run_config=batch_config
    )
    assert meta(again, "review_batches")["batch_id"] == m["batch_id"]

    # 2. Two reviewers answer; decisions flow downstream to the splits.
    landing = Path(resources["corpus_sources"].landing_dir)
    write_decisions(landing / "reviews")
    second = materialize(
        [stand_in, review_decisions, reviewed_dialogues, review_agreement, dataset_splits, review_batches],
        resources=resources,
        tags=TAGS,
        run_config=batch_config,
    )
    assert second.success
    decisions = table(resources, "review_decisions")
    assert decisions.height == 2 * len(VOTES) + 1
    assert table(resources, "review_quarantine").height == 0
    dm = meta(second, "review_decisions", "review_decisions")
    assert set(dm["file_sha256"]) == {"alice.jsonl", "bob.csv"}
    # raw decision files are archived under their sha256, like corpus files
    archive = Path(resources["corpus_sources"].archive_dir) / "reviews"
    for name, sha in dm["file_sha256"].items():
        assert (archive / sha[:2] / sha / name).is_file()

    remorse = partition(resources, "reviewed_dialogues", "remorse")
    sadness = partition(resources, "reviewed_dialogues", "sadness")
    assert remorse.columns == [*curated.columns, "review_status", "original_reply", "overruled_filter"]
    r = {row["dialogue_id"]: row for row in remorse.iter_rows(named=True)}
    original = {row["dialogue_id"]: row["listener_reply"] for row in curated.iter_rows(named=True)}
    assert r["rem-s1"]["listener_reply"] == EDIT_S1 and r["rem-s1"]["original_reply"] == original["rem-s1"]
    assert r["rem-s1"]["review_status"] == "edited"
    assert r["rem-c1"]["listener_reply"] == EDIT_C1 and r["rem-c1"]["original_reply"] == original["rem-c1"]
    assert "rem-s2" not in r  # tie between accept and reject -> reject
    assert r["rem-s3"]["review_status"] == "unreviewed"  # allowed by default
    assert r["rem-c2"]["review_status"] == "accepted" and r["rem-c2"]["original_reply"] is None
    assert (
        r["rem-c4"]["review_status"] == "unreviewed" and r["rem-c4"]["listener_reply"] == original["rem-c4"]
    )
    assert set(sadness["dialogue_id"]) == {
        "sad-c2",
        "sad-c3",
        "sad-c4",
        "sad-s2",
    }  # sad-s1 vetoed, sad-c1 rejected
    # Both reviewers overruled the emotion-consistency filter on rem-f3: it is back, whole, and says so.
    back = r["rem-f3"]
    assert (back["review_status"], back["overruled_filter"], back["origin"]) == (
        "accepted",
        "emotion_consistency",
        "synthetic",
    )
    assert (back["situation"], back["listener_reply"], back["source"]) == (
        "Situation of rem-f3.",
        "reply of rem-f3",
        "synthetic",
    )
    assert "rem-f1" not in r and "rem-f2" not in r  # a tie rejects; no decision leaves a drop dropped
    assert r["rem-s1"]["overruled_filter"] is None
    rm = meta(second, "reviewed_dialogues")
    assert rm["rejected"] == 3 and rm["edited"] == 2 and rm["filter_overruled"] == 1
    assert rm["reinstated"] == 1 and rm["not_reinstatable"] == 0
    assert set(rm["decision_files"]) == {"alice.jsonl", "bob.csv"}

    # The training data is the reviewed data.
    splits = partition(resources, "dataset_splits", "remorse")
    assert set(splits["dialogue_id"]) == set(r)
    assert splits.filter(pl.col("dialogue_id") == "rem-s1")["listener_reply"][0] == EDIT_S1
    assert AssetKey("reviewed_dialogues") in dataset_splits.dependency_keys
    assert AssetKey("review_decisions") in reviewed_dialogues.dependency_keys

    # Decided items are not exported again.
    nm = meta(second, "review_batches")
    new_batch = [
        json.loads(x)
        for x in (Path(resources["review_store"].outbox_dir) / nm["batch_id"] / "items.jsonl")
        .read_text()
        .splitlines()
    ]
    decided = {v[0] for v in VOTES} | {"rem-c2"}
    assert {i["item_id"] for i in new_batch} == set(by_id) - decided

    # 3. Agreement against the libraries called directly on the same matrix.
    import krippendorff
    from sklearn.metrics import cohen_kappa_score

    codes = {"accept": 0, "edit": 1, "reject": 2}
    items_sorted = sorted(v[0] for v in VOTES)  # the multi-reviewed items (rem-c2 has one reviewer)
    votes = {v[0]: v for v in VOTES}
    alice = [codes[votes[i][1][0]] for i in items_sorted]
    bob = [codes[votes[i][2][0]] for i in items_sorted]
    expected_alpha = krippendorff.alpha(
        reliability_data=np.array([alice, bob], dtype=float), level_of_measurement="nominal"
    )
    alphas = table(resources, "review_agreement")
    got = dict(zip(alphas["scope"], alphas["value"]))
    assert got["decision"] == pytest.approx(expected_alpha)
    for reason in ("wrong_emotion", "unsafe", "empathetic_toxicity"):
        a = [float(votes[i][1][1] == reason) for i in items_sorted]
        b = [float(votes[i][2][1] == reason) for i in items_sorted]
        assert got[reason] == pytest.approx(
            krippendorff.alpha(reliability_data=np.array([a, b]), level_of_measurement="nominal")
        )
    assert got["medical_misinformation"] is None  # nobody flagged it: undefined, not invented
    pairs = table(resources, "reviewer_pair_agreement")
    kappa = pairs.filter(pl.col("scope") == "decision").row(0, named=True)
    assert (kappa["reviewer_a"], kappa["reviewer_b"], kappa["items"]) == ("alice", "bob", len(VOTES))
    assert kappa["cohen_kappa"] == pytest.approx(cohen_kappa_score(alice, bob))
    other = pairs.filter(pl.col("scope") == "other").row(0, named=True)
    assert other["cohen_kappa"] == pytest.approx(
        cohen_kappa_score(
            [votes[i][1][1] == "other" for i in items_sorted],
            [votes[i][2][1] == "other" for i in items_sorted],
        )
    )
    rates = {row["reviewer"]: row for row in table(resources, "reviewer_acceptance").iter_rows(named=True)}
    assert rates["alice"]["decisions"] == 9 and rates["alice"]["accept_rate"] == pytest.approx(5 / 9)
    assert rates["bob"]["decisions"] == 8 and rates["bob"]["edit_rate"] == pytest.approx(2 / 8)
    am = meta(second, "review_agreement", "review_agreement")
    assert am["multi_reviewed_items"] == len(VOTES) and "data:image/png;base64" in am["acceptance_chart"]

    # 4. The switch: unreviewed synthetic dialogues held back.
    strict = materialize(
        [stand_in, review_decisions, reviewed_dialogues],
        resources=resources,
        tags=TAGS,
        selection=[reviewed_dialogues],
        run_config={"ops": {"reviewed_dialogues": {"config": {"allow_unreviewed_synthetic": False}}}},
    )
    assert strict.success
    remorse = partition(resources, "reviewed_dialogues", "remorse")
    assert "rem-s3" not in set(remorse["dialogue_id"]) and "rem-c4" in set(remorse["dialogue_id"])
    assert meta(strict, "reviewed_dialogues")["held_back_unreviewed_synthetic"] == 1
