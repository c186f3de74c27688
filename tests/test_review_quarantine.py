"""Bad review decision files are quarantined with reasons, like any other input: each kind of problem,
through the real `review_decisions` asset, with the raw files archived and the accounting balanced."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from dagster import materialize

from tests.test_review_flow import TAGS, curate_stand_in, curated_frame, meta, report_frame, table


def _jsonl(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def test_bad_decision_files_are_quarantined_with_reasons(resources):
    from empathy_dag.defs.review.assets import review_decisions

    reviews = Path(resources["corpus_sources"].landing_dir) / "reviews"
    reviews.mkdir(parents=True)
    ok = {"item_id": "rem-s1", "reviewer": "carol", "decision": "accept"}
    (reviews / "carol.jsonl").write_text(
        _jsonl(
            [
                ok,  # line 1: good
                "{not json",  # 2 invalid_json
                "[1, 2]",  # 3 not_an_object
                {"item_id": "no-such-item", "reviewer": "carol", "decision": "accept"},  # 4 unknown_item
                {"item_id": "rem-s2", "reviewer": "carol", "decision": "maybe"},  # 5 bad_label
                {
                    "item_id": "rem-s3",
                    "reviewer": "carol",
                    "decision": "reject",
                    "reason": "rude",
                },  # 6 bad_label
                {"item_id": "sad-s1", "reviewer": "carol", "decision": "reject"},  # 7 missing_reason
                {"item_id": "sad-s2", "reviewer": "carol", "decision": "edit"},  # 8 missing_edited_reply
                {"item_id": "rem-c1", "decision": "accept"},  # 9 missing_field
                {
                    "item_id": "rem-f1",
                    "reviewer": "carol",
                    "decision": "Reject",
                    "reason": "Unsafe",
                },  # 10 good (case)
            ]
        )
    )
    # dave contradicts himself across two files (conflict) and repeats one decision verbatim (kept once)
    (reviews / "dave_1.jsonl").write_text(
        _jsonl(
            [
                {"item_id": "rem-c2", "reviewer": "dave", "decision": "accept"},
                {"item_id": "rem-c3", "reviewer": "dave", "decision": "accept"},
            ]
        )
    )
    (reviews / "dave_2.csv").write_text(
        "item_id,reviewer,decision,reason,edited_reply\n"
        "rem-c2,dave,reject,other,\n"
        "rem-c3,dave,accept,,\n"
        "rem-c4,dave,accept\n"  # wrong_field_count
    )
    (reviews / "empty.jsonl").write_bytes(b"")
    (reviews / "header_only.csv").write_text("item_id,reviewer,decision\n")
    (reviews / "no_decision_column.csv").write_text("item_id,reviewer\nrem-c1,erin\n")
    (reviews / "notes.txt").write_text("looked fine to me")
    (reviews / "partial.jsonl.part").write_text("still being copied")  # ignored until complete

    stand_in = curate_stand_in(curated_frame(), report_frame())
    result = materialize([stand_in, review_decisions], resources=resources, tags=TAGS)
    assert result.success

    decisions = table(resources, "review_decisions")
    assert sorted(zip(decisions["reviewer"], decisions["item_id"], decisions["decision"])) == [
        ("carol", "rem-f1", "reject"),
        ("carol", "rem-s1", "accept"),
        ("dave", "rem-c3", "accept"),
    ]
    assert decisions.filter(pl.col("item_id") == "rem-f1")["reason"][0] == "unsafe"
    assert not decisions.filter(pl.col("item_id") == "rem-f1")["item_in_training_data"][0]

    quarantine = table(resources, "review_quarantine")
    by_file = {Path(f).name: part for (f,), part in quarantine.group_by("file")}
    carol = dict(zip(by_file["carol.jsonl"]["line"], by_file["carol.jsonl"]["reason_code"]))
    assert carol == {
        2: "invalid_json",
        3: "not_an_object",
        4: "unknown_item",
        5: "bad_label",
        6: "bad_label",
        7: "missing_reason",
        8: "missing_edited_reply",
        9: "missing_field",
    }
    conflicts = quarantine.filter(pl.col("reason_code") == "conflicting_duplicate")
    assert sorted(Path(f).name for f in conflicts["file"]) == ["dave_1.jsonl", "dave_2.csv"]
    assert all("rem-c2" in r for r in conflicts["reason"])
    assert (
        dict(zip(by_file["dave_2.csv"]["line"], by_file["dave_2.csv"]["reason_code"]))[4]
        == "wrong_field_count"
    )
    whole = quarantine.filter(pl.col("line").is_null())
    assert dict(zip((Path(f).name for f in whole["file"]), whole["reason_code"])) == {
        "empty.jsonl": "empty_file",
        "header_only.csv": "empty_file",
        "no_decision_column.csv": "missing_columns",
        "notes.txt": "unsupported_format",
    }
    assert "partial.jsonl.part" not in by_file

    m = meta(result, "review_decisions", "review_decisions")
    assert set(m["file_sha256"]) == {
        "carol.jsonl",
        "dave_1.jsonl",
        "dave_2.csv",
        "empty.jsonl",
        "header_only.csv",
        "no_decision_column.csv",
        "notes.txt",
    }
    archive = Path(resources["corpus_sources"].archive_dir) / "reviews"
    for name, sha in m["file_sha256"].items():
        assert (archive / sha[:2] / sha / name).is_file(), name
    qm = meta(result, "review_decisions", "review_quarantine")
    assert qm["reasons"]["conflicting_duplicate"] == 2 and qm["reasons"]["bad_label"] == 2

    # Fixing the files empties the quarantine: the tables are snapshots, not logs.
    for path in reviews.iterdir():
        path.unlink()
    (reviews / "carol.jsonl").write_text(_jsonl([ok]))
    assert materialize([stand_in, review_decisions], resources=resources, tags=TAGS).success
    assert table(resources, "review_quarantine").height == 0
    assert table(resources, "review_decisions").height == 1
