"""Row model, stable ids and validation for ingested situations and dialogues.

Pure Python: no Dagster here. Readers (`readers.py`) turn a file into `RawRow`s or a whole-file
`FileRejected`; `columnar.validate_rows` (polars expressions over the whole file) turns those into the
valid rows' frame and `QuarantineEntry`s so that every input row is accounted for exactly once
(rows_in == valid + quarantined + skipped). `validate_rows_rowwise` here is the same rules one row at a
time in Python: the reference the columnar validator is tested against, and its fallback."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from operator import attrgetter
from typing import Any

import polars as pl

from empathy_dag.ingest.language import SUPPORTED_LANGUAGES, identify_language
from empathy_dag.taxonomy import Taxonomy

# Column order of the validated corpus (one row = a situation, optionally with one two-turn dialogue).
CORPUS_SCHEMA: dict[str, str] = {
    "situation_id": "str",
    "dialogue_id": "str",  # null when the row carries no dialogue
    "emotion": "str",
    "source_label": "str",  # the label as written in the source (e.g. ED's "terrified")
    "language": "str",  # declared in the row, else detected
    "language_detected": "str",  # what the language identifier reads in the text, declared or not
    "language_confidence": "float",  # its confidence (0-1)
    "domain": "str",
    "situation": "str",
    "speaker_utterance": "str",
    "listener_reply": "str",
    "source": "str",
    "source_file": "str",
    "source_line": "int",
}
_POLARS_TYPES = {"str": pl.String, "int": pl.Int64, "float": pl.Float64}
CORPUS_POLARS_SCHEMA = {k: _POLARS_TYPES[v] for k, v in CORPUS_SCHEMA.items()}


class FileRejected(Exception):
    """The file as a whole cannot be ingested (binary, empty, unparseable, missing columns...)."""

    def __init__(self, reason_code: str, message: str):
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message


@dataclass
class RawRow:
    line: int  # 1-based line (JSONL) or record number + header offset (CSV)
    values: dict[str, Any] | None  # None when the row could not be parsed at all
    raw: str = ""
    parse_error: tuple[str, str] | None = None  # (reason_code, message)
    source_label: str | None = None
    skip_reason: str | None = None  # read but deliberately not ingested (e.g. a listener-first turn)


@dataclass
class CorpusRecord:
    situation_id: str
    dialogue_id: str | None
    emotion: str
    source_label: str
    language: str
    language_detected: str | None  # None: declared, and detect_declared_language off
    language_confidence: float | None
    domain: str
    situation: str
    speaker_utterance: str | None
    listener_reply: str | None
    source: str
    source_file: str
    source_line: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QuarantineEntry:
    file: str
    file_sha256: str
    line: int | None  # None: the whole file
    reason_code: str
    reason: str
    raw: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationLimits:
    max_text_chars: int = 2000
    min_text_chars: int = 2
    # The hard cap: a file over it is not read (only hashed and archived) and is quarantined whole,
    # with a message naming the file, its size and this setting.
    max_file_mb: float = 2048.0
    languages: tuple[str, ...] = SUPPORTED_LANGUAGES
    # A JSONL file larger than this is read and validated in blocks of about this size (memory stays
    # near one block's rows plus the valid rows' frame); CSV files are read whole (multi-line quoted
    # cells, EmpatheticDialogues turns grouped by conversation).
    stream_block_mb: float = 16.0
    # Run the language identifier on rows that declare their language too, for `language_detected`
    # beside the declared one (most of ingest time: ~22 of 26 s per 100k English rows). False: only rows
    # without a `language` are identified; declared rows get language_detected/confidence null.
    detect_declared_language: bool = True


@dataclass
class FileOutcome:
    """What happened to one file: the accounting that the asset metadata shows."""

    file: str
    file_sha256: str
    source: str
    rows_in: int = 0
    # The valid rows (CORPUS_POLARS_SCHEMA columns), in the file's row order; None: none.
    frame: pl.DataFrame | None = None
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows read but not ingested
    normalised: dict[str, int] = field(default_factory=dict)  # what -> valid rows changed on the way in

    @property
    def n_valid(self) -> int:
        return 0 if self.frame is None else self.frame.height

    @property
    def records(self) -> list[CorpusRecord]:
        """The valid rows as records (for small files: the landing sensor, evaluation sets, tests)."""
        if self.frame is None:
            return []
        return [CorpusRecord(**row) for row in self.frame.iter_rows(named=True)]

    @property
    def balanced(self) -> bool:
        """rows in == valid + quarantined + skipped (a rejected file counts as one quarantine entry)."""
        whole_file = any(q.line is None for q in self.quarantined)
        row_quarantined = sum(1 for q in self.quarantined if q.line is not None)
        return whole_file or self.rows_in == self.n_valid + row_quarantined + sum(self.skipped.values())


class FileIds(MutableMapping[str, str]):
    """The `seen_ids` of one file read in blocks (id -> "file:line"), over the ids of the files before it
    (`earlier`, only read). This file's entries are kept as two ints (the 64-bit id, the line), about 110
    bytes a row instead of about 250 for two strings: the duplicate index is the one thing that grows
    with the rows when a large file is streamed (the landing sensor). Any other key or value is kept as
    given."""

    def __init__(self, file: str, earlier: Mapping[str, str]):
        self.file, self.earlier = file, earlier
        self._prefix = f"{file}:"
        self._lines: dict[int, int] = {}
        self._other: dict[str, str] = {}

    @staticmethod
    def _int_key(key: str) -> int | None:
        if len(key) == 16 and key == key.lower():
            try:
                return int(key, 16)
            except ValueError:
                return None
        return None

    def __getitem__(self, key: str) -> str:
        if key in self.earlier:
            return self.earlier[key]
        k = self._int_key(key)
        if k is not None and k in self._lines:
            return f"{self._prefix}{self._lines[k]}"
        return self._other[key]

    def __setitem__(self, key: str, value: str) -> None:
        k = self._int_key(key)
        line = value[len(self._prefix) :] if value.startswith(self._prefix) else ""
        if k is not None and line.isdigit() and str(int(line)) == line:
            self._lines[k] = int(line)
        else:
            self._other[key] = value

    def __delitem__(self, key: str) -> None:
        k = self._int_key(key)
        if k is not None and k in self._lines:
            del self._lines[k]
        else:
            del self._other[key]

    def own(self) -> Iterator[tuple[str, str]]:
        """This file's entries, as strings."""
        for k, line in self._lines.items():
            yield f"{k:016x}", f"{self._prefix}{line}"
        yield from self._other.items()

    def __iter__(self) -> Iterator[str]:
        yield from self.earlier
        yield from (k for k, _ in self.own())

    def __len__(self) -> int:
        return len(self.earlier) + len(self._lines) + len(self._other)


def corpus_frame(records) -> pl.DataFrame:
    """Records as the corpus frame, built column by column from their attributes: `dataclasses.asdict`
    per row (a recursive deep copy) was a quarter of ingest time at 10k rows."""
    columns: dict[str, list] = {name: [] for name in CORPUS_POLARS_SCHEMA}
    appenders = [(attrgetter(name), columns[name].append) for name in CORPUS_POLARS_SCHEMA]
    for record in records:
        for get, append in appenders:
            append(get(record))
    return pl.DataFrame(columns, schema=CORPUS_POLARS_SCHEMA)


def printable_raw(raw: str, limit: int = 500) -> str:
    """The raw row as stored in the quarantine: undecodable bytes shown as U+FFFD, truncated."""
    try:
        data = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape, not from an undecodable byte
        data = raw.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "replace")[:limit]


# Invisible format characters that change a string's bytes but not what a reader sees: zero-width
# space / non-joiner / joiner, word joiner, BOM, soft hyphen, and the bidi embedding, override and
# isolate controls (the "Trojan Source" characters). They are removed before ids are computed, so an
# invisible character cannot defeat duplicate detection, and bidi controls are removed from stored
# text, where they could make a row display as something else than what it holds.
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_ZERO_WIDTH = "\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff"
_INVISIBLE_STORED = re.compile(f"[{_BIDI_CONTROLS}\u200b\u2060\ufeff\u00ad]")
_INVISIBLE_ALL = re.compile(f"[{_BIDI_CONTROLS}{_ZERO_WIDTH}]")


@lru_cache(maxsize=4096)  # a row's texts are normalised once to check them and again to store them
def normalize_text(text: str) -> str:
    """NFC, bidi controls and zero-width spaces removed, collapsed whitespace: the stored form. (ZWJ and
    ZWNJ stay in stored text: emoji sequences and some scripts need them; ids ignore them.)"""
    text = _INVISIBLE_STORED.sub("", unicodedata.normalize("NFC", text))
    return re.sub(r"\s+", " ", text).strip()


# Chat-template control tokens. Corpus text is later wrapped in the base model's chat template; a
# literal "<|im_start|>" inside a situation would be tokenized as the real control token and let a row
# forge turns (or end them) in the training data. SmolLM2-135M-Instruct's added tokens are listed (the
# test checks this list against the embedded tokenizer), plus any "<|...|>" shape that other chat
# templates (Llama 3, Phi, Qwen...) use for theirs.
CHAT_CONTROL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<repo_name>",
    "<reponame>",
    "<file_sep>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<jupyter_script>",
    "<empty_output>",
)
_CONTROL_TOKEN = re.compile(
    "|".join(re.escape(t) for t in CHAT_CONTROL_TOKENS) + r"|<\|[^<>|\s]{1,64}\|>|\[/?INST\]|<</?SYS>>|</?s>"
)


def neutralise_control_tokens(text: str) -> tuple[str, int]:
    """Break every chat-template control token in `text` by a space after its first character
    ("<|im_start|>" -> "< |im_start|>"): still readable, never the special token. Repeated until none is
    left, because removing one can join the pieces of another. Returns the text and how many it broke."""
    total = 0
    while True:
        text, n = _CONTROL_TOKEN.subn(lambda m: m.group(0)[0] + " " + m.group(0)[1:], text)
        if not n:
            return text, total
        total += n


def id_text(text: str) -> str:
    """The form ids hash: NFKC (full-width and compatibility forms fold onto their plain letters), every
    invisible format character removed, collapsed whitespace. Two texts that read the same get the same
    id; a text with none of those characters keeps the id it had before this normalisation existed
    (ids key review decisions, caches and splits)."""
    text = _INVISIBLE_ALL.sub("", unicodedata.normalize("NFKC", text or ""))
    return re.sub(r"\s+", " ", text).strip()


def stable_id(*parts: str | None) -> str:
    """sha256 of the parts, each followed by U+001F (one hash call: ingest computes two per row)."""
    return hashlib.sha256("".join(f"{p or ''}\x1f" for p in parts).encode("utf-8")).hexdigest()[:16]


def situation_id(emotion: str, language: str, situation: str) -> str:
    return stable_id("situation", emotion, language, id_text(situation).lower())


def dialogue_id(sit_id: str, speaker: str, listener: str) -> str:
    return stable_id("dialogue", sit_id, id_text(speaker), id_text(listener))


def detect_language(text: str) -> str:
    """ISO 639-1 code of the language of `text` ("und" when undetermined); see `ingest.language`."""
    return identify_language(text).language


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Bytes that were not UTF-8 (surrogateescape gives U+DC80-U+DCFF), and any other lone surrogate (a JSON
# "\ud800" escape): neither can be written as UTF-8 to Parquet or DuckDB.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

TEXT_FIELDS = ("situation", "speaker_utterance", "listener_reply")


def _text_problem(name: str, value: Any, limits: ValidationLimits, required: bool) -> tuple[str, str] | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if required:
            return ("empty_text", f"{name} is empty")
        return None
    if not isinstance(value, str):
        return ("wrong_type", f"{name} must be text, got {type(value).__name__}: {str(value)[:40]!r}")
    if _SURROGATE.search(value) or "\ufffd" in value:
        return ("bad_encoding", f"{name} is not valid UTF-8 (re-save the file as UTF-8)")
    if _CONTROL.search(value):
        return ("control_characters", f"{name} contains control characters (NUL or similar)")
    text = normalize_text(value)
    if len(text) < limits.min_text_chars:
        return ("too_short", f"{name} has {len(text)} characters, fewer than {limits.min_text_chars}")
    if len(text) > limits.max_text_chars:
        return (
            "too_long",
            f"{name} has {len(text)} characters, over the limit of {limits.max_text_chars}",
        )
    return None


OPTIONAL_STRING_FIELDS = ("language", "domain", "source")


def _string_field_problem(name: str, value: Any) -> tuple[str, str] | None:
    """Optional metadata fields are validated like the texts: text or absent, valid UTF-8, no control
    characters (a number or a list there is a mistake in the file, not something to coerce)."""
    if value is None:
        return None
    if not isinstance(value, str):
        return ("wrong_type", f"{name} must be text, got {type(value).__name__}: {str(value)[:40]!r}")
    if _SURROGATE.search(value) or "\ufffd" in value:
        return ("bad_encoding", f"{name} is not valid UTF-8 (re-save the file as UTF-8)")
    if _CONTROL.search(value):
        return ("control_characters", f"{name} contains control characters (NUL or similar)")
    if len(value) > 200:
        return ("too_long", f"{name} has {len(value)} characters, over the limit of 200 for a metadata field")
    return None


def validate_rows_rowwise(
    rows: list[RawRow],
    *,
    file: str,
    file_sha256: str,
    source: str,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    seen_ids: dict[str, str] | None = None,
) -> FileOutcome:
    """Validate parsed rows one at a time. `seen_ids` (id -> "file:line") carries duplicates across files.
    The reference for `columnar.validate_rows` (same rows, same reasons, same order) and its fallback."""
    outcome = FileOutcome(file=file, file_sha256=file_sha256, source=source, rows_in=len(rows))
    seen = seen_ids if seen_ids is not None else {}
    records: list[CorpusRecord] = []

    def reject(row: RawRow, code: str, message: str) -> None:
        outcome.quarantined.append(
            QuarantineEntry(file, file_sha256, row.line, code, message, printable_raw(row.raw or ""))
        )

    for row in rows:
        try:
            _validate_row(
                row,
                outcome,
                records,
                reject,
                seen,
                file=file,
                source=source,
                taxonomy=taxonomy,
                limits=limits,
            )
        except Exception as exc:  # noqa: BLE001 - one row's surprise must not lose the file's other rows
            reject(
                row,
                "validation_error",
                f"row could not be validated ({type(exc).__name__}: {str(exc)[:200]})",
            )
    outcome.frame = corpus_frame(records)
    return outcome


def _validate_row(
    row: RawRow,
    outcome: FileOutcome,
    records: list[CorpusRecord],
    reject,
    seen: dict[str, str],
    *,
    file: str,
    source: str,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
) -> None:
    if row.skip_reason is not None:
        outcome.skipped[row.skip_reason] = outcome.skipped.get(row.skip_reason, 0) + 1
        return
    if row.parse_error is not None or row.values is None:
        code, message = row.parse_error or ("unparseable", "row could not be parsed")
        reject(row, code, message)
        return
    v = row.values
    missing = [c for c in ("emotion", "situation") if c not in v]
    if missing:
        reject(row, "missing_columns", f"missing required field(s): {', '.join(missing)}")
        return
    raw_label = v.get("emotion")
    if raw_label is not None and not isinstance(raw_label, str):
        reject(row, "wrong_type", f"emotion must be text, got {type(raw_label).__name__}")
        return
    if not isinstance(raw_label, str) or not raw_label.strip():
        reject(row, "empty_emotion", "emotion is empty or not text")
        return
    field_problem = next(
        (p for p in (_string_field_problem(n, v.get(n)) for n in ("emotion", *OPTIONAL_STRING_FIELDS)) if p),
        None,
    )
    if field_problem is not None:
        reject(row, *field_problem)
        return
    emotion = taxonomy.normalize_label(raw_label)
    if emotion is None:
        reject(
            row,
            "unknown_emotion",
            f"unknown emotion {raw_label!r}: use one of the 28 GoEmotions labels or the 32 "
            "EmpatheticDialogues labels",
        )
        return
    problem = _text_problem("situation", v.get("situation"), limits, required=True)
    speaker, listener = v.get("speaker_utterance"), v.get("listener_reply")
    has_speaker = isinstance(speaker, str) and speaker.strip() != ""
    has_listener = isinstance(listener, str) and listener.strip() != ""
    if problem is None:
        for name in ("speaker_utterance", "listener_reply"):
            problem = _text_problem(name, v.get(name), limits, required=False)
            if problem:
                break
    if problem is None and has_speaker != has_listener:
        problem = (
            "half_dialogue",
            "a dialogue needs both speaker_utterance and listener_reply (or neither)",
        )
    if problem is not None:
        reject(row, *problem)
        return
    situation, broken = neutralise_control_tokens(normalize_text(v["situation"]))
    declared = v.get("language")
    # Detected for every row, declared or not: a declared language the text contradicts is visible
    # in the corpus (language != language_detected) without being overruled.
    declared_form = (declared or "").strip().lower()
    guess = (
        identify_language(" ".join(t for t in (situation, speaker or "") if t))
        if limits.detect_declared_language or not declared_form
        else None
    )
    language = declared_form or guess.language
    if language not in limits.languages:
        how = "declared" if (declared or "").strip() else f"detected, confidence {guess.confidence:.2f}"
        reject(
            row,
            "unknown_language",
            f"language {language!r} ({how}) is not one of {', '.join(limits.languages)}",
        )
        return
    domain = v.get("domain")
    domain = normalize_text(domain) if isinstance(domain, str) and domain.strip() else "unspecified"
    domain, n_domain = neutralise_control_tokens(domain)
    broken += n_domain
    sit_id = situation_id(emotion, language, situation)
    dia_id = None
    if has_speaker:
        speaker, n_speaker = neutralise_control_tokens(normalize_text(speaker))
        listener, n_listener = neutralise_control_tokens(normalize_text(listener))
        broken += n_speaker + n_listener
        dia_id = dialogue_id(sit_id, speaker, listener)
    else:
        speaker = listener = None
    key = dia_id or sit_id
    if key in seen:
        reject(row, "duplicate_id", f"duplicate of the row at {seen[key]} (id {key})")
        return
    record = CorpusRecord(
        situation_id=sit_id,
        dialogue_id=dia_id,
        emotion=emotion,
        source_label=row.source_label or raw_label.strip().lower(),
        language=language,
        language_detected=guess.language if guess else None,
        language_confidence=round(guess.confidence, 4) if guess else None,
        domain=domain,
        situation=situation,
        speaker_utterance=speaker,
        listener_reply=listener,
        source=neutralise_control_tokens(normalize_text(v.get("source") or "") or source)[0],
        source_file=file,
        source_line=row.line,
    )
    for column, value in vars(record).items():
        # What lands must be writable to Parquet/DuckDB: no lone surrogate may survive to the writers.
        if isinstance(value, str) and _SURROGATE.search(value):
            reject(row, "bad_encoding", f"{column} is not valid UTF-8 (re-save the file as UTF-8)")
            return
    seen[key] = f"{file}:{row.line}"
    if broken:
        outcome.normalised["control_tokens_neutralised"] = (
            outcome.normalised.get("control_tokens_neutralised", 0) + 1
        )
    records.append(record)
