"""Bad input gets a clear error and loses nothing: each kind of bad row or file is quarantined with its
reason, the good rows of the same file land, and the accounting balances."""

import json
from pathlib import Path

import pytest

from empathy_dag.ingest.corpus import ingest_files
from empathy_dag.ingest.records import ValidationLimits
from empathy_dag.taxonomy import default_taxonomy

TAX = default_taxonomy()


def good(i: int, **overrides) -> dict:
    row = {
        "emotion": "relief",
        "situation": f"My scan number {i} came back clear after months of worry.",
        "speaker_utterance": f"Scan {i} is clear, I can't believe it.",
        "listener_reply": "After months of worry, that must feel like putting down something heavy.",
        "domain": "cancer survivorship",
    }
    row.update(overrides)
    return row


def jl(rows) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in rows
    )


@pytest.fixture
def bad_corpus(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "landing"
    d.mkdir()
    files = {}

    def put(name: str, data: bytes) -> None:
        (d / name).write_bytes(data)
        files[name] = d / name

    put(
        "mixed_rows.jsonl",
        jl(
            [
                good(1),
                b'{"emotion": "relief", "situation": "truncated li',  # invalid_json
                b'["a", "list"]',  # not_an_object
                {"emotion": "relief", "speaker_utterance": "no situation"},  # missing_columns
                good(2, emotion="hangry"),  # unknown_emotion
                good(3, situation="   "),  # empty_text
                good(4, listener_reply="  "),  # half_dialogue
                good(5, situation="x" * 5000),  # too_long
                good(6, situation=12345),  # wrong_type
                good(7, listener_reply="bell \u0007 inside"),  # control_characters
                good(8, language="fr"),  # unknown_language
                good(9, situation="a"),  # too_short
                good(10, emotion=""),  # empty_emotion
                good(1),  # duplicate_id (same file)
                good(11),
            ]
        ),
    )
    put(
        "latin1_line.jsonl",
        jl([good(20), '{"emotion": "joy", "situation": "Caf\xe9 visit after chemo"}'.encode("latin-1")]),
    )
    put("again.jsonl", jl([good(11), good(21)]))  # duplicate across files
    put("no_situation_column.csv", b"emotion,text\njoy,hello there\n")  # file: missing_columns
    put("ragged.csv", b"emotion,situation\njoy,My sugar readings were perfect all week.\njoy,a,b,c\n")
    put("image.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))  # binary_file
    put("empty.jsonl", b"")  # empty_file
    put("sheet.xlsx", b"PK\x03\x04 not really a workbook")  # unsupported_format
    put("huge.jsonl", jl([good(100 + i) for i in range(3000)]))  # file_too_large (limit below)
    put("utf16.jsonl", jl([good(30)]).decode().encode("utf-16"))  # decodes: lands
    return files


def test_every_bad_kind_is_quarantined_and_good_rows_land(bad_corpus, tmp_path):
    archive = tmp_path / "raw"
    limits = ValidationLimits(max_file_mb=0.5)
    result = ingest_files(sorted(bad_corpus.values()), taxonomy=TAX, limits=limits, archive_dir=archive)
    q = result.quarantine
    reasons = set(q["reason_code"])
    expected = {
        "invalid_json",
        "not_an_object",
        "missing_columns",
        "unknown_emotion",
        "empty_text",
        "half_dialogue",
        "too_long",
        "wrong_type",
        "control_characters",
        "unknown_language",
        "too_short",
        "empty_emotion",
        "duplicate_id",
        "bad_encoding",
        "wrong_field_count",
        "binary_file",
        "empty_file",
        "unsupported_format",
        "file_too_large",
    }
    assert expected <= reasons, expected - reasons
    assert len(expected) >= 15

    # good rows of the mixed files still land, once
    landed = set(result.corpus["situation"])
    for i in (1, 11, 20, 21, 30):
        assert good(i)["situation"] in landed
    assert "My sugar readings were perfect all week." in landed
    assert (
        result.corpus["dialogue_id"].drop_nulls().n_unique()
        == result.corpus["dialogue_id"].drop_nulls().len()
    )

    # accounting balances for every file; whole-file rejections carry no line number
    for outcome in result.outcomes:
        assert outcome.balanced, outcome.file
    whole = q.filter(q["line"].is_null())
    assert set(whole["reason_code"]) == {
        "missing_columns",
        "binary_file",
        "empty_file",
        "unsupported_format",
        "file_too_large",
    }
    # reasons say what to do, and point at the row
    too_large = whole.filter(whole["reason_code"] == "file_too_large")["reason"][0]
    assert "MB" in too_large and "max_file_mb" in too_large
    dup = q.filter(q["reason_code"] == "duplicate_id")
    assert dup.height == 2 and all("duplicate of the row at" in r for r in dup["reason"])
    assert all(line is not None and line > 0 for line in q.filter(q["line"].is_not_null())["line"])

    # the raw files are kept, content-addressed, whatever validation said
    archived = {p.name for p in archive.rglob("*") if p.is_file()}
    assert set(bad_corpus) <= archived


def test_unterminated_quote_loses_only_its_record(tmp_path):
    """An opening quote that never closes used to reject the whole file; now it is one bad record and
    the rows after it still land."""
    path = tmp_path / "broken.csv"
    path.write_bytes(
        b'emotion,situation\njoy,"never closed quote\njoy,My sugar readings were perfect all week.\n'
    )
    result = ingest_files([path], taxonomy=TAX)
    q = result.quarantine.to_dicts()
    assert result.corpus["situation"].to_list() == ["My sugar readings were perfect all week."]
    assert len(q) == 1 and q[0]["line"] == 2 and q[0]["reason_code"] == "csv_error"
    assert "line 2" in q[0]["reason"] and q[0]["file"].endswith("broken.csv")
    assert result.outcomes[0].balanced


def test_columnar_corpus_frame_equals_the_per_row_dict_frame(tmp_path):
    """The corpus frame is built column by column (issue 24); the former per-row `asdict` frame is the
    oracle, over rows with and without dialogues, a duplicate and a bad row."""
    import polars as pl

    from empathy_dag.ingest.corpus import CORPUS_POLARS_SCHEMA
    from empathy_dag.ingest.records import normalize_text

    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        jl(
            [
                good(1),
                good(2, speaker_utterance=None, listener_reply=None),
                good(1),
                {"emotion": "hangry", "situation": "not a label"},
                good(3, domain=None, language="en"),
            ]
        )
    )
    result = ingest_files([path], taxonomy=TAX)
    oracle = pl.DataFrame(
        [r.as_dict() for o in result.outcomes for r in o.records], schema=CORPUS_POLARS_SCHEMA, orient="row"
    )
    assert result.corpus.height == 3 and result.corpus.equals(oracle)
    assert result.corpus.schema == pl.Schema(CORPUS_POLARS_SCHEMA)
    for text in ("  a\u200b b\u202e c  ", "e\u0301", "x\n\ty"):  # the memoised form is the function's
        assert normalize_text(text) == normalize_text.__wrapped__(text)
