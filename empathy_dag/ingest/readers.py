"""Readers: one function per file format, each returning `RawRow`s with the user schema's field
names (emotion, situation, speaker_utterance, listener_reply, language, domain, source), or raising
`FileRejected` when nothing in the file can be read.

Formats:
- user JSONL (`.jsonl`, `.ndjson`) and user CSV: the documented schema (README, "Bring your own data");
- raw EmpatheticDialogues CSVs (conv_id, utterance_idx, context, prompt, speaker_idx, utterance, ...),
  with `_comma_` decoded and conversations grouped by conv_id into (speaker, listener) turn pairs;
- the EmPO-shaped EmpatheticDialogues utterance-pair CSV (sp1, sp2, context, prompt, level, ...);
- the EmpatheticDialogues conversation CSV (prompt, emotion_label, ...): situations without replies;
- GoEmotions TSVs (text, label ids, comment id) for the emotion classifier: `read_goemotions_tsv`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from empathy_dag.ingest.records import FileRejected, RawRow

csv.field_size_limit(10_000_000)

USER_COLUMNS = ("emotion", "situation", "speaker_utterance", "listener_reply", "language", "domain", "source")
ED_RAW_COLUMNS = {"conv_id", "utterance_idx", "context", "prompt", "utterance"}
ED_PAIR_COLUMNS = {"conv_id", "utterance_idx", "sp1", "sp2", "context", "prompt", "level"}
ED_CONVERSATION_COLUMNS = {"prompt", "emotion_label", "speaker_utterance"}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_ed(text: str) -> str:
    """Raw EmpatheticDialogues writes commas inside text as `_comma_`."""
    return text.replace("_comma_", ",").strip()


def _check_bytes(data: bytes, name: str) -> str:
    """Whole-file checks, then decoding. Bytes that are not UTF-8 survive as surrogates so that only
    the rows holding them are quarantined, not the whole file."""
    if len(data) == 0 or data.strip() == b"":
        raise FileRejected("empty_file", f"{name} is empty")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise FileRejected("bad_encoding", f"{name} has a UTF-16 mark but does not decode: {exc}")
    head = data[:8192]
    if b"\x00" in head:
        raise FileRejected(
            "binary_file", f"{name} looks binary (NUL bytes); expected UTF-8 JSONL, CSV or TSV text"
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def read_jsonl(data: bytes, name: str) -> list[RawRow]:
    text = _check_bytes(data, name)
    rows: list[RawRow] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(RawRow(i, None, line, ("invalid_json", f"line is not valid JSON ({exc.msg})")))
            continue
        if not isinstance(value, dict):
            rows.append(RawRow(i, None, line, ("not_an_object", "each JSONL line must be a JSON object")))
            continue
        rows.append(RawRow(i, value, line))
    if not rows:
        raise FileRejected("empty_file", f"{name} has no rows")
    return rows


def _csv_records(text: str, name: str) -> tuple[list[str], list[tuple[int, list[str], str]]]:
    lines = text.splitlines()
    if not lines:
        raise FileRejected("empty_file", f"{name} is empty")
    try:
        reader = csv.reader(io.StringIO(text), strict=True)
        header = next(reader)
    except (csv.Error, StopIteration) as exc:
        raise FileRejected("unparseable", f"{name}: cannot read a CSV header ({exc})") from exc
    header = [h.strip() for h in header]
    records = []
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            records.append((reader.line_num, record, ",".join(record)))
    except csv.Error as exc:
        raise FileRejected("unparseable", f"{name}: CSV error near line {reader.line_num}: {exc}") from exc
    return header, records


def read_user_csv(data: bytes, name: str) -> list[RawRow]:
    text = _check_bytes(data, name)
    header, records = _csv_records(text, name)
    missing = [c for c in ("emotion", "situation") if c not in header]
    if missing:
        raise FileRejected(
            "missing_columns",
            f"{name}: missing required column(s) {', '.join(missing)}; found {', '.join(header)}",
        )
    rows = []
    for line, record, raw in records:
        if len(record) != len(header):
            rows.append(
                RawRow(line, None, raw, ("wrong_field_count", f"{len(record)} fields, header has {len(header)}"))
            )
            continue
        values = {k: (v if v != "" else None) for k, v in zip(header, record) if k in USER_COLUMNS}
        rows.append(RawRow(line, values, raw))
    return rows


def read_ed_raw_csv(data: bytes, name: str, *, first_exchange_only: bool = False) -> list[RawRow]:
    """Raw EmpatheticDialogues CSV: one utterance per row. Rows are grouped by conv_id, ordered by
    utterance_idx; each (odd, even) pair is a (speaker, listener) exchange. A malformed row (the
    original files have a few with stray commas) is quarantined on its own."""
    text = _check_bytes(data, name)
    header, records = _csv_records(text, name)
    missing = ED_RAW_COLUMNS - set(header)
    if missing:
        raise FileRejected("missing_columns", f"{name}: not an EmpatheticDialogues CSV, missing {sorted(missing)}")
    idx = {h: i for i, h in enumerate(header)}
    bad: list[RawRow] = []
    convs: dict[str, list[tuple[int, int, list[str], str]]] = defaultdict(list)
    for line, record, raw in records:
        if len(record) < len(header):
            bad.append(RawRow(line, None, raw, ("wrong_field_count", f"{len(record)} fields, header has {len(header)}")))
            continue
        try:
            uidx = int(record[idx["utterance_idx"]])
        except ValueError:
            bad.append(RawRow(line, None, raw, ("wrong_type", "utterance_idx is not an integer")))
            continue
        convs[record[idx["conv_id"]]].append((uidx, line, record, raw))
    rows: list[RawRow] = list(bad)
    for turns in convs.values():
        # Accounting unit: one RawRow per exchange (two CSV records), and one per unpaired turn.
        turns.sort(key=lambda t: t[0])
        for k in range(0, len(turns) - 1, 2):
            (_, line, sp, raw), (_, _, li, raw2) = turns[k], turns[k + 1]
            if first_exchange_only and k > 0:
                rows.append(RawRow(line, None, raw, skip_reason="later exchange of a conversation"))
                continue
            label = sp[idx["context"]].strip()
            rows.append(
                RawRow(
                    line,
                    {
                        "emotion": label,
                        "situation": decode_ed(sp[idx["prompt"]]),
                        "speaker_utterance": decode_ed(sp[idx["utterance"]]),
                        "listener_reply": decode_ed(li[idx["utterance"]]),
                        "domain": "everyday life",
                        "language": "en",
                    },
                    raw + "\n" + raw2,
                    source_label=label,
                )
            )
        if len(turns) % 2 == 1:
            _, line, _, raw = turns[-1]
            rows.append(RawRow(line, None, raw, skip_reason="speaker turn without a reply"))
    return rows


def read_ed_utterance_pairs(data: bytes, name: str, *, first_exchange_only: bool = True) -> list[RawRow]:
    """The EmPO-shaped pair file: rows with level == 1 have the listener in sp2. By default only the
    first exchange of each conversation (the speaker's opening turn and the listener's reply), which
    is the two-turn dialogue this project models."""
    text = _check_bytes(data, name)
    header, records = _csv_records(text, name)
    missing = ED_PAIR_COLUMNS - set(header)
    if missing:
        raise FileRejected("missing_columns", f"{name}: not an ED utterance-pair CSV, missing {sorted(missing)}")
    idx = {h: i for i, h in enumerate(header)}
    rows: list[RawRow] = []
    first_seen: dict[str, int] = {}
    candidates = []
    for line, record, raw in records:
        if len(record) != len(header):
            rows.append(RawRow(line, None, raw, ("wrong_field_count", f"{len(record)} fields, header has {len(header)}")))
            continue
        if record[idx["level"]].strip() != "1":
            # sp1 is the listener: not a (speaker, listener) exchange
            rows.append(RawRow(line, None, raw, skip_reason="listener turn first"))
            continue
        try:
            uidx = int(record[idx["utterance_idx"]])
        except ValueError:
            rows.append(RawRow(line, None, raw, ("wrong_type", "utterance_idx is not an integer")))
            continue
        conv = record[idx["conv_id"]]
        candidates.append((conv, uidx, line, record, raw))
        first_seen[conv] = min(uidx, first_seen.get(conv, uidx))
    for conv, uidx, line, record, raw in candidates:
        if first_exchange_only and uidx != first_seen[conv]:
            rows.append(RawRow(line, None, raw, skip_reason="later exchange of a conversation"))
            continue
        label = record[idx["context"]].strip()
        rows.append(
            RawRow(
                line,
                {
                    "emotion": label,
                    "situation": decode_ed(record[idx["prompt"]]),
                    "speaker_utterance": decode_ed(record[idx["sp1"]]),
                    "listener_reply": decode_ed(record[idx["sp2"]]),
                    "domain": "everyday life",
                    "language": "en",
                },
                raw,
                source_label=label,
            )
        )
    return rows


def read_ed_conversations(data: bytes, name: str) -> list[RawRow]:
    """One row per conversation: the situation (prompt) and its label; no separable listener turn."""
    text = _check_bytes(data, name)
    header, records = _csv_records(text, name)
    missing = ED_CONVERSATION_COLUMNS - set(header)
    if missing:
        raise FileRejected("missing_columns", f"{name}: not an ED conversation CSV, missing {sorted(missing)}")
    idx = {h: i for i, h in enumerate(header)}
    rows = []
    for line, record, raw in records:
        if len(record) != len(header):
            rows.append(RawRow(line, None, raw, ("wrong_field_count", f"{len(record)} fields, header has {len(header)}")))
            continue
        label = record[idx["emotion_label"]].strip()
        rows.append(
            RawRow(
                line,
                {"emotion": label, "situation": decode_ed(record[idx["prompt"]]), "domain": "everyday life",
                 "language": "en"},
                raw,
                source_label=label,
            )
        )
    return rows


def sniff_format(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        first = data[:4096].decode("utf-8", errors="replace").splitlines()
        header = {h.strip() for h in next(csv.reader([first[0]]), [])} if first else set()
        if ED_PAIR_COLUMNS <= header:
            return "ed_utterance_pairs"
        if ED_RAW_COLUMNS <= header:
            return "ed_raw"
        if ED_CONVERSATION_COLUMNS <= header:
            return "ed_conversations"
        return "csv"
    raise FileRejected(
        "unsupported_format",
        f"{path.name}: unsupported file type {suffix or '(none)'}; use .jsonl, .ndjson or .csv",
    )


READERS: dict[str, Callable[[bytes, str], list[RawRow]]] = {
    "jsonl": read_jsonl,
    "csv": read_user_csv,
    "ed_raw": read_ed_raw_csv,
    "ed_utterance_pairs": read_ed_utterance_pairs,
    "ed_conversations": read_ed_conversations,
}


def read_goemotions_tsv(path: Path, labels: list[str]) -> list[dict]:
    """GoEmotions: text <TAB> comma-separated label ids <TAB> comment id, no header."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{line_no}: expected 3 tab-separated fields, got {len(parts)}")
            text, ids, comment_id = parts
            out.append(
                {
                    "id": comment_id,
                    "text": text,
                    "labels": [labels[int(i)] for i in ids.split(",") if i != ""],
                    "split": path.stem,
                }
            )
    return out
