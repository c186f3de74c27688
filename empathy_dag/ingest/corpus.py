"""Turn a set of source files into one validated corpus frame and a quarantine frame.

Every file is read once, whatever number of emotions it touches; the raw bytes are archived under
their sha256 before anything else happens, so a rejected file can always be inspected and replayed."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from empathy_dag.ingest.columnar import validate_rows
from empathy_dag.ingest.language import cached_guesses
from empathy_dag.ingest.readers import (
    READERS,
    STREAMABLE_CSV,
    csv_block_rows,
    jsonl_block_rows,
    newline_blocks,
    sha256_bytes,
    sniff_format,
)
from empathy_dag.ingest.records import (
    CORPUS_POLARS_SCHEMA,  # noqa: F401 - defined in records.py, still imported from here
    FileIds,
    FileOutcome,
    FileRejected,
    QuarantineEntry,
    RawRow,
    ValidationLimits,
    corpus_frame,
    printable_raw,
)
from empathy_dag.ingest.sources import SkippedPath, printable_name
from empathy_dag.models import sha256_file
from empathy_dag.taxonomy import Taxonomy

QUARANTINE_POLARS_SCHEMA = {
    "file": pl.String,
    "file_sha256": pl.String,
    "line": pl.Int64,
    "reason_code": pl.String,
    "reason": pl.String,
    "raw": pl.String,
}


@dataclass
class IngestResult:
    outcomes: list[FileOutcome] = field(default_factory=list)
    # Paths of the landing folder that were not read (symlinks, hidden files, partial uploads...): each
    # has a row in the file log; the refused ones also a whole-file quarantine entry.
    skipped: list[SkippedPath] = field(default_factory=list)

    @property
    def corpus(self) -> pl.DataFrame:
        frames = [o.frame for o in self.outcomes if o.frame is not None and o.frame.height]
        return pl.concat(frames, how="vertical") if frames else corpus_frame([])

    @property
    def quarantine(self) -> pl.DataFrame:
        rows = [q.as_dict() for o in self.outcomes for q in o.quarantined]
        rows += [
            QuarantineEntry(printable_name(str(s.path)), "", None, s.reason_code, s.message, "").as_dict()
            for s in self.skipped
            if s.refused
        ]
        return pl.DataFrame(rows, schema=QUARANTINE_POLARS_SCHEMA, orient="row")

    def summary(self) -> pl.DataFrame:
        rows = [
            {
                "file": o.file,
                "source": o.source,
                "status": "rejected" if any(q.line is None for q in o.quarantined) else "ingested",
                "reason_code": next((q.reason_code for q in o.quarantined if q.line is None), None),
                "rows_in": o.rows_in,
                "valid": o.n_valid,
                "quarantined": len(o.quarantined),
                "skipped": sum(o.skipped.values()),
                "whole_file_rejected": any(q.line is None for q in o.quarantined),
                "balanced": o.balanced,
            }
            for o in self.outcomes
        ]
        rows += [
            {
                "file": printable_name(str(s.path)),
                "source": None,
                "status": "refused" if s.refused else "skipped",
                "reason_code": s.reason_code,
                "rows_in": 0,
                "valid": 0,
                "quarantined": 1 if s.refused else 0,
                "skipped": 0,
                "whole_file_rejected": s.refused,
                "balanced": True,
            }
            for s in self.skipped
        ]
        return pl.DataFrame(
            rows,
            schema={
                "file": pl.String,
                "source": pl.String,
                "status": pl.String,
                "reason_code": pl.String,
                "rows_in": pl.Int64,
                "valid": pl.Int64,
                "quarantined": pl.Int64,
                "skipped": pl.Int64,
                "whole_file_rejected": pl.Boolean,
                "balanced": pl.Boolean,
            },
        )


def source_name(path: Path) -> str:
    """`seed` for the shipped corpus, `empathetic_dialogues` for ED files, else the file stem."""
    if path.parent.name == "seed":
        return "seed"
    return printable_name(path.stem)


def rejected_outcome(name: str, sha: str, source: str, code: str, message: str, raw: str = "") -> FileOutcome:
    outcome = FileOutcome(file=name, file_sha256=sha, source=source, rows_in=0)
    outcome.quarantined.append(QuarantineEntry(name, sha, None, code, message, raw))
    return outcome


def ingest_file(
    path: Path,
    *,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    seen_ids: dict[str, str],
    archive_dir: Path | None = None,
) -> FileOutcome:
    """Read, archive and validate one file. Never raises: a file that cannot be read, archived or
    parsed is one whole-file quarantine entry (reason code + message naming the file), and the ids of
    a file only join `seen_ids` once the whole file is validated, so a file that fails half-way cannot
    make another file's good rows look like duplicates."""
    name = printable_name(str(path))
    sha = ""
    data = None
    try:
        size = path.stat().st_size
        if size > limits.max_file_mb * 1024 * 1024:
            sha = sha256_file(path)
            archive_raw_file(path, sha, archive_dir)
            return too_large_outcome(name, sha, size, limits)
        stream = stream_format(path.name, size, _head(path), limits)
        if stream:
            sha = sha256_file(path)  # streaming: the file is never held whole
        else:
            data = path.read_bytes()
            sha = sha256_bytes(data)
    except OSError as exc:
        return rejected_outcome(
            name,
            sha,
            source_name(path),
            "unreadable",
            f"{name} cannot be read ({exc.strerror or exc}); check its permissions",
        )
    try:
        archive_raw_file(path, sha, archive_dir)
    except OSError as exc:
        return rejected_outcome(
            name,
            sha,
            source_name(path),
            "archive_failed",
            f"{name} could not be archived before validation ({exc.strerror or exc}); it is "
            "left in place and read again by the next run",
        )
    local_seen = dict(seen_ids)
    if data is None:
        try:
            with open(path, "rb") as fh:
                outcome = validate_stream(
                    fh.read, name, sha, stream, taxonomy=taxonomy, limits=limits, seen_ids=local_seen
                )
        except OSError as exc:
            return rejected_outcome(
                name,
                sha,
                source_name(path),
                "unreadable",
                f"{name} cannot be read ({exc.strerror or exc}); check its permissions",
            )
    else:
        outcome = validate_bytes(data, name, taxonomy=taxonomy, limits=limits, seen_ids=local_seen)
    if not outcome.balanced:
        return rejected_outcome(
            name,
            sha,
            outcome.source,
            "accounting_error",
            f"{name}: rows in ({outcome.rows_in}) != valid + quarantined + skipped; the file is "
            "held back whole (a reader bug: please report it with this file)",
        )
    seen_ids.update(local_seen)
    return outcome


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4096)


def too_large_outcome(name: str, sha: str, size: int, limits: ValidationLimits) -> FileOutcome:
    """A file over the hard cap `max_file_mb` is rejected whole without being read (only hashed and
    archived, streaming)."""
    outcome = FileOutcome(file=name, file_sha256=sha, source=source_name(Path(name)), rows_in=0)
    outcome.quarantined.append(
        QuarantineEntry(
            name,
            sha,
            None,
            "file_too_large",
            f"{name} is {size / 1024 / 1024:.1f} MB ({size:,} bytes), over the hard cap of "
            f"{limits.max_file_mb:g} MB: raise max_file_mb in the corpus_sources resource (JSONL is read in "
            "blocks, so memory is not the limit), or split the file",
            "",
        )
    )
    return outcome


def _block_bytes(limits: ValidationLimits) -> int:
    return max(1, int(limits.stream_block_mb * 1024 * 1024))


def _is_jsonl(name: str) -> bool:
    return Path(name).suffix.lower() in (".jsonl", ".ndjson")


def stream_format(name: str, size: int, head: bytes, limits: ValidationLimits) -> str:
    """How a file of `size` bytes that starts with `head` (its first 4096 bytes) is read: "" whole, or in
    blocks of `stream_block_mb` as "jsonl" or a STREAMABLE_CSV format ("csv", "ed_conversations"): a file
    over one block whose rows stand alone. UTF-16 (two-byte newlines) and the EmpatheticDialogues files
    that group turns by conversation across the file are read whole."""
    if size <= _block_bytes(limits) or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ""
    if _is_jsonl(name):
        return "jsonl"
    try:
        fmt = sniff_format(Path(name), head)
    except FileRejected:
        return ""
    return fmt if fmt in STREAMABLE_CSV else ""


def _unread(first: bytes, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """`read` with `first`, the bytes a caller already took from the stream, given back by the first call."""
    pending = [first]
    return lambda n: pending.pop() if pending else read(n)


def validate_stream(
    read: Callable[[int], bytes],
    name: str,
    sha: str,
    fmt: str,
    *,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    seen_ids: dict[str, str] | None,
    columns: tuple[str, ...] | None = None,
) -> FileOutcome:
    """A file read through `read(n)` (a file object's read, an S3 body's) and validated block by block
    (`fmt` from `stream_format`): the outcome of the whole file at once, holding one block at a time.
    `columns`: keep only these columns of the valid rows (the landing sensor needs just the emotions, so
    its memory does not grow with the rows). Never raises but for an OSError of the reading."""
    first = read(_block_bytes(limits))
    head = printable_raw(first[:200].decode("utf-8", "replace"), 200)
    blocks = newline_blocks(_unread(first, read), _block_bytes(limits))
    display = printable_name(Path(name).name)
    if fmt == "jsonl":
        return validate_row_blocks(
            jsonl_block_rows(blocks, display),
            name,
            sha,
            source_name(Path(name)),
            "JSONL",
            taxonomy=taxonomy,
            limits=limits,
            seen_ids=seen_ids,
            head=head,
            columns=columns,
        )
    source = "empathetic_dialogues" if fmt.startswith("ed_") else source_name(Path(name))
    return validate_row_blocks(
        csv_block_rows(blocks, display, fmt, _block_bytes(limits)),
        name,
        sha,
        source,
        Path(name).suffix,
        taxonomy=taxonomy,
        limits=limits,
        seen_ids=seen_ids,
        head=head,
        columns=columns,
    )


def validate_readable(
    read: Callable[[int], bytes],
    name: str,
    size: int,
    sha: str,
    *,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    columns: tuple[str, ...] | None = None,
) -> FileOutcome:
    """`validate_bytes` of a file read through `read(n)` (an open file's, an S3 body's) whose `size` and
    sha256 are known: a file that `stream_format` reads in blocks is never held whole (`columns` as in
    `validate_stream`); any other is read whole (it is at most one block, or a format read whole anyway).
    No side effects: what the landing sensor runs on a new file version."""
    head = read(4096)
    fmt = stream_format(name, size, head, limits)
    if not fmt:
        data = b"".join([head, *iter(lambda: read(1 << 20), b"")])
        return validate_bytes(data, name, taxonomy=taxonomy, limits=limits)
    return validate_stream(
        _unread(head, read),
        printable_name(name),
        sha,
        fmt,
        taxonomy=taxonomy,
        limits=limits,
        seen_ids=None,
        columns=columns,
    )


def validate_row_blocks(
    row_blocks: Iterable[list[RawRow]],
    name: str,
    sha: str,
    source: str,
    kind: str,
    *,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    seen_ids: dict[str, str] | None,
    head: str = "",
    columns: tuple[str, ...] | None = None,
) -> FileOutcome:
    """A file's rows given block by block (`jsonl_block_rows`, `csv_block_rows`), validated block by
    block: the same outcome as the whole file at once (rows, reasons, order, duplicates across blocks).
    `seen_ids` is only updated when the whole file is read (None: the ids are not handed back); a FileRejected or any other exception of the
    reader is the file's whole-file quarantine entry (`kind` names the format in its message)."""
    outcome = FileOutcome(file=name, file_sha256=sha, source=source, rows_in=0)
    local_seen = FileIds(name, seen_ids if seen_ids is not None else {})
    frames = []
    try:
        for rows in row_blocks:
            part = validate_rows(
                rows,
                file=name,
                file_sha256=sha,
                source=source,
                taxonomy=taxonomy,
                limits=limits,
                seen_ids=local_seen,
            )
            outcome.rows_in += part.rows_in
            outcome.quarantined += part.quarantined
            for key, n in part.skipped.items():
                outcome.skipped[key] = outcome.skipped.get(key, 0) + n
            for key, n in part.normalised.items():
                outcome.normalised[key] = outcome.normalised.get(key, 0) + n
            if part.frame is not None and part.frame.height:
                frames.append(part.frame if columns is None else part.frame.select(columns))
    except FileRejected as rejected:
        return rejected_outcome(name, sha, source, rejected.reason_code, rejected.message, head)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a block trips on stays this file's problem
        return rejected_outcome(
            name,
            sha,
            source,
            "reader_error",
            f"{name} could not be read as {kind or 'text'} ({type(exc).__name__}: {str(exc)[:200]})",
            head,
        )
    if seen_ids is not None:
        seen_ids.update(local_seen.own())
    empty = corpus_frame([])
    outcome.frame = (
        pl.concat(frames, how="vertical") if frames else (empty if columns is None else empty.select(columns))
    )
    return outcome


def validate_bytes(
    data: bytes,
    name: str,
    *,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    seen_ids: dict[str, str] | None = None,
) -> FileOutcome:
    """Read and validate one file's bytes with no side effects (no archive, no writes): what
    `ingest_file` does after archiving, and what the landing-zone sensor runs on a new file (local or
    S3) to learn which emotions it touches before requesting a run."""
    path = Path(name)
    name = printable_name(name)
    sha = sha256_bytes(data)
    source = source_name(path)
    head = printable_raw(data[:200].decode("utf-8", "replace"), 200)
    stream = stream_format(name, len(data), data[:4096], limits)
    if stream:
        return validate_stream(
            io.BytesIO(data).read,
            name,
            sha,
            stream,
            taxonomy=taxonomy,
            limits=limits,
            seen_ids=seen_ids if seen_ids is not None else {},
        )
    try:
        fmt = sniff_format(path, data)
        if fmt.startswith("ed_"):
            source = "empathetic_dialogues"
        rows = READERS[fmt](data, printable_name(path.name))
    except FileRejected as rejected:
        return rejected_outcome(name, sha, source, rejected.reason_code, rejected.message, head)
    except Exception as exc:  # noqa: BLE001 - whatever a reader trips on stays this file's problem
        return rejected_outcome(
            name,
            sha,
            source,
            "reader_error",
            f"{name} could not be read as {path.suffix or 'text'} ({type(exc).__name__}: {str(exc)[:200]})",
            head,
        )
    return validate_rows(
        rows,
        file=name,
        file_sha256=sha,
        source=source,
        taxonomy=taxonomy,
        limits=limits,
        seen_ids=seen_ids if seen_ids is not None else {},
    )


def ingest_files(
    paths: list[Path],
    *,
    taxonomy: Taxonomy,
    limits: ValidationLimits | None = None,
    archive_dir: Path | None = None,
    skipped: list[SkippedPath] | None = None,
    language_cache: Path | None = None,
) -> IngestResult:
    """Read, archive and validate `paths` in order (duplicates across files name the first). `language_cache`:
    a Parquet file of the language guesses of earlier runs (`language.cached_guesses`), so that a text read
    before is not identified again."""
    limits = limits or ValidationLimits()
    seen: dict[str, str] = {}
    result = IngestResult(skipped=list(skipped or []))
    with cached_guesses(language_cache):
        for path in paths:
            try:
                outcome = ingest_file(
                    path, taxonomy=taxonomy, limits=limits, seen_ids=seen, archive_dir=archive_dir
                )
            except Exception as exc:  # noqa: BLE001 - per-file isolation: one file never stops the others
                name = printable_name(str(path))
                outcome = rejected_outcome(
                    name,
                    "",
                    source_name(Path(path)),
                    "ingest_error",
                    f"{name} could not be ingested ({type(exc).__name__}: {str(exc)[:200]})",
                )
            result.outcomes.append(outcome)
    return result


def archive_raw_file(path: Path, sha: str, archive_dir: Path | None) -> None:
    """Keep the raw file, content-addressed, so that nothing is lost whatever the validation said."""
    if archive_dir is None or not sha:
        return
    # The printable name: a name that is not UTF-8 would otherwise follow the file into the archive.
    target = archive_dir / sha[:2] / sha / printable_name(path.name)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def situations_frame(corpus: pl.DataFrame) -> pl.DataFrame:
    """One row per distinct situation, with how many dialogues it carries."""
    return (
        corpus.group_by("situation_id", maintain_order=True)
        .agg(
            pl.col("emotion").first(),
            pl.col("language").first(),
            pl.col("domain").first(),
            pl.col("situation").first(),
            pl.col("source").first(),
            pl.col("source_label").first(),
            pl.col("source_file").first(),
            pl.col("dialogue_id").drop_nulls().n_unique().alias("n_dialogues"),
        )
        .sort("situation_id")
    )


def dialogues_frame(corpus: pl.DataFrame) -> pl.DataFrame:
    return (
        corpus.filter(pl.col("dialogue_id").is_not_null())
        .select(
            "dialogue_id",
            "situation_id",
            "emotion",
            "language",
            "domain",
            "situation",
            "speaker_utterance",
            "listener_reply",
            "source",
            "source_file",
            "source_line",
        )
        .sort("dialogue_id")
    )
