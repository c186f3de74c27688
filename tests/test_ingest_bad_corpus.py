"""The generated bad-input corpus (tests/fixtures/bad_input_corpus.py, 50+ kinds) in one landing zone:
zero crashes, zero good rows lost, every bad row quarantined with its reason, every file accounted for
in the ingest file log, and the landing sensor's scan over the same zone decides every path."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from empathy_dag.automation.landing import LandingCursor, LocalLandingZone, scan_landing_zone
from empathy_dag.ingest.corpus import ingest_files
from empathy_dag.ingest.records import ValidationLimits
from empathy_dag.ingest.sources import list_landing_folder, printable_name
from empathy_dag.taxonomy import default_taxonomy
from tests.fixtures.bad_input_corpus import MAX_FILE_MB, every, write_corpus

TAX = default_taxonomy()
LIMITS = ValidationLimits(max_file_mb=MAX_FILE_MB)
# Reason codes of the catch-alls: each means an input reached a path nobody wrote a rule for.
CATCH_ALL = {"reader_error", "ingest_error", "validation_error", "accounting_error", "read_error"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_corpus")
    landing = root / "landing"
    kinds = write_corpus(landing, root / "outside")
    files, skipped = list_landing_folder(landing, exclude_subfolders=("reviews",))
    result = ingest_files(files, taxonomy=TAX, limits=LIMITS, archive_dir=root / "raw", skipped=skipped)
    return landing, kinds, result


def _rel(landing: Path, file: str) -> str:
    prefix = printable_name(str(landing)) + "/"
    return file.removeprefix(prefix)


def test_corpus_has_at_least_50_kinds(corpus):
    _, kinds, _ = corpus
    assert len(kinds) >= 50
    assert len({k.name for k in kinds}) == len(kinds)


def test_every_good_row_lands_once_and_nothing_else(corpus):
    _, kinds, result = corpus
    landed = Counter(result.corpus["situation"].to_list())
    for kind in kinds:
        for text in kind.good:
            assert landed[text] == 1, (kind.name, text[:80])
        for text in kind.never:
            assert not any(text in s for s in landed), kind.name
    assert sum(landed.values()) == sum(len(k.good) for k in kinds)


def test_every_bad_row_is_quarantined_with_its_reason(corpus):
    landing, kinds, result = corpus
    q = result.quarantine
    assert not set(q["reason_code"]) & CATCH_ALL, q.filter(q["reason_code"].is_in(list(CATCH_ALL))).to_dicts()
    got: dict[str, Counter] = {}
    for r in q.iter_rows(named=True):
        got.setdefault(_rel(landing, r["file"]), Counter())[r["reason_code"]] += 1
        assert r["reason"], r
        # Names and rows are printable and encodable: they went into Parquet / DuckDB as they are.
        assert r["file"].isprintable() and r["reason"].encode("utf-8")
    expected = {printable_name(k): v for k, v in every(kinds, "quarantined").items()}
    assert {k: dict(v) for k, v in got.items()} == expected
    for r in q.filter(q["line"].is_not_null()).iter_rows(named=True):
        assert r["line"] > 0
    # The row after a U+2028 line separator keeps its line number (JSON Lines split on \n only).
    sep = q.filter(q["file"].str.ends_with("unicode_line_separator.jsonl"))
    assert sep["line"].to_list() == [3]


def test_every_file_is_accounted_for(corpus):
    landing, kinds, result = corpus
    log = result.summary()
    status = {_rel(landing, f): s for f, s in zip(log["file"], log["status"])}
    expected = {printable_name(k): v for k, v in every(kinds, "status").items()}
    assert status == expected
    assert all(log["balanced"])
    # Reasons name the file in a printable form, never the raw bytes of its name.
    names = set(log["file"])
    assert any("\\xff" in n for n in names) and any("\\u202e" in n for n in names)
    assert all(n.isprintable() for n in names)


def test_landing_scan_decides_every_path_without_raising(corpus):
    landing, kinds, _ = corpus
    decisions, cursor = scan_landing_zone(LocalLandingZone(landing), LandingCursor(), taxonomy=TAX, limits=LIMITS)
    outcomes = {d.file.name: d.outcome for d in decisions}
    expected = {printable_name(k): v for k, v in every(kinds, "status").items()}
    assert set(outcomes) == set(expected)
    assert "error" not in outcomes.values()
    for name, status in expected.items():
        want = {"ingested": {"accepted", "duplicate_content", "rejected"}, "rejected": {"rejected"},
                "skipped": {"skipped"}, "refused": {"refused"}}[status]
        assert outcomes[name] in want, (name, outcomes[name])
    # A second scan from the cursor has nothing to say: every path was logged once.
    again, _ = scan_landing_zone(LocalLandingZone(landing), cursor, taxonomy=TAX, limits=LIMITS)
    assert again == []
    assert os.path.islink(landing / "links" / "secret.jsonl")
