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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from empathy_dag.ingest.records import FileRejected, RawRow

# The csv module's own cell limit stays far above any text limit: an oversized cell is a row-level
# `too_long` (or `csv_error` past this, 1 MiB) for that record only, never a whole-file failure.
csv.field_size_limit(1 << 20)
# A CSV record may span several physical lines inside quotes; an opening quote that never closes must
# not swallow the rest of the file, so a record longer than this is cut back to its first line.
MAX_RECORD_LINES = 200
# Magic numbers of files people drop by mistake (images, archives, office files, PDFs).
BINARY_MAGIC = (
    b"\x89PNG",
    b"PK\x03\x04",
    b"%PDF",
    b"\x1f\x8b",
    b"GIF8",
    b"\xff\xd8\xff",
    b"BZh",
    b"7z\xbc\xaf",
    b"\xd0\xcf\x11\xe0",
    b"SQLite format 3",
)

USER_COLUMNS = ("emotion", "situation", "speaker_utterance", "listener_reply", "language", "domain", "source")
ED_RAW_COLUMNS = {"conv_id", "utterance_idx", "context", "prompt", "utterance"}
ED_PAIR_COLUMNS = {"conv_id", "utterance_idx", "sp1", "sp2", "context", "prompt", "level"}
ED_CONVERSATION_COLUMNS = {"prompt", "emotion_label", "speaker_utterance"}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_ed(text: str) -> str:
    """Raw EmpatheticDialogues writes commas inside text as `_comma_`."""
    return text.replace("_comma_", ",").strip()


def check_bytes(data: bytes, name: str) -> str:
    """Whole-file checks, then decoding. Bytes that are not UTF-8 survive as surrogates so that only
    the rows holding them are quarantined, not the whole file."""
    if len(data) == 0 or data.strip() == b"":
        raise FileRejected("empty_file", f"{name} is empty")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise FileRejected(
                "bad_encoding", f"{name} has a UTF-16 mark but does not decode: {exc}"
            ) from exc
    head = data[:8192]
    # Binary, not text with a stray NUL: one NUL in a text file is a row-level `control_characters`
    # (the good rows around it land); a file that starts with a known binary signature, or whose head
    # is more than 1% NUL / 10% other control bytes, is not text at all.
    controls = sum(1 for b in head if b < 0x20 and b not in (0x09, 0x0A, 0x0D))
    if (
        data.startswith(BINARY_MAGIC)
        or head.count(0) > max(1, len(head) // 100)
        or controls > max(2, len(head) // 10)
    ):
        raise FileRejected(
            "binary_file",
            f"{name} looks binary (a binary signature or many NUL/control bytes); expected UTF-8 "
            "JSONL, CSV or TSV text",
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def read_jsonl(data: bytes, name: str) -> list[RawRow]:
    rows = jsonl_rows(check_bytes(data, name).split("\n"), first_line=1)
    if not rows:
        raise FileRejected("empty_file", f"{name} has no rows")
    return rows


def jsonl_rows(lines: list[str], first_line: int) -> list[RawRow]:
    """The rows of JSONL `lines` (split on "\n"), numbered from `first_line`; blank lines are not rows.
    Split on "\n" only (the JSON Lines spec): str.splitlines also splits on U+2028, U+0085, \x0c...,
    which are legal inside a JSON string and would cut a row in two and shift every line number."""
    rows: list[RawRow] = []
    for i, line in enumerate(lines, start=first_line):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(RawRow(i, None, line, ("invalid_json", f"line is not valid JSON ({exc.msg})")))
            continue
        except RecursionError:
            rows.append(RawRow(i, None, line, ("invalid_json", "line is nested too deeply to parse")))
            continue
        except ValueError as exc:  # e.g. an integer past Python's digit limit for int()
            rows.append(RawRow(i, None, line, ("invalid_json", f"line cannot be parsed ({str(exc)[:120]})")))
            continue
        if not isinstance(value, dict):
            rows.append(RawRow(i, None, line, ("not_an_object", "each JSONL line must be a JSON object")))
            continue
        rows.append(RawRow(i, value, line))
    return rows


def newline_blocks(read: Callable[[int], bytes], block_bytes: int) -> Iterator[bytes]:
    """The bytes `read(n)` returns, in blocks of about `block_bytes` that each end just after a
    newline (the last one wherever the data ends): a large JSONL file is validated block by block.
    A newline byte never occurs inside a UTF-8 sequence, so each block decodes on its own."""
    rest = b""
    while True:
        chunk = read(block_bytes)
        if not chunk:
            if rest:
                yield rest
            return
        data = rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        yield data[: cut + 1]
        rest = data[cut + 1 :]


def _decoded_blocks(blocks: Iterable[bytes], name: str) -> Iterator[tuple[str, bool]]:
    """Each newline-ended block (`newline_blocks`) decoded, with whether the file's content has begun: the
    whole-file checks of `check_bytes` (binary signature, NUL share, BOM) run on the first block that is not
    blank, and the blank blocks before it come as (text, False). A UTF-16 file must be read whole (its
    newlines are two bytes)."""
    checked, first = False, True
    for block in blocks:
        if not checked and block.strip() == b"":
            yield block.decode("utf-8", errors="surrogateescape"), False
        elif not checked:
            if block.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise ValueError(f"{name}: a UTF-16 file cannot be read in blocks")
            # After blank blocks the file does not start here: a BOM here is not the file's (kept, as whole).
            checked = True
            yield (check_bytes(block, name) if first else check_bytes(b" " + block, name)[1:]), True
        else:
            yield block.decode("utf-8", errors="surrogateescape"), True
        first = False


def jsonl_block_rows(blocks: Iterable[bytes], name: str) -> Iterator[list[RawRow]]:
    """`read_jsonl` over a file given as newline-ended blocks: the rows of each block, line numbers
    running on across blocks. The whole-file checks (binary signature, NUL share, BOM) read the first
    block that is not blank; a UTF-16 file must be read whole (its newlines are two bytes). Raises
    FileRejected like `read_jsonl` when the file holds no row at all."""
    line, begun_any, any_rows = 1, False, False
    for text, begun in _decoded_blocks(blocks, name):
        if not begun:
            line += text.count("\n")
            continue
        begun_any = True
        lines = text.split("\n")
        if lines[-1] == "":  # the block ended with its newline: no line after it (yet)
            lines.pop()
        rows = jsonl_rows(lines, first_line=line)
        line += len(lines)
        any_rows = any_rows or bool(rows)
        yield rows
    if not begun_any:
        raise FileRejected("empty_file", f"{name} is empty")
    if not any_rows:
        raise FileRejected("empty_file", f"{name} has no rows")


def _physical_lines(text: str) -> list[str]:
    """CSV line terminators are \r\n, \n and \r; nothing else (not U+2028) ends a line."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _parse_record(chunk: str) -> list[str]:
    """Parse one CSV record strictly (a stray quote after a quoted cell is an error, not a guess)."""
    if '"' not in chunk and "\n" not in chunk:
        # Without a quote character the excel dialect is a plain split on ","; the same cell limit applies.
        cells = chunk.split(",")
        if any(len(c) > csv.field_size_limit() for c in cells):
            raise csv.Error(f"field larger than field limit ({csv.field_size_limit()})")
        return cells
    records = list(csv.reader(io.StringIO(chunk), strict=True))
    if len(records) != 1:
        raise csv.Error(f"expected one record, found {len(records)}")
    return records[0]


def csv_records(text: str, name: str) -> tuple[list[str], list[tuple[int, list[str] | None, str, str]]]:
    """The header and every record as (first line, cells or None, raw text, error message).

    Record by record rather than one csv.reader over the file, so that a broken record (an unterminated
    or stray quote, a cell over the csv module's limit) is one bad record and the reader goes on at the
    next line: quoted cells may span lines (up to MAX_RECORD_LINES), and when the lines gathered for a
    record still do not parse, only its first line is reported and parsing resumes right after it.
    The file's text at once; `csv_record_stream` is the same over lines that arrive block by block."""
    header, records = csv_record_stream(_physical_lines(text), name)
    return header, list(records)


def csv_record_stream(
    lines: Iterable[str], name: str
) -> tuple[list[str], Iterator[tuple[int, list[str] | None, str, str]]]:
    """`csv_records` over physical lines given one by one (CSV line terminators already split off): the
    header, read at once (FileRejected as in `csv_records`), and an iterator over the records after it.
    It holds MAX_RECORD_LINES + 2 lines ahead of the record it reads, never the file."""
    records = _record_stream(lines)
    header: list[str] | None = None
    for start, record, _, error in records:
        if record is None:
            raise FileRejected("unparseable", f"{name}: cannot read a CSV header on line {start} ({error})")
        header = [h.strip() for h in record]
        break
    if header is None:
        raise FileRejected("empty_file", f"{name} is empty")
    return header, (r for r in records if r[1] is None or any(cell.strip() for cell in r[1]))


def _record_stream(lines: Iterable[str]) -> Iterator[tuple[int, list[str] | None, str, str]]:
    """Every non-blank record of `lines` as (first line, cells or None, raw text, error), header included."""
    source = iter(lines)
    buf: list[str] = []
    base = 0  # line index (0-based) of buf[0]
    i = 0  # the next line to read, in buf
    eof = False
    while True:
        # Lines ahead of i: enough for the longest record (MAX_RECORD_LINES), or all that is left. At the end
        # of the file trailing empty lines are dropped, as a whole-file read drops them.
        while not eof and len(buf) - i <= MAX_RECORD_LINES + 1:
            line = next(source, None)
            if line is None:
                eof = True
                while len(buf) > i and buf[-1] == "":
                    buf.pop()
            else:
                buf.append(line)
        if i >= len(buf):
            return
        if i >= 4096:  # lines already read leave the buffer
            del buf[:i]
            base += i
            i = 0
        start = i
        if not buf[i].strip():
            i += 1
            continue
        chunk = buf[i]
        end = i
        # An odd number of quote characters means a quoted cell continues on the next line.
        while chunk.count('"') % 2 == 1 and end + 1 < len(buf) and end - start < MAX_RECORD_LINES:
            end += 1
            chunk += "\n" + buf[end]
        try:
            record = _parse_record(chunk)
            error = ""
        except csv.Error as exc:
            record, error = None, str(exc)
            if end > start:
                # What was gathered does not parse: report the first line alone and go on after it.
                chunk, end = buf[start], start
                try:
                    record, error = _parse_record(chunk), ""
                except csv.Error as exc1:
                    error = str(exc1)
        i = end + 1
        yield base + start + 1, record, chunk, error


def csv_block_lines(blocks: Iterable[bytes], name: str) -> Iterator[str]:
    """The physical lines of a CSV file given as newline-ended blocks (`newline_blocks`), with the
    whole-file checks of `check_bytes` on the first block that is not blank (binary signature, NUL
    share, BOM): the lines `_physical_lines` gives for the whole text. A UTF-16 file must be read whole."""
    begun_any = False
    for text, begun in _decoded_blocks(blocks, name):
        begun_any = begun_any or begun
        lines = _physical_lines(text)
        if text.endswith(("\n", "\r")):  # the block ended with its line: no line after it (yet)
            lines.pop()
        yield from lines
    if not begun_any:
        raise FileRejected("empty_file", f"{name} is empty")


def csv_records_strict(text: str, name: str) -> tuple[list[str], list[tuple[int, list[str], str]]]:
    """(line, cells, raw) per record, for callers outside ingest (the review
    decisions reader): a broken record still rejects the whole file there, as it always did. Ingest's
    own readers use `csv_records`, which keeps the good records."""
    header, records = csv_records(text, name)
    for line, record, _, error in records:
        if record is None:
            raise FileRejected("unparseable", f"{name}: CSV error near line {line}: {error}")
    return header, [(line, record, raw) for line, record, raw, _ in records]


def _bad_csv_row(line: int, raw: str, error: str) -> RawRow:
    return RawRow(line, None, raw, ("csv_error", f"line {line} is not a well-formed CSV record ({error})"))


def _record_problem(
    header: list[str], line: int, record: list[str] | None, raw: str, error: str
) -> RawRow | None:
    """The quarantine row of a CSV record that did not parse or whose field count is not the header's;
    None for a usable record."""
    if record is None:
        return _bad_csv_row(line, raw, error)
    if len(record) != len(header):
        return RawRow(
            line, None, raw, ("wrong_field_count", f"{len(record)} fields, header has {len(header)}")
        )
    return None


def _user_header_check(header: list[str], name: str) -> None:
    missing = [c for c in ("emotion", "situation") if c not in header]
    if missing:
        raise FileRejected(
            "missing_columns",
            f"{name}: missing required column(s) {', '.join(missing)}; found {', '.join(header)}",
        )


def _user_row(header: list[str], line: int, record: list[str] | None, raw: str, error: str) -> RawRow:
    problem = _record_problem(header, line, record, raw, error)
    if problem is not None:
        return problem
    return RawRow(
        line, {k: (v if v != "" else None) for k, v in zip(header, record) if k in USER_COLUMNS}, raw
    )


def read_user_csv(data: bytes, name: str) -> list[RawRow]:
    header, records = csv_records(check_bytes(data, name), name)
    _user_header_check(header, name)
    rows = [_user_row(header, *r) for r in records]
    if not rows:
        raise FileRejected("empty_file", f"{name} has a header but no rows")
    return rows


def read_ed_raw_csv(data: bytes, name: str, *, first_exchange_only: bool = False) -> list[RawRow]:
    """Raw EmpatheticDialogues CSV: one utterance per row. Rows are grouped by conv_id, ordered by
    utterance_idx; each (odd, even) pair is a (speaker, listener) exchange. A malformed row (the
    original files have a few with stray commas) is quarantined on its own."""
    text = check_bytes(data, name)
    header, records = csv_records(text, name)
    missing = ED_RAW_COLUMNS - set(header)
    if missing:
        raise FileRejected(
            "missing_columns", f"{name}: not an EmpatheticDialogues CSV, missing {sorted(missing)}"
        )
    idx = {h: i for i, h in enumerate(header)}
    bad: list[RawRow] = []
    convs: dict[str, list[tuple[int, int, list[str], str]]] = defaultdict(list)
    for line, record, raw, error in records:
        if record is None:
            bad.append(_bad_csv_row(line, raw, error))
            continue
        if len(record) < len(header):
            bad.append(
                RawRow(
                    line, None, raw, ("wrong_field_count", f"{len(record)} fields, header has {len(header)}")
                )
            )
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
    text = check_bytes(data, name)
    header, records = csv_records(text, name)
    missing = ED_PAIR_COLUMNS - set(header)
    if missing:
        raise FileRejected(
            "missing_columns", f"{name}: not an ED utterance-pair CSV, missing {sorted(missing)}"
        )
    idx = {h: i for i, h in enumerate(header)}
    rows: list[RawRow] = []
    first_seen: dict[str, int] = {}
    candidates = []
    for line, record, raw, error in records:
        problem = _record_problem(header, line, record, raw, error)
        if problem is not None:
            rows.append(problem)
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


def _ed_conversations_header_check(header: list[str], name: str) -> None:
    missing = ED_CONVERSATION_COLUMNS - set(header)
    if missing:
        raise FileRejected(
            "missing_columns", f"{name}: not an ED conversation CSV, missing {sorted(missing)}"
        )


def _ed_conversation_row(
    header: list[str], line: int, record: list[str] | None, raw: str, error: str
) -> RawRow:
    problem = _record_problem(header, line, record, raw, error)
    if problem is not None:
        return problem
    idx = {h: i for i, h in enumerate(header)}
    label = record[idx["emotion_label"]].strip()
    return RawRow(
        line,
        {
            "emotion": label,
            "situation": decode_ed(record[idx["prompt"]]),
            "domain": "everyday life",
            "language": "en",
        },
        raw,
        source_label=label,
    )


def read_ed_conversations(data: bytes, name: str) -> list[RawRow]:
    """One row per conversation: the situation (prompt) and its label; no separable listener turn."""
    header, records = csv_records(check_bytes(data, name), name)
    _ed_conversations_header_check(header, name)
    return [_ed_conversation_row(header, *r) for r in records]


# The CSV formats whose rows stand alone (no grouping by conversation), so a large file is read and
# validated in blocks: (header check, record -> RawRow, FileRejected message when there is no row or None).
STREAMABLE_CSV: dict[str, tuple[Callable, Callable, str | None]] = {
    "csv": (_user_header_check, _user_row, "{name} has a header but no rows"),
    "ed_conversations": (_ed_conversations_header_check, _ed_conversation_row, None),
}


def csv_block_rows(blocks: Iterable[bytes], name: str, fmt: str, block_bytes: int) -> Iterator[list[RawRow]]:
    """`READERS[fmt]` (a format of STREAMABLE_CSV) over a file given as newline-ended blocks: its rows
    in lists of about `block_bytes` of raw text, line numbers and multi-line records as the whole-file
    read gives them (tests/test_ingest_columnar.py compares the two on hostile CSV)."""
    check, to_row, no_rows = STREAMABLE_CSV[fmt]
    header, records = csv_record_stream(csv_block_lines(blocks, name), name)
    check(header, name)
    batch: list[RawRow] = []
    size, any_rows = 0, False
    for record in records:
        row = to_row(header, *record)
        batch.append(row)
        size += len(row.raw) + 1
        if size >= block_bytes:
            yield batch
            batch, size, any_rows = [], 0, True
    if batch:
        yield batch
    elif not any_rows and no_rows is not None:
        raise FileRejected("empty_file", no_rows.format(name=name))


def sniff_format(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        first = data[:4096].decode("utf-8", errors="replace").splitlines()
        header = {h.strip() for h in next(csv.reader([first[0]]), [])} if first else set()
        if header >= ED_PAIR_COLUMNS:
            return "ed_utterance_pairs"
        if header >= ED_RAW_COLUMNS:
            return "ed_raw"
        if header >= ED_CONVERSATION_COLUMNS:
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
