"""Validation of a file's parsed rows with polars expressions over the whole file (issue 24, item 3).

The rules, reason codes, messages and row order are those of `records.validate_rows_rowwise` (the
row-at-a-time reference: `tests/test_ingest_columnar.py` compares both on the hostile corpora); each
check is one expression over a column instead of one Python call per row, and the first failing check
in the reference's order gives a row its reason.

What stays in Python, and why:
- one pass over the parsed rows that sorts each field's value into text / absent / not text / not
  UTF-8 (a polars string is UTF-8: a lone surrogate from an undecodable byte cannot enter a frame),
  keeping what a `wrong_type` message quotes;
- Unicode normalisation (NFC for stored text, NFKC for ids) and lowercasing of text that is not pure
  ASCII: Python's `unicodedata` and `str.lower` define the stored form and the ids, and the Rust
  tables under polars are of another Unicode version. For ASCII text both are the identity (and ASCII
  lowercasing), so that part runs in polars;
- the language identifier (lingua), once per distinct text, only on rows that passed every other check;
- the sha256 ids (hashlib) and the duplicate check in row order (its message names the first row).

If the columnar path raises on some input nobody foresaw, the file is validated again by the row-wise
reference, whose per-row catch-all keeps the other rows of the file (the documented fallback)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import polars as pl

from empathy_dag.ingest.language import identify_languages
from empathy_dag.ingest.records import (
    CHAT_CONTROL_TOKENS,
    CORPUS_POLARS_SCHEMA,
    FileOutcome,
    QuarantineEntry,
    RawRow,
    ValidationLimits,
    corpus_frame,
    id_text,
    normalize_text,
    printable_raw,
    stable_id,
    validate_rows_rowwise,
)
from empathy_dag.taxonomy import Taxonomy

FIELDS = ("emotion", "situation", "speaker_utterance", "listener_reply", "language", "domain", "source")
METADATA_FIELDS = ("emotion", "language", "domain", "source")  # the reference's field-problem order
ABSENT, TEXT, BAD_UTF8, NOT_TEXT = 0, 1, 2, 3

# Every character Python's str.isspace() / re's \s accepts (the test checks this against Python): the
# Rust regex \s and str.strip_chars() use Unicode White_Space, which lacks U+001C-U+001F.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)
_WS_CLASS = "".join(f"\\x{{{ord(c):X}}}" for c in PY_WHITESPACE)
_WS_RUN = f"[{_WS_CLASS}]+"
# A text that collapsing changes: a whitespace character other than a space, two spaces, or a space at
# either end (most texts have none, and the check is much cheaper than the replacement).
_WS_UNCOLLAPSED = "[" + _WS_CLASS.replace("\\x{20}", "") + "]|  |^ | $"
_CONTROL_RX = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # records._CONTROL

# records._CONTROL_TOKEN as a Rust regex with the first character of each token in its own group, so
# that "${1}${3} ${2}${4}" puts the same space after it as neutralise_control_tokens. Every alternative
# starts with "<" or "["; grouping them by that character keeps their order, so leftmost-first matching
# picks the same alternative as Python's re.
_LT_ALTERNATIVES = [re.escape(t[1:]) for t in CHAT_CONTROL_TOKENS if t.startswith("<")] + [
    rf"\|[^<>|{_WS_CLASS}]{{1,64}}\|>",
    r"</?SYS>>",
    r"/?s>",
]
assert all(t.startswith("<") for t in CHAT_CONTROL_TOKENS)
_TOKEN_RX = "(<)(" + "|".join(_LT_ALTERNATIVES) + r")|(\[)(/?INST\])"
_TOKEN_REPLACEMENT = "${1}${3} ${2}${4}"


def _collapse(s: pl.Series) -> pl.Series:
    """Whitespace runs to one space, trimmed: normalize_text and id_text of an ASCII text."""
    needs = s.str.contains(_WS_UNCOLLAPSED).fill_null(False)
    if not needs.any():
        return s
    idx = needs.arg_true()
    # Series.scatter writes in place: on a copy, never on the caller's column.
    return s.clone().scatter(idx, s.gather(idx).str.replace_all(_WS_RUN, " ").str.strip_chars(" "))


def _exact_map(s: pl.Series, fast: Callable[[pl.Series], pl.Series], slow: Callable[[str], str]) -> pl.Series:
    """`fast` (polars, exact for ASCII) on the whole column, then `slow` (the Python function that
    defines the result) on the values that are not pure ASCII."""
    out = fast(s)
    non_ascii = (s.str.len_bytes() != s.str.len_chars()).fill_null(False)
    if non_ascii.any():
        idx = non_ascii.arg_true()
        out = out.clone().scatter(idx, pl.Series([slow(x) for x in s.gather(idx).to_list()], dtype=pl.String))
    return out


def _normalized(s: pl.Series) -> pl.Series:
    return _exact_map(s, _collapse, normalize_text)


def _id_form(s: pl.Series, lower: bool) -> pl.Series:
    if lower:
        return _exact_map(s, lambda x: _collapse(x).str.to_lowercase(), lambda x: id_text(x).lower())
    return _exact_map(s, _collapse, id_text)


def neutralised(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """neutralise_control_tokens over a column: the text, and whether any token was broken."""
    broken = s.str.contains(_TOKEN_RX).fill_null(False)
    if broken.any():
        while s.str.contains(_TOKEN_RX).any():
            s = s.str.replace_all(_TOKEN_RX, _TOKEN_REPLACEMENT)
    return s, broken


def _non_empty(e: pl.Expr) -> pl.Expr:
    """Null for "" (a falsy string in the reference's `a or b`)."""
    return pl.when(e != "").then(e)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_rows(
    rows: list[RawRow],
    *,
    file: str,
    file_sha256: str,
    source: str,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    seen_ids: dict[str, str] | None = None,
) -> FileOutcome:
    """Validate parsed rows. `seen_ids` (id -> "file:line") carries duplicates across files; it is only
    updated once the whole file is validated."""
    seen = seen_ids if seen_ids is not None else {}
    try:
        outcome, added = _validate(
            rows,
            file=file,
            file_sha256=file_sha256,
            source=source,
            taxonomy=taxonomy,
            limits=limits,
            seen=seen,
        )
    except Exception:  # noqa: BLE001 - the row-wise reference isolates whatever row this was
        return validate_rows_rowwise(
            rows,
            file=file,
            file_sha256=file_sha256,
            source=source,
            taxonomy=taxonomy,
            limits=limits,
            seen_ids=seen,
        )
    seen.update(added)
    return outcome


def _text_checks(name: str, required: bool, limits: ValidationLimits) -> list[tuple[pl.Expr, str, pl.Expr]]:
    """records._text_problem as (condition, reason code, message) in its order."""
    k, blank, col = pl.col(f"k_{name}"), pl.col(f"blank_{name}"), pl.col
    present = pl.lit(True) if required else ((k != ABSENT) & ~blank)
    checks = []
    if required:
        checks.append(((k == ABSENT) | blank, "empty_text", pl.lit(f"{name} is empty")))
    nlen = col(f"nlen_{name}")
    checks += [
        (present & (k == NOT_TEXT), "wrong_type", col(f"wt_{name}")),
        (
            present & ((k == BAD_UTF8) | col(f"fffd_{name}")),
            "bad_encoding",
            pl.lit(f"{name} is not valid UTF-8 (re-save the file as UTF-8)"),
        ),
        (
            present & col(f"ctrl_{name}"),
            "control_characters",
            pl.lit(f"{name} contains control characters (NUL or similar)"),
        ),
        (
            present & (nlen < limits.min_text_chars),
            "too_short",
            pl.format(f"{name} has {{}} characters, fewer than {limits.min_text_chars}", nlen),
        ),
        (
            present & (nlen > limits.max_text_chars),
            "too_long",
            pl.format(f"{name} has {{}} characters, over the limit of {limits.max_text_chars}", nlen),
        ),
    ]
    return checks


def _field_checks(name: str) -> list[tuple[pl.Expr, str, pl.Expr]]:
    """records._string_field_problem as (condition, reason code, message) in its order."""
    k, col = pl.col(f"k_{name}"), pl.col
    return [
        (k == NOT_TEXT, "wrong_type", col(f"wt_{name}")),
        (
            (k == BAD_UTF8) | col(f"fffd_{name}"),
            "bad_encoding",
            pl.lit(f"{name} is not valid UTF-8 (re-save the file as UTF-8)"),
        ),
        (
            col(f"ctrl_{name}"),
            "control_characters",
            pl.lit(f"{name} contains control characters (NUL or similar)"),
        ),
        (
            col(f"len_{name}") > 200,
            "too_long",
            pl.format(
                f"{name} has {{}} characters, over the limit of 200 for a metadata field", col(f"len_{name}")
            ),
        ),
    ]


def _first_failure(checks: list[tuple[pl.Expr, str, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    code: Any = pl
    message: Any = pl
    for condition, reason_code, reason in checks:
        condition = condition.fill_null(False)
        code = code.when(condition).then(pl.lit(reason_code))
        message = message.when(condition).then(reason)
    return code.otherwise(pl.lit(None, dtype=pl.String)), message.otherwise(pl.lit(None, dtype=pl.String))


def _replace(s: pl.Series, mapping: dict[str, Any], dtype) -> pl.Series:
    return s.replace_strict(list(mapping), list(mapping.values()), default=None, return_dtype=dtype)


def _validate(
    rows: list[RawRow],
    *,
    file: str,
    file_sha256: str,
    source: str,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    seen: dict[str, str],
) -> tuple[FileOutcome, dict[str, str]]:
    outcome = FileOutcome(file=file, file_sha256=file_sha256, source=source, rows_in=len(rows))
    rejects: list[tuple[int, str, str]] = []  # (row index, reason code, message)

    # Python passes over the parsed rows: what each field holds. Nothing here judges a row; the frame does.
    index: list[int] = []
    for i, row in enumerate(rows):
        if row.skip_reason is not None:
            outcome.skipped[row.skip_reason] = outcome.skipped.get(row.skip_reason, 0) + 1
        elif row.parse_error is not None or row.values is None:
            code, message = row.parse_error or ("unparseable", "row could not be parsed")
            rejects.append((i, code, message))
        else:
            index.append(i)
    dicts = [rows[i].values for i in index]
    missing = [
        None
        if "emotion" in v and "situation" in v
        else ", ".join(c for c in ("emotion", "situation") if c not in v)
        for v in dicts
    ]
    values: dict[str, list] = {}
    kinds: dict[str, list[int]] = {}
    not_text: dict[str, dict[int, Any]] = {}
    for f in FIELDS:
        column = [v.get(f) for v in dicts]
        kind = [ABSENT if x is None else TEXT if isinstance(x, str) else NOT_TEXT for x in column]
        for j in [
            j for j, x in enumerate(column) if kind[j] == TEXT and not x.isascii() and not _encodable(x)
        ]:
            kind[j], column[j] = BAD_UTF8, None
        not_text[f] = {j: column[j] for j, k in enumerate(kind) if k == NOT_TEXT}
        for j in not_text[f]:
            column[j] = None
        values[f], kinds[f] = column, kind
    labels = [rows[i].source_label for i in index]
    bad_labels = {j for j, x in enumerate(labels) if x is not None and not x.isascii() and not _encodable(x)}
    for j in bad_labels:
        labels[j] = None

    n = len(index)
    frames: list[pl.DataFrame] = []
    if n:
        valid, added, broken, frame_rejects = _validate_frame(
            n,
            index,
            values,
            kinds,
            not_text,
            missing,
            labels,
            bad_labels,
            rows,
            file=file,
            source=source,
            taxonomy=taxonomy,
            limits=limits,
            seen=seen,
        )
        rejects += frame_rejects
        frames.append(valid)
    else:
        added, broken = {}, 0
    if broken:
        outcome.normalised["control_tokens_neutralised"] = broken
    outcome.frame = frames[0] if frames else corpus_frame([])
    rejects.sort(key=lambda r: r[0])
    outcome.quarantined = [
        QuarantineEntry(file, file_sha256, rows[i].line, code, message, printable_raw(rows[i].raw or ""))
        for i, code, message in rejects
    ]
    return outcome, added


def _validate_frame(
    n,
    index,
    values,
    kinds,
    not_text,
    missing,
    labels,
    bad_labels,
    rows,
    *,
    file,
    source,
    taxonomy,
    limits,
    seen,
):
    """The parsed rows as a frame, judged: (valid rows in CORPUS_POLARS_SCHEMA, ids they add to `seen`,
    how many had control tokens broken, [(row index, reason code, message)] of the others)."""
    col = pl.col
    df = pl.DataFrame(
        {
            "pos": pl.Series(range(n), dtype=pl.Int64),
            "line": pl.Series([rows[i].line for i in index], dtype=pl.Int64),
            "missing": pl.Series(missing, dtype=pl.String),
            "row_label": pl.Series(labels, dtype=pl.String),
            **{f: pl.Series(values[f], dtype=pl.String) for f in FIELDS},
            **{f"k_{f}": pl.Series(kinds[f], dtype=pl.Int8) for f in FIELDS},
        }
    )
    # wrong_type messages quote the value as Python prints it: built here, for the few values concerned.
    wrong: dict[str, pl.Series] = {}
    for f in FIELDS:
        msgs: list[str | None] = [None] * n
        for pos, x in not_text[f].items():
            msgs[pos] = (
                f"emotion must be text, got {type(x).__name__}"
                if f == "emotion"
                else f"{f} must be text, got {type(x).__name__}: {str(x)[:40]!r}"
            )
        wrong[f"wt_{f}"] = pl.Series(msgs, dtype=pl.String)
    df = df.with_columns(**wrong)
    norm = {f: _normalized(df[f]) for f in ("situation", "speaker_utterance", "listener_reply")}
    strip_ws = {f: col(f).str.strip_chars(PY_WHITESPACE) == "" for f in FIELDS}
    df = df.with_columns(
        **{f"blank_{f}": ((col(f"k_{f}") == TEXT) & strip_ws[f]).fill_null(False) for f in FIELDS},
        **{f"fffd_{f}": col(f).str.contains("\ufffd", literal=True).fill_null(False) for f in FIELDS},
        **{f"ctrl_{f}": col(f).str.contains(_CONTROL_RX).fill_null(False) for f in FIELDS},
        **{f"len_{f}": col(f).str.len_chars() for f in METADATA_FIELDS},
        **{f"norm_{f}": s for f, s in norm.items()},
        **{f"nlen_{f}": s.str.len_chars() for f, s in norm.items()},
    )
    distinct_labels = [x for x in df["emotion"].unique().to_list() if x is not None]
    normalised_label = {x: taxonomy.normalize_label(x) for x in distinct_labels}
    unknown_message = {
        x: f"unknown emotion {x!r}: use one of the 28 GoEmotions labels or the 32 EmpatheticDialogues labels"
        for x, e in normalised_label.items()
        if e is None
    }
    df = df.with_columns(
        emotion_norm=_replace(df["emotion"], normalised_label, pl.String),
        unknown_emotion=_replace(df["emotion"], unknown_message, pl.String),
        has_speaker=(col("k_speaker_utterance") == TEXT) & ~col("blank_speaker_utterance"),
        has_listener=(col("k_listener_reply") == TEXT) & ~col("blank_listener_reply"),
    )
    checks = [
        (
            col("missing").is_not_null(),
            "missing_columns",
            pl.format("missing required field(s): {}", col("missing")),
        ),
        (col("k_emotion") == NOT_TEXT, "wrong_type", col("wt_emotion")),
        (
            (col("k_emotion") == ABSENT) | col("blank_emotion"),
            "empty_emotion",
            pl.lit("emotion is empty or not text"),
        ),
        *[c for f in METADATA_FIELDS for c in _field_checks(f)],
        (col("emotion_norm").is_null(), "unknown_emotion", col("unknown_emotion")),
        *_text_checks("situation", True, limits),
        *_text_checks("speaker_utterance", False, limits),
        *_text_checks("listener_reply", False, limits),
        (
            col("has_speaker") != col("has_listener"),
            "half_dialogue",
            pl.lit("a dialogue needs both speaker_utterance and listener_reply (or neither)"),
        ),
    ]
    code, message = _first_failure(checks)
    df = df.with_columns(reason_code=code, reason=message)
    rejects = [
        (index[p], c, m)
        for p, c, m in df.filter(col("reason_code").is_not_null())
        .select("pos", "reason_code", "reason")
        .iter_rows()
    ]
    df = df.filter(col("reason_code").is_null())

    # Language: the identifier reads the stored situation and the speaker's turn as written.
    situation, broken_situation = neutralised(df["norm_situation"])
    speaker_raw = df["speaker_utterance"]
    detect_text = (
        pl.select(
            pl.concat_str(
                [_non_empty(pl.lit(situation)), _non_empty(pl.lit(speaker_raw))],
                separator=" ",
                ignore_nulls=True,
            )
        )
        .to_series()
        .fill_null("")
    )
    declared_form = {d: (d or "").strip().lower() for d in df["language"].unique().to_list()}
    declared_values = df["language"].to_list()
    texts = detect_text.to_list()
    if not limits.detect_declared_language:  # only the rows that do not say their language
        texts = [None if declared_form[d] else t for d, t in zip(declared_values, texts, strict=True)]
    guesses: dict[str | None, Any] = dict(identify_languages(t for t in texts if t is not None))
    guesses[None] = None
    detected = [guesses[t] for t in texts]
    language: list[str] = []
    for pos, d, guess in zip(df["pos"].to_list(), declared_values, detected, strict=True):
        lang = declared_form[d] or guess.language
        language.append(lang)
        if lang not in limits.languages:
            how = "declared" if declared_form[d] else f"detected, confidence {guess.confidence:.2f}"
            rejects.append(
                (
                    index[pos],
                    "unknown_language",
                    f"language {lang!r} ({how}) is not one of {', '.join(limits.languages)}",
                )
            )
    df = df.with_columns(
        situation_stored=situation,
        broken=broken_situation,
        language_final=pl.Series(language, dtype=pl.String),
        language_detected=pl.Series([g.language if g else None for g in detected], dtype=pl.String),
        language_confidence=pl.Series(
            [round(g.confidence, 4) if g else None for g in detected], dtype=pl.Float64
        ),
    ).filter(col("language_final").is_in(list(limits.languages)))

    domain_in = df.select(
        pl.when((col("k_domain") == TEXT) & ~col("blank_domain")).then(col("domain"))
    ).to_series()
    domain, broken_domain = neutralised(_normalized(domain_in).fill_null("unspecified"))
    has_speaker = df["has_speaker"]
    speaker, broken_speaker = neutralised(
        _normalized(df["speaker_utterance"]).zip_with(
            has_speaker, pl.Series([None] * df.height, dtype=pl.String)
        )
    )
    listener, broken_listener = neutralised(
        _normalized(df["listener_reply"]).zip_with(
            has_speaker, pl.Series([None] * df.height, dtype=pl.String)
        )
    )
    source_in = _normalized(df["source"]).fill_null("")
    source_col, _ = neutralised(
        pl.select(_non_empty(pl.lit(source_in)).fill_null(pl.lit(source))).to_series()
    )
    raw_labels = [x for x in df["emotion"].unique().to_list() if x is not None]
    label_form = {x: x.strip().lower() for x in raw_labels}
    source_label = pl.select(
        _non_empty(pl.lit(df["row_label"])).fill_null(pl.lit(_replace(df["emotion"], label_form, pl.String)))
    ).to_series()

    emotion = df["emotion_norm"].to_list()
    situation_key = _id_form(df["situation_stored"], lower=True).to_list()
    sit_ids = [
        stable_id("situation", e, lang, s)
        for e, lang, s in zip(emotion, df["language_final"].to_list(), situation_key, strict=True)
    ]
    speaker_key = _id_form(speaker, lower=False).to_list()
    listener_key = _id_form(listener, lower=False).to_list()
    dia_ids = [
        stable_id("dialogue", s, a, b) if h else None
        for s, a, b, h in zip(sit_ids, speaker_key, listener_key, has_speaker.to_list(), strict=True)
    ]

    # Duplicates in row order: the first row with an id lands, the later ones name it.
    added: dict[str, str] = {}
    keep: list[bool] = []
    for pos, line, sid, did in zip(df["pos"].to_list(), df["line"].to_list(), sit_ids, dia_ids, strict=True):
        key = did or sid
        first = seen.get(key) or added.get(key)
        if first is not None:
            rejects.append((index[pos], "duplicate_id", f"duplicate of the row at {first} (id {key})"))
            keep.append(False)
        elif pos in bad_labels:
            rejects.append(
                (index[pos], "bad_encoding", "source_label is not valid UTF-8 (re-save the file as UTF-8)")
            )
            keep.append(False)
        else:
            added[key] = f"{file}:{line}"
            keep.append(True)
    keep_mask = pl.Series(keep, dtype=pl.Boolean)
    out = pl.DataFrame(
        {
            "situation_id": pl.Series(sit_ids, dtype=pl.String),
            "dialogue_id": pl.Series(dia_ids, dtype=pl.String),
            "emotion": df["emotion_norm"],
            "source_label": source_label,
            "language": df["language_final"],
            "language_detected": df["language_detected"],
            "language_confidence": df["language_confidence"],
            "domain": domain,
            "situation": df["situation_stored"],
            "speaker_utterance": speaker,
            "listener_reply": listener,
            "source": source_col,
            "source_file": pl.Series([file] * df.height, dtype=pl.String),
            "source_line": df["line"],
        },
        schema=CORPUS_POLARS_SCHEMA,
    )
    broken = df["broken"] | broken_domain | broken_speaker | broken_listener
    n_broken = int((broken & keep_mask).sum())
    return out.filter(keep_mask), added, n_broken, rejects
