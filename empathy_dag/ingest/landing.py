"""The landing zone: a folder (local profile) or an S3 prefix (production) where new situation and
dialogue files are dropped. The sensor lists it, validates each new file version with the ingest rules
(without side effects), and asks for runs that rebuild only the emotion partitions the file touches.

Decisions (documented for the README):
- A file is identified by its content sha256. The cursor remembers, per file name, the (size, mtime or
  ETag) it last saw, so an unchanged file is not re-hashed on every tick, the set of content hashes
  already processed, so a copy of a processed file under another name requests nothing, and the emotions
  each content touched, so that a change can rebuild what the old content fed.
- `run_key` is the content sha256 (suffixed with the partition range when a file's emotions are not
  contiguous in taxonomy order and need several runs), so a file dropped twice, or a tick repeated after
  a crash, ingests once: Dagster skips a run request whose run_key already ran for this sensor.
- A file replaced under the same name rebuilds the emotions of the old content and of the new one (the
  old rows must leave `situations`); a deleted file rebuilds the emotions it fed (its rows leave, since
  ingest re-reads the zone); a file reverted to content seen before does the same as a replacement.
  Those runs are keyed by the content and the file version (`<sha>:<event id>`), so a replayed tick asks
  for the same keys and a later change of the same kind for new ones.
- Files are never moved or deleted. Every event (a file version seen, skipped, refused or deleted) is
  appended to the warehouse table `landing_log` (outcome, counts, reasons, emotions, run keys): it is a
  history, keyed by (file, sha256, version) so that only a replayed tick writes nothing twice.
- Subfolders are walked, symlinks and non-regular files are refused unread, hidden files and partial
  uploads are skipped (`ingest.sources.list_landing_folder`, the rules ingest itself reads with); each is
  logged once per name with its reason.
- Nothing a file holds can fail a tick: a file whose validation raises is logged as `error` with the
  message and the other files of the tick go on.
- A file with no valid row requests no run. Its reasons are in `landing_log` at once; its quarantine
  rows land in the `quarantine` table with the next ingest run (ingest_corpus re-reads every file of
  the landing zone, and the quarantine table is a full snapshot of that read), so the quarantine never
  holds rows written by anything but the ingest asset.
- Local files modified less than `settle_seconds` ago are still being written: they are left for a
  later tick.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from empathy_dag.ingest.corpus import too_large_outcome, validate_readable
from empathy_dag.ingest.records import FileOutcome, ValidationLimits
from empathy_dag.ingest.sources import IN_PROGRESS_SUFFIXES, MAX_DEPTH, list_landing_folder, printable_name
from empathy_dag.models import sha256_file
from empathy_dag.taxonomy import EMOTIONS, Taxonomy

__all__ = ["IN_PROGRESS_SUFFIXES"]  # re-exported: the review inbox and the S3 sync use the same rule
# Subfolders of the landing zone that hold other files than corpus rows (review decisions, issue 10):
# the corpus reader and this sensor leave them alone, the S3 sync keeps them as subfolders.
REVIEWS_SUBFOLDER = "reviews"
# A tick validates a large file in blocks of at most this many MB, whatever `stream_block_mb` says: the
# outcome does not depend on the block size (tests/test_ingest_columnar.py), and a block's rows take ~25x
# its size while validated (BENCHMARKS.md, Scale), so a 16 MB block would be ~400 MB for a sensor tick.
SENSOR_BLOCK_MB = 4.0
NON_CORPUS_SUBFOLDERS = (REVIEWS_SUBFOLDER,)


def in_non_corpus_subfolder(relative_name: str) -> bool:
    return relative_name.split("/", 1)[0] in NON_CORPUS_SUBFOLDERS and "/" in relative_name


@dataclass(frozen=True)
class LandingFile:
    name: str  # file name (local) or key relative to the prefix (S3)
    uri: str  # local path or s3://bucket/key
    size: int
    version: str  # mtime_ns (local) or ETag (S3): changes when the content may have changed
    modified: float  # epoch seconds
    # (reason_code, message) when the file is listed but not read (symlink, hidden, partial upload...)
    skip: tuple[str, str] | None = None
    refused: bool = False  # skipped for safety (a symlink...), not just for now (a partial upload)


class LandingZone(Protocol):
    def list_files(self) -> list[LandingFile]: ...

    def open(self, file: LandingFile) -> contextlib.AbstractContextManager[BinaryIO]:
        """The file's content as a stream (`.read(n)`), read once, front to back."""
        ...

    def sha256(self, file: LandingFile) -> str: ...


def _skip_name(name: str) -> tuple[str, str] | None:
    base = name.rsplit("/", 1)[-1]
    if any(part.startswith(".") for part in name.split("/")):
        return (
            "hidden",
            f"{printable_name(name)}: name starts with '.', so it is treated as hidden and not read",
        )
    if base.lower().endswith(IN_PROGRESS_SUFFIXES):
        return (
            "partial_upload",
            f"{printable_name(name)}: looks like a partial upload; it is read once renamed",
        )
    return None


class LocalLandingZone:
    def __init__(
        self,
        folder: str | Path,
        exclude_subfolders: tuple[str, ...] = NON_CORPUS_SUBFOLDERS,
        max_depth: int = MAX_DEPTH,
    ):
        self.folder = Path(folder)
        self.exclude_subfolders = exclude_subfolders
        self.max_depth = max_depth  # 1: top-level files only (the review inbox reads no subfolder)

    def list_files(self) -> list[LandingFile]:
        """Files to read and, with `skip` set, paths that are not read (never opened, never hashed)."""
        files, skipped = list_landing_folder(
            self.folder, exclude_subfolders=self.exclude_subfolders, max_depth=self.max_depth
        )
        out = []
        for p in files:
            try:
                st = p.stat(follow_symlinks=False)
            except OSError as exc:  # vanished or unreadable between listing and stat
                out.append(
                    LandingFile(
                        printable_name(p.relative_to(self.folder).as_posix()),
                        str(p),
                        0,
                        "",
                        0.0,
                        skip=("unreadable", f"cannot be inspected ({exc.strerror or exc})"),
                    )
                )
                continue
            out.append(
                LandingFile(
                    printable_name(p.relative_to(self.folder).as_posix()),
                    str(p),
                    st.st_size,
                    str(st.st_mtime_ns),
                    st.st_mtime,
                )
            )
        out += [
            LandingFile(
                s.name,
                printable_name(str(s.path)),
                0,
                "",
                0.0,
                skip=(s.reason_code, s.message),
                refused=s.refused,
            )
            for s in skipped
        ]
        return sorted(out, key=lambda f: f.name)

    def open(self, file: LandingFile) -> contextlib.AbstractContextManager[BinaryIO]:
        if file.skip is not None:
            raise ValueError(f"{file.name} is not read: {file.skip[1]}")
        return open(file.uri, "rb")

    def sha256(self, file: LandingFile) -> str:
        return sha256_file(Path(file.uri))


class S3LandingZone:
    """An S3 prefix, through a boto3 client (dagster-aws `S3Resource().get_client()`). Only listing and
    reading: the sensor never writes to the landing zone."""

    def __init__(self, client, bucket: str, prefix: str = ""):
        self.client, self.bucket, self.prefix = client, bucket, prefix.lstrip("/")

    @classmethod
    def from_uri(cls, uri: str, endpoint_url: str = "") -> S3LandingZone:
        from dagster_aws.s3 import S3Resource

        if not uri.startswith("s3://"):
            raise ValueError(f"landing S3 URI must start with s3://, got {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        client = S3Resource(endpoint_url=endpoint_url or None).get_client()
        return cls(client, bucket, prefix)

    def list_files(self) -> list[LandingFile]:
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                name = key[len(self.prefix) :].lstrip("/") or key
                if in_non_corpus_subfolder(name):
                    continue
                modified = obj["LastModified"].timestamp() if obj.get("LastModified") else 0.0
                out.append(
                    LandingFile(
                        printable_name(name),
                        f"s3://{self.bucket}/{key}",
                        int(obj["Size"]),
                        str(obj.get("ETag", "")).strip('"'),
                        modified,
                        skip=_skip_name(name),
                    )
                )
        return sorted(out, key=lambda f: f.name)

    def _key(self, file: LandingFile) -> str:
        return file.uri[len(f"s3://{self.bucket}/") :]

    def open(self, file: LandingFile) -> contextlib.AbstractContextManager[BinaryIO]:
        # botocore's StreamingBody reads from the socket as asked: the object is never held whole.
        return contextlib.closing(self.client.get_object(Bucket=self.bucket, Key=self._key(file))["Body"])

    def sha256(self, file: LandingFile) -> str:
        h = hashlib.sha256()
        with self.open(file) as body:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


@dataclass
class LandingCursor:
    """Serialized as the sensor cursor. `seen`: name -> "size:version:sha256" ("skip:<reason>" for a path
    that is not read); `shas`: processed contents; `emotions`: sha256 -> the emotions its valid rows
    touched (what a replacement or deletion of that content must rebuild)."""

    seen: dict[str, str] = field(default_factory=dict)
    shas: set[str] = field(default_factory=set)
    emotions: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(
            seen=dict(data.get("seen", {})),
            shas=set(data.get("shas", [])),
            emotions={k: list(v) for k, v in data.get("emotions", {}).items()},
        )

    def dump(self) -> str:
        return json.dumps(
            {"seen": self.seen, "shas": sorted(self.shas), "emotions": self.emotions}, sort_keys=True
        )

    def sha_of(self, name: str) -> str:
        """The content sha256 last seen under `name` ("" for none, or for a path that was not read)."""
        stamp = self.seen.get(name, "")
        return "" if not stamp or stamp.startswith("skip:") else stamp.rsplit(":", 1)[-1]


@dataclass
class LandingDecision:
    file: LandingFile
    sha256: str
    # accepted | rejected | duplicate_content | deleted | skipped | refused | error
    outcome: str
    rows_in: int = 0
    valid_rows: int = 0
    quarantined_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    emotions: list[str] = field(default_factory=list)  # taxonomy order
    run_keys: list[str] = field(default_factory=list)
    event: str = "added"  # added | replaced | touched | copied | restored | deleted | skipped
    previous_sha256: str = ""  # the content this name held before (replaced / deleted)
    # Emotions to rebuild: this content's and, for a replacement or deletion, the old content's.
    rebuild: list[str] = field(default_factory=list)
    run_key_base: str = ""  # the content sha256 for new content; "<sha>:<event id>" for a change
    message: str = ""

    def log_row(self, detected_at: datetime) -> dict:
        return {
            "file": printable_name(self.file.name),
            "uri": printable_name(self.file.uri),
            "sha256": self.sha256,
            "version": self.file.version if self.event != "deleted" else f"deleted:{self.file.version}",
            "size_bytes": self.file.size,
            "detected_at": detected_at,
            "event": self.event,
            "outcome": self.outcome,
            "rows_in": self.rows_in,
            "valid_rows": self.valid_rows,
            "quarantined_rows": self.quarantined_rows,
            "reasons": self.reasons,
            "emotions": ",".join(self.emotions),
            "rebuilt_emotions": ",".join(self.rebuild),
            "previous_sha256": self.previous_sha256,
            "run_keys": ",".join(self.run_keys),
            "message": self.message[:1000],
        }


def emotions_touched(outcome: FileOutcome, order: list[str] = EMOTIONS) -> list[str]:
    """The emotion partitions a file's valid rows belong to, in taxonomy order."""
    present = set(outcome.frame["emotion"]) if outcome.frame is not None else set()
    return [e for e in order if e in present]


def contiguous_ranges(emotions: list[str], order: list[str] = EMOTIONS) -> list[tuple[str, str]]:
    """Group partition keys into runs of neighbours in `order`: a range start..end covers every key
    between them, so only contiguous keys may share one run."""
    index = {e: i for i, e in enumerate(order)}
    positions = sorted(index[e] for e in set(emotions))
    ranges: list[tuple[str, str]] = []
    for pos in positions:
        if ranges and index[ranges[-1][1]] == pos - 1:
            ranges[-1] = (ranges[-1][0], order[pos])
        else:
            ranges.append((order[pos], order[pos]))
    return ranges


def run_key_for(sha: str, rng: tuple[str, str], n_ranges: int) -> str:
    return sha if n_ranges == 1 else f"{sha}:{rng[0]}..{rng[1]}"


def decide_file(
    zone: LandingZone, file: LandingFile, sha: str, *, taxonomy: Taxonomy, limits: ValidationLimits
) -> LandingDecision:
    """Validate one file version (read-only) and say which emotions it touches. Never raises: a file
    that cannot be read or validated is an `error` decision with the message. A file over one block
    (`stream_block_mb`) is streamed from the zone and validated block by block, keeping only its valid
    rows' emotions: a tick's memory does not grow with the file (tests/test_automation_landing.py)."""
    try:
        if file.size > limits.max_file_mb * 1024 * 1024:
            outcome = too_large_outcome(file.uri, sha, file.size, limits)
        else:
            blocks = dataclasses.replace(limits, stream_block_mb=min(limits.stream_block_mb, SENSOR_BLOCK_MB))
            with zone.open(file) as fh:
                outcome = validate_readable(
                    fh.read, file.uri, file.size, sha, taxonomy=taxonomy, limits=blocks, columns=("emotion",)
                )
    except Exception as exc:  # noqa: BLE001 - one file's failure is logged, never the tick's
        return LandingDecision(
            file=file,
            sha256=sha,
            outcome="error",
            reasons={"read_error": 1},
            message=f"{printable_name(file.name)}: {type(exc).__name__}: {str(exc)[:300]}",
        )
    reasons: dict[str, int] = {}
    for q in outcome.quarantined:
        reasons[q.reason_code] = reasons.get(q.reason_code, 0) + 1
    emotions = emotions_touched(outcome, taxonomy.labels)
    decision = LandingDecision(
        file=file,
        sha256=sha,
        outcome="accepted" if emotions else "rejected",
        rows_in=outcome.rows_in,
        valid_rows=outcome.n_valid,
        quarantined_rows=len(outcome.quarantined),
        reasons=reasons,
        emotions=emotions,
    )
    ranges = contiguous_ranges(emotions, taxonomy.labels)
    decision.run_keys = [run_key_for(sha, r, len(ranges)) for r in ranges]
    return decision


def changed_file_versions(
    zone: LandingZone,
    cursor: LandingCursor,
    *,
    settle_seconds: float = 0.0,
    now: float | None = None,
    files: list[LandingFile] | None = None,
) -> tuple[list[tuple[LandingFile, str]], LandingCursor]:
    """Every readable file (of `files`, default: the zone's listing) whose (size, version) differs from
    what `cursor` saw, with its content sha256, and the cursor after them (`seen` updated, `shas`
    untouched). Unsettled files are left for a later tick; paths that are not read are left out."""
    now = time.time() if now is None else now
    new_cursor = LandingCursor(seen=dict(cursor.seen), shas=set(cursor.shas), emotions=dict(cursor.emotions))
    changed = []
    for file in zone.list_files() if files is None else files:
        if file.skip is not None:
            continue
        stamp = f"{file.size}:{file.version}"
        previous = cursor.seen.get(file.name, "")
        if previous.rsplit(":", 1)[0] == stamp:
            continue
        if settle_seconds and now - file.modified < settle_seconds:
            continue  # probably still being copied; the next tick sees it settled
        try:
            sha = zone.sha256(file)
        except OSError:
            continue  # vanished or unreadable since the listing: the next tick sees what became of it
        new_cursor.seen[file.name] = f"{stamp}:{sha}"
        changed.append((file, sha))
    return changed, new_cursor


def _event_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _ordered(emotions, order: list[str]) -> list[str]:
    present = set(emotions)
    return [e for e in order if e in present]


def scan_landing_zone(
    zone: LandingZone,
    cursor: LandingCursor,
    *,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    settle_seconds: float = 0.0,
    now: float | None = None,
) -> tuple[list[LandingDecision], LandingCursor]:
    """Every event since `cursor` (a file version added, replaced, deleted; a path skipped or refused),
    decided, with the emotions to rebuild; and the cursor after them."""
    order = taxonomy.labels
    files = zone.list_files()
    changed, new_cursor = changed_file_versions(
        zone, cursor, settle_seconds=settle_seconds, now=now, files=files
    )
    decisions: list[LandingDecision] = []
    for file in files:
        if file.skip is None:
            continue
        # Logged once per name and reason (a partial upload grows every tick: one row, not one per tick).
        mark = f"skip:{file.skip[0]}"
        if cursor.seen.get(file.name) == mark:
            continue
        new_cursor.seen[file.name] = mark
        decision = LandingDecision(
            file=file,
            sha256="",
            outcome="refused" if file.refused else "skipped",
            reasons={file.skip[0]: 1},
            event="skipped",
            message=file.skip[1],
        )
        previous = cursor.sha_of(file.name)
        if previous:  # a file that was read is now e.g. a symlink: its rows leave, like a deletion
            decision.previous_sha256 = previous
            decision.rebuild = _ordered(cursor.emotions.get(previous, []), order)
            decision.run_key_base = f"skipped:{previous}:{_event_id(file.name, mark)}"
        decisions.append(decision)
    # Contents present under some name (before this tick, or earlier in it), to tell a copy from a
    # restored content: a copy adds no row, a restored content brings its rows back.
    present = {cursor.sha_of(n) for n in cursor.seen} - {""}
    for file, sha in changed:
        previous = cursor.sha_of(file.name)
        if sha in new_cursor.shas and sha in new_cursor.emotions:
            decision = LandingDecision(
                file=file, sha256=sha, outcome="duplicate_content", emotions=list(new_cursor.emotions[sha])
            )
        else:
            decision = decide_file(zone, file, sha, taxonomy=taxonomy, limits=limits)
            if decision.outcome != "error":
                new_cursor.emotions[sha] = list(decision.emotions)
        first_time = sha not in new_cursor.shas
        if decision.outcome == "error":
            # Not remembered as seen: the next tick tries again (the log row is keyed, so written once).
            if file.name in cursor.seen:
                new_cursor.seen[file.name] = cursor.seen[file.name]
            else:
                new_cursor.seen.pop(file.name, None)
        else:
            new_cursor.shas.add(sha)
        rebuild = set(decision.emotions) if (first_time or sha not in present) else set()
        if previous and previous != sha:
            decision.event, decision.previous_sha256 = "replaced", previous
            rebuild |= set(cursor.emotions.get(previous, []))
        elif previous == sha:
            decision.event, rebuild = "touched", set()  # re-dropped or touched: same content, same rows
        elif not first_time:
            decision.event = "copied" if sha in present else "restored"
        if decision.outcome != "error":
            present.add(sha)
        decision.rebuild = _ordered(rebuild, order)
        decision.run_key_base = (
            sha if first_time and not previous else f"{sha}:{_event_id(file.name, file.version, previous)}"
        )
        decisions.append(decision)
    listed = {f.name for f in files}
    for name in sorted(set(cursor.seen) - listed):
        previous = cursor.sha_of(name)
        del new_cursor.seen[name]
        if not previous:
            continue  # a skipped path went away: nothing was read from it
        stamp = cursor.seen[name]
        gone = LandingFile(name=name, uri=name, size=0, version=stamp.rsplit(":", 1)[0], modified=0.0)
        emotions = _ordered(cursor.emotions.get(previous, []), order)
        decisions.append(
            LandingDecision(
                file=gone,
                sha256=previous,
                outcome="deleted",
                event="deleted",
                previous_sha256=previous,
                emotions=emotions,
                rebuild=emotions,
                run_key_base=f"deleted:{previous}:{_event_id(name, stamp)}",
            )
        )
    return decisions, new_cursor


@dataclass
class ReviewInboxChange:
    """What changed in `<landing>/reviews/` since the last tick: decision files added or replaced
    (name -> sha256) and removed. Any change means the decisions table must be rebuilt, because
    `review_decisions` reads every file of the inbox (a removed file withdraws its decisions)."""

    changed: dict[str, str]
    removed: list[str]

    @property
    def run_key(self) -> str:
        # One key per inbox state transition: a repeated tick after a crash asks for nothing new.
        state = json.dumps({"changed": self.changed, "removed": self.removed}, sort_keys=True)
        return "reviews:" + hashlib.sha256(state.encode()).hexdigest()[:32]


def scan_review_inbox(
    zone: LandingZone, cursor: LandingCursor, *, settle_seconds: float = 0.0, now: float | None = None
) -> tuple[ReviewInboxChange | None, LandingCursor]:
    files = [f for f in zone.list_files() if f.skip is None]
    changed, new_cursor = changed_file_versions(
        zone, cursor, settle_seconds=settle_seconds, now=now, files=files
    )
    # A file rewritten with the same content (touched, re-uploaded) changes nothing.
    content = {f.name: sha for f, sha in changed if cursor.seen.get(f.name, "").rsplit(":", 1)[-1] != sha}
    present = {f.name for f in files}
    removed = sorted(name for name in cursor.seen if name not in present)
    for name in removed:
        del new_cursor.seen[name]
    if not content and not removed:
        return None, new_cursor
    return ReviewInboxChange(changed=dict(sorted(content.items())), removed=removed), new_cursor


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
