"""The columnar validator (polars expressions over the whole file, issue 24 item 3) against the row-wise
reference on hostile input: same good rows (byte for byte), same quarantined rows, same reasons and
messages, same order, same skips and counts, same ids handed to the next file."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import polars as pl
import pytest

from empathy_dag.ingest import columnar
from empathy_dag.ingest.corpus import ingest_files, source_name, stream_format, validate_bytes
from empathy_dag.ingest.readers import READERS, sniff_format
from empathy_dag.ingest.records import (
    CHAT_CONTROL_TOKENS,
    FileRejected,
    RawRow,
    ValidationLimits,
    validate_rows_rowwise,
)
from empathy_dag.ingest.sources import list_landing_folder, printable_name
from empathy_dag.taxonomy import default_taxonomy
from tests.fixtures.bad_input_corpus import MAX_FILE_MB, write_corpus

TAX = default_taxonomy()


@pytest.fixture(autouse=True)
def no_fallback(request, monkeypatch):
    """The comparisons must compare the columnar path, not the row-wise fallback standing in for it."""
    if "fallback" in request.node.name:
        return

    def refuse(*a, **k):
        raise AssertionError("the columnar validator fell back to the row-wise one")

    monkeypatch.setattr(columnar, "validate_rows_rowwise", refuse)


def _both(rows: list[RawRow], limits: ValidationLimits, seen: tuple[dict, dict], name: str = "f.jsonl"):
    kw = {"file": name, "file_sha256": "sha", "source": "src", "taxonomy": TAX, "limits": limits}
    new = columnar.validate_rows(rows, seen_ids=seen[0], **kw)
    old = validate_rows_rowwise(rows, seen_ids=seen[1], **kw)
    return new, old


def assert_same(new, old, where: str) -> None:
    assert [q.as_dict() for q in new.quarantined] == [q.as_dict() for q in old.quarantined], where
    assert new.frame.schema == old.frame.schema, where
    assert new.frame.equals(old.frame), (where, new.frame.to_dicts()[:3], old.frame.to_dicts()[:3])
    assert (new.skipped, new.normalised, new.rows_in) == (old.skipped, old.normalised, old.rows_in), where


def _rows(data: bytes, name: str) -> list[RawRow] | None:
    try:
        return READERS[sniff_format(Path(name), data)](data, printable_name(Path(name).name))
    except FileRejected:
        return None


def test_bad_input_corpus_same_outcome_as_rowwise(tmp_path):
    landing = tmp_path / "landing"
    write_corpus(landing, tmp_path / "outside")
    files, _ = list_landing_folder(landing, exclude_subfolders=("reviews",))
    limits = ValidationLimits(max_file_mb=MAX_FILE_MB)
    seen: tuple[dict, dict] = ({}, {})
    compared = 0
    for path in files:
        data = path.read_bytes()
        rows = _rows(data, str(path))
        if rows is None:
            continue
        new, old = _both(rows, limits, seen, printable_name(str(path)))
        assert_same(new, old, str(path))
        compared += 1
    assert seen[0] == seen[1]
    assert compared >= 30


def _hostile_rows() -> list[dict | bytes]:
    base = {
        "emotion": "relief",
        "situation": "The biopsy came back benign this morning.",
        "speaker_utterance": "It was benign!",
        "listener_reply": "What a weight off your shoulders.",
        "domain": "oncology",
    }
    out: list = []

    def add(**kw):
        row = {**base, "situation": f"{base['situation']} ({len(out)})", **kw}
        out.append({k: v for k, v in row.items() if v is not ...})

    for field in (
        "emotion",
        "situation",
        "speaker_utterance",
        "listener_reply",
        "language",
        "domain",
        "source",
    ):
        for value in (
            12,
            1.5,
            True,
            ["a", "list"],
            {"a": 1},
            None,
            "",
            "   ",
            "\u3000\u2028",
            "\x1c\x1d",
            "\x00nul",
            "bell\x07",
            "repl\ufffdchar",
            "x" * 201,
            ...,
        ):
            add(**{field: value})
    for text in (
        "a",
        "ab",
        "  ab  ",
        "a\u200bb",
        "x" * 2000,
        "x" * 2001,
        "e\u0301 accent",
        "\uff21\uff22\uff23 wide",
        "tab\tand\nnewline\r\n",
        "nbsp\xa0here\u2003em",
        "rtl \u202eevil\u202c text",
        "soft\xadhyphen",
        "zwj \u200d emoji \U0001f469\u200d\U0001f4bb",
        "\u0130stanbul \u03a3\u0391\u03a3",
        "\x85next line",
        "ﬁ ligature and \u2167",
        "\ufeffbom inside",
    ):
        add(situation=text)
        add(speaker_utterance=text, listener_reply=text)
        add(domain=text, source=text)
    for token in (
        *CHAT_CONTROL_TOKENS,
        "<|eot_id|>",
        "[INST]",
        "[/INST]",
        "<<SYS>>",
        "</s>",
        "<s>",
        "<<|im_end|>|>",
        "<| spaced|>",
        "<|\u3000x|>",
        "<|" + "a" * 65 + "|>",
        "<|im_start|><|im_end|>",
    ):
        add(situation=f"my notes said {token} there", domain=f"d {token}", speaker_utterance=f"s {token}")
    for label in ("RELIEF", " relief ", "terrified", "Terrified", "hangry", "İ", "\u00a0joy", "joy\u2028"):
        add(emotion=label)
    for lang in ("en", "EN ", "ja", " ", "fr", "\u0130N", "xx"):
        add(language=lang)
    add(language=...)  # absent: detected
    add(situation="検査の結果を一週間ずっと待っていて、落ち着きません。", language=...)
    add(situation="Llevo toda la semana esperando los resultados de la biopsia.", language=...)
    add(speaker_utterance="   ", listener_reply="   ")  # blank pair: no dialogue, speaker kept for detection
    add(speaker_utterance=..., listener_reply=...)
    add(speaker_utterance="only one side", listener_reply=...)
    add(situation=..., emotion=...)
    out.append(dict(base))  # duplicate of nothing yet
    out.append(dict(base))  # duplicate of the row before
    out.append({**base, "situation": base["situation"].upper()})  # same situation id, another dialogue id
    out.append({**base, "speaker_utterance": None, "listener_reply": None})  # a situation-only row
    out.append(
        {**base, "speaker_utterance": None, "listener_reply": None, "domain": "other"}
    )  # its duplicate
    out.append(b'{"emotion": "relief", "situation": "bad \\ud800 surrogate"}')
    out.append('{"emotion": "relief", "situation": "Caf\xe9 latin-1 byte"}'.encode("latin-1"))
    out.append(b'{"emotion": "relief", "situation": "Fine text", "domain": "\\udcff"}')
    out.append(b'{"emotion": "rel\\udcffief", "situation": "label with surrogate"}')
    out.append(b"not json")
    out.append(b"[1, 2]")
    return out


def _hostile_jsonl() -> bytes:
    lines = [
        r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode() for r in _hostile_rows()
    ]
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize(
    "limits",
    [
        ValidationLimits(),
        ValidationLimits(min_text_chars=0, max_text_chars=60),
        ValidationLimits(detect_declared_language=False),
    ],
)
def test_hostile_rows_same_outcome_as_rowwise(limits):
    rows = READERS["jsonl"](_hostile_jsonl(), "hostile.jsonl")
    seen: tuple[dict, dict] = ({}, {})
    new, old = _both(rows, limits, seen)
    assert_same(new, old, "hostile.jsonl")
    codes = {q.reason_code for q in new.quarantined}
    assert {
        "wrong_type",
        "bad_encoding",
        "control_characters",
        "too_long",
        "unknown_emotion",
        "empty_text",
        "half_dialogue",
        "duplicate_id",
        "unknown_language",
        "invalid_json",
        "not_an_object",
    } <= codes, codes
    assert new.n_valid > 50 and new.normalised["control_tokens_neutralised"] > 10
    # A second file against the ids of the first: every repeated row is a cross-file duplicate.
    again_new, again_old = _both(rows, limits, seen, name="again.jsonl")
    assert_same(again_new, again_old, "again.jsonl")
    assert again_new.n_valid == 0 and seen[0] == seen[1]


def test_ed_readers_same_outcome_as_rowwise():
    fixture = Path(__file__).parent / "fixtures" / "ed_raw_sample.csv"
    data = fixture.read_bytes()
    for fmt, rows in (
        ("ed_raw", READERS["ed_raw"](data, fixture.name)),
        ("csv", READERS["csv"](b"emotion,situation\njoy,fine day\n,x\njoy,a,b\n", "u.csv")),
    ):
        new, old = _both(rows, ValidationLimits(), ({}, {}), name=fmt)
        assert_same(new, old, fmt)
        assert new.n_valid


def test_python_whitespace_class_is_pythons():
    chars = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    assert chars == columnar.PY_WHITESPACE
    assert all(re.fullmatch(r"\s", c) for c in chars)


def test_fallback_to_rowwise_when_the_columnar_path_raises(monkeypatch):
    rows = READERS["jsonl"](
        json.dumps({"emotion": "joy", "situation": "A fine day at the beach."}).encode(), "x"
    )

    def boom(*a, **k):
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(columnar, "_validate_frame", boom)
    seen: dict = {}
    outcome = columnar.validate_rows(
        rows, file="x", file_sha256="s", source="x", taxonomy=TAX, limits=ValidationLimits(), seen_ids=seen
    )
    assert outcome.n_valid == 1 and len(seen) == 1


def test_real_corpus_sample_same_outcome_as_rowwise():
    """The real EmpatheticDialogues validation pairs (skipped without ../shared/data)."""
    from tests.test_ingest_readers import shared_file

    path = shared_file("empathetic_dialogues", "utterance_pairs_valid.csv")
    data = path.read_bytes()
    rows = READERS[sniff_format(path, data)](data, path.name)
    new, old = _both(rows, ValidationLimits(), ({}, {}), name=source_name(path))
    assert_same(new, old, path.name)
    assert new.n_valid > 1000


def test_declared_rows_skip_the_identifier_when_asked():
    rows = READERS["jsonl"](
        b"\n".join(
            json.dumps(r).encode()
            for r in [
                {"emotion": "fear", "situation": "My scan is tomorrow and I cannot sleep.", "language": "en"},
                {"emotion": "fear", "situation": "My biopsy results come back on Friday morning."},
            ]
        ),
        "d.jsonl",
    )
    kw = {"file": "d.jsonl", "file_sha256": "s", "source": "d", "taxonomy": TAX}
    off = columnar.validate_rows(rows, limits=ValidationLimits(detect_declared_language=False), **kw).frame
    on = columnar.validate_rows(rows, limits=ValidationLimits(), **kw).frame
    assert off["language_detected"].to_list() == [None, "en"] and off["language_confidence"][0] is None
    assert on["language_detected"].to_list() == ["en", "en"]
    assert off.drop("language_detected", "language_confidence").equals(
        on.drop("language_detected", "language_confidence")
    )


def _outcome_key(outcome):
    return (
        [q.as_dict() for q in outcome.quarantined],
        outcome.skipped,
        outcome.normalised,
        outcome.rows_in,
        outcome.file_sha256,
    )


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf", b"\n\n   \n" * 4000])
def test_jsonl_read_in_blocks_same_outcome_as_whole(tmp_path, prefix):
    """A JSONL file over `stream_block_mb` is read and validated block by block (blocks of ~16 KB here,
    so rows, CRLF line ends, blank lines and duplicates fall on both sides of block boundaries; the
    third file starts with a whole blank block)."""
    from empathy_dag.ingest.corpus import ingest_files, validate_bytes

    body = _hostile_jsonl().replace(b"\n", b"\r\n", 5) + b"\n\n" + _hostile_jsonl()  # the copy: duplicates
    path = tmp_path / "big.jsonl"
    path.write_bytes(prefix + body)
    whole_limits, block_limits = ValidationLimits(), ValidationLimits(stream_block_mb=1 / 64)
    whole = ingest_files([path], taxonomy=TAX, limits=whole_limits, archive_dir=tmp_path / "raw")
    blocks = ingest_files([path], taxonomy=TAX, limits=block_limits, archive_dir=tmp_path / "raw2")
    assert _outcome_key(blocks.outcomes[0]) == _outcome_key(whole.outcomes[0])
    assert blocks.corpus.equals(whole.corpus) and blocks.quarantine.equals(whole.quarantine)
    assert blocks.corpus.height > 50 and {p.name for p in (tmp_path / "raw2").rglob("*.jsonl")} == {
        "big.jsonl"
    }
    in_memory = validate_bytes(path.read_bytes(), str(path), taxonomy=TAX, limits=block_limits)
    assert _outcome_key(in_memory) == _outcome_key(whole.outcomes[0]) and in_memory.frame.equals(whole.corpus)


@pytest.mark.parametrize("data", [b"\n  \n" * 600, b"\x89PNG\r\n" + b"\x00" * 3000, b"  \n\x1c\n" * 600])
def test_jsonl_in_blocks_rejects_whole_files_like_whole(tmp_path, data):
    from empathy_dag.ingest.corpus import ingest_files

    path = tmp_path / "odd.jsonl"
    path.write_bytes(data)
    whole = ingest_files([path], taxonomy=TAX).quarantine
    blocks = ingest_files(
        [path], taxonomy=TAX, limits=ValidationLimits(stream_block_mb=500 / 1024 / 1024)
    ).quarantine
    assert blocks.equals(whole) and whole.height == 1 and whole["line"][0] is None


def test_file_over_the_hard_cap_names_file_size_and_setting(tmp_path):
    from empathy_dag.ingest.corpus import ingest_files

    path = tmp_path / "huge.jsonl"
    path.write_bytes(_hostile_jsonl() * 40)
    size = path.stat().st_size
    result = ingest_files(
        [path],
        taxonomy=TAX,
        limits=ValidationLimits(max_file_mb=size / 1024 / 1024 / 2),
        archive_dir=tmp_path / "raw",
    )
    (entry,) = result.quarantine.to_dicts()
    assert entry["reason_code"] == "file_too_large" and entry["line"] is None
    assert (
        str(path) in entry["reason"]
        and f"{size:,} bytes" in entry["reason"]
        and "max_file_mb" in entry["reason"]
    )
    assert result.corpus.height == 0 and list((tmp_path / "raw").rglob("huge.jsonl"))  # archived all the same


def _hostile_csv(copies: int = 3) -> bytes:
    """A user-schema CSV with what breaks naive block reading: quoted cells spanning lines (one past
    MAX_RECORD_LINES), unterminated and stray quotes, CRLF and lone-CR line ends, blank and whitespace
    lines, wrong field counts, bad UTF-8, a NUL, unknown emotions and languages, half dialogues, control
    tokens, Japanese, and every record again further down (duplicates across blocks)."""
    header = b"emotion,situation,speaker_utterance,listener_reply,language,domain\r\n"
    records = [
        b'sadness,"My dog died\nlast week and\nI miss him a lot.",,,en,pets',
        b'joy,"We won the cup, finally!","I can\'t believe\nwe did it ""at last"".","That is\r\nwonderful news!",,',
        b'fear,"This quote never closes,,,en,',
        b'anger,"quoted"x,,,,',
        b"joy,too,many,fields,here,en,x,y",
        b"blorp,Something odd happened today at work.,,,,",
        b"grief,My grandmother passed away in the spring.,She was ninety.,,,",
        b"joy,caf\xe9 time with my oldest friends today,,,,",
        b"joy,a NUL \x00 in the middle of my day,,,,",
        b"joy,Hoy fui a la playa con mis amigos y fue genial.,,,es,",
        b",,,,,",
        b"   ",
        b"",
        "joy,\u53cb\u9054\u3068\u6d77\u306b\u884c\u3063\u3066\u3001\u3068\u3066\u3082\u697d\u3057\u304b\u3063\u305f\u3067\u3059\u3002,,,ja,".encode(),
        b"joy,Ignore this <|im_start|>system token please.,,,en,",
        b'joy,"long cell\n' + b"more\n" * 205 + b'end of it",,,en,',
    ]
    body = b""
    for copy in range(copies):
        for i in range(40):
            end = (b"\r\n", b"\n", b"\r")[i % 3]
            body += f"joy,A fine day number {i} at the beach with friends {copy % 2}.,,,en,\n".encode()
            body += records[i % len(records)] + end
    return header + body


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf", b"\n \n" * 300])
def test_csv_read_in_blocks_same_outcome_as_whole(tmp_path, prefix):
    """A CSV file over `stream_block_mb` is read and validated block by block (blocks of 512 bytes here,
    so quoted multi-line cells, CRLF/CR ends, broken records and duplicates fall across block boundaries):
    the same rows, reasons, messages, line numbers and duplicates as the whole file at once."""
    data = prefix + _hostile_csv()
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    block_limits = ValidationLimits(stream_block_mb=512 / 1024 / 1024)
    assert stream_format(path.name, len(data), data[:4096], block_limits) == "csv"
    assert stream_format(path.name, len(data), data[:4096], ValidationLimits()) == ""
    whole = ingest_files([path], taxonomy=TAX, limits=ValidationLimits())
    blocks = ingest_files([path], taxonomy=TAX, limits=block_limits)
    assert _outcome_key(blocks.outcomes[0]) == _outcome_key(whole.outcomes[0])
    assert blocks.corpus.equals(whole.corpus) and blocks.quarantine.equals(whole.quarantine)
    reasons = set(whole.quarantine["reason_code"])
    assert {
        "csv_error",
        "wrong_field_count",
        "duplicate_id",
        "unknown_emotion",
        "bad_encoding",
        "control_characters",
        "unknown_language",
        "half_dialogue",
    } <= reasons, reasons
    assert (
        whole.corpus.height > 80
        and whole.corpus.filter(pl.col("situation").str.contains("last week and")).height == 1
    )  # the multi-line cell, once
    in_memory = validate_bytes(data, str(path), taxonomy=TAX, limits=block_limits)
    assert _outcome_key(in_memory) == _outcome_key(whole.outcomes[0]) and in_memory.frame.equals(whole.corpus)


def test_ed_conversation_csv_in_blocks_same_outcome_as_whole(tmp_path):
    rows = ["conv_id,utterance_idx,prompt,emotion_label,speaker_utterance,extra"]
    for i in range(300):
        rows.append(f'hit:{i}_conv:{i},1,"I got a new job_comma_ finally, number {i % 250}",proud,"yes",x')
        if i % 37 == 0:
            rows.append(f"hit:{i},broken,row")
    data = ("\n".join(rows) + "\n").encode()
    path = tmp_path / "conversations.csv"
    path.write_bytes(data)
    block_limits = ValidationLimits(stream_block_mb=700 / 1024 / 1024)
    assert stream_format(path.name, len(data), data[:4096], block_limits) == "ed_conversations"
    whole = ingest_files([path], taxonomy=TAX, limits=ValidationLimits())
    blocks = ingest_files([path], taxonomy=TAX, limits=block_limits)
    assert _outcome_key(blocks.outcomes[0]) == _outcome_key(whole.outcomes[0])
    assert blocks.corpus.equals(whole.corpus) and blocks.quarantine.equals(whole.quarantine)
    assert set(whole.quarantine["reason_code"]) == {"duplicate_id", "wrong_field_count"}
    assert set(whole.corpus["source"]) == {"empathetic_dialogues"} and whole.corpus.height == 250


@pytest.mark.parametrize(
    "data",
    [
        b"\n  \n" * 600,
        b"\x89PNG\r\n" + b"\x00" * 3000,
        b"emotion,situation\n" + b"\n" * 2000,
        b"emo,sit\n" + b"joy,x\n" * 500,
    ],
)
def test_csv_in_blocks_rejects_whole_files_like_whole(tmp_path, data):
    path = tmp_path / "odd.csv"
    path.write_bytes(data)
    whole = ingest_files([path], taxonomy=TAX).quarantine
    blocks = ingest_files(
        [path], taxonomy=TAX, limits=ValidationLimits(stream_block_mb=500 / 1024 / 1024)
    ).quarantine
    assert blocks.equals(whole) and whole.height == 1 and whole["line"][0] is None
