"""The generated bad-input corpus (tests/fixtures/bad_input_corpus.py, 50+ kinds) in one landing zone:
zero crashes, zero good rows lost, every bad row quarantined with its reason, every file accounted for
in the ingest file log, and the landing sensor's scan over the same zone decides every path."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from empathy_dag.ingest.corpus import ingest_files
from empathy_dag.ingest.landing import LandingCursor, LocalLandingZone, scan_landing_zone
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
    decisions, cursor = scan_landing_zone(
        LocalLandingZone(landing), LandingCursor(), taxonomy=TAX, limits=LIMITS
    )
    outcomes = {d.file.name: d.outcome for d in decisions}
    expected = {printable_name(k): v for k, v in every(kinds, "status").items()}
    assert set(outcomes) == set(expected)
    assert "error" not in outcomes.values()
    for name, status in expected.items():
        want = {
            "ingested": {"accepted", "duplicate_content", "rejected"},
            "rejected": {"rejected"},
            "skipped": {"skipped"},
            "refused": {"refused"},
        }[status]
        assert outcomes[name] in want, (name, outcomes[name])
    # A second scan from the cursor has nothing to say: every path was logged once.
    again, _ = scan_landing_zone(LocalLandingZone(landing), cursor, taxonomy=TAX, limits=LIMITS)
    assert again == []
    assert os.path.islink(landing / "links" / "secret.jsonl")


def test_ingest_asset_and_landing_tick_on_the_corpus(resources, data_root, tmp_path):
    """The same corpus through Dagster: ingest_corpus materializes (Parquet and DuckDB accept every name
    and row), and a real landing-sensor tick decides every path and logs it, without raising."""
    import duckdb
    import polars as pl
    from dagster import DagsterInstance, materialize

    from empathy_dag.defs.ingest.assets import emotion_taxonomy, ingest_corpus
    from empathy_dag.defs.ingest.sensors import build_landing_sensor
    from empathy_dag.resources import CorpusSources
    from empathy_dag.settings import AutomationSettings
    from empathy_dag.warehouse.tables import read_table
    from tests.test_automation_landing import _tick as landing_tick

    landing = data_root / "landing"
    kinds = write_corpus(landing, tmp_path / "outside")
    base = resources["corpus_sources"]
    sources = CorpusSources(
        seed_dir=base.seed_dir,
        landing_dir=str(landing),
        archive_dir=base.archive_dir,
        max_file_mb=MAX_FILE_MB,
    )
    run_resources = {**resources, "corpus_sources": sources}
    result = materialize(
        [emotion_taxonomy, ingest_corpus], resources=run_resources, instance=DagsterInstance.ephemeral()
    )
    assert result.success
    corpus = pl.read_parquet(data_root / "parquet" / "corpus_rows.parquet")
    landed = set(corpus.filter(pl.col("source_file").str.contains("/landing/"))["situation"])
    assert landed == {t for k in kinds for t in k.good}
    with duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True) as conn:
        q = conn.execute("select reason_code, count(*) from main.quarantine group by 1").fetchall()
        log = conn.execute("select status, count(*) from main.ingest_file_log group by 1").pl()
    expected_rows = sum(n for per_file in every(kinds, "quarantined").values() for n in per_file.values())
    assert sum(n for _, n in q) == expected_rows and not {c for c, _ in q} & CATCH_ALL
    assert dict(log.iter_rows())["refused"] == 4

    sensor = build_landing_sensor(AutomationSettings(settle_seconds=0))
    with DagsterInstance.ephemeral() as instance:
        requests, _ = landing_tick(sensor, instance, run_resources)
    with run_resources["warehouse"].connect() as conn:
        landing_log = read_table(conn, "landing_log")
    assert set(landing_log["file"]) == {printable_name(k) for k in every(kinds, "status")}
    assert "error" not in set(landing_log["outcome"])
    assert requests and all(r.run_key for r in requests)
