"""The landing zone: a folder (local profile) or an S3 prefix (production) where new situation and
dialogue files are dropped. The sensor lists it, validates each new file version with the ingest rules
(without side effects), and asks for runs that rebuild only the emotion partitions the file touches.

Decisions (documented for the README):
- A file is identified by its content sha256. The cursor remembers, per file name, the (size, mtime or
  ETag) it last saw, so an unchanged file is not re-hashed on every tick, and the set of content hashes
  already processed, so a copy of a processed file under another name requests nothing.
- `run_key` is the content sha256 (suffixed with the partition range when a file's emotions are not
  contiguous in taxonomy order and need several runs), so a file dropped twice, or a tick repeated after
  a crash, ingests once: Dagster skips a run request whose run_key already ran for this sensor.
- Files are never moved or deleted. Each processed file version is recorded in the warehouse table
  `landing_log` (outcome, counts, reasons, emotions, run keys).
- A file with no valid row requests no run. Its reasons are in `landing_log` at once; its quarantine
  rows land in the `quarantine` table with the next ingest run (ingest_corpus re-reads every file of
  the landing zone, and the quarantine table is a full snapshot of that read), so the quarantine never
  holds rows written by anything but the ingest asset.
- Files whose name starts with "." or ends with .tmp/.part/.crdownload, and local files modified less
  than `settle_seconds` ago, are still being written: they are left for a later tick.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from empathy_dag.ingest.corpus import too_large_outcome, validate_bytes
from empathy_dag.ingest.records import FileOutcome, ValidationLimits
from empathy_dag.taxonomy import EMOTIONS, Taxonomy

IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial")
# Subfolders of the landing zone that hold other files than corpus rows (review decisions, issue 10):
# the corpus reader and this sensor leave them alone, the S3 sync keeps them as subfolders.
REVIEWS_SUBFOLDER = "reviews"
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


class LandingZone(Protocol):
    def list_files(self) -> list[LandingFile]: ...

    def read_bytes(self, file: LandingFile) -> bytes: ...

    def sha256(self, file: LandingFile) -> str: ...


def _skip_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base or base.startswith(".") or base.lower().endswith(IN_PROGRESS_SUFFIXES)


class LocalLandingZone:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def list_files(self) -> list[LandingFile]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in sorted(self.folder.iterdir()):
            if not p.is_file() or _skip_name(p.name):
                continue
            st = p.stat()
            out.append(LandingFile(p.name, str(p), st.st_size, str(st.st_mtime_ns), st.st_mtime))
        return out

    def read_bytes(self, file: LandingFile) -> bytes:
        return Path(file.uri).read_bytes()

    def sha256(self, file: LandingFile) -> str:
        h = hashlib.sha256()
        with open(file.uri, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


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
                if key.endswith("/") or _skip_name(key):
                    continue
                name = key[len(self.prefix):].lstrip("/") or key
                if in_non_corpus_subfolder(name):
                    continue
                modified = obj["LastModified"].timestamp() if obj.get("LastModified") else 0.0
                out.append(LandingFile(name, f"s3://{self.bucket}/{key}", int(obj["Size"]),
                                       str(obj.get("ETag", "")).strip('"'), modified))
        return sorted(out, key=lambda f: f.name)

    def _key(self, file: LandingFile) -> str:
        return file.uri[len(f"s3://{self.bucket}/"):]

    def read_bytes(self, file: LandingFile) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(file))["Body"].read()

    def sha256(self, file: LandingFile) -> str:
        h = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(file))["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()


@dataclass
class LandingCursor:
    """Serialized as the sensor cursor. `seen`: name -> "size:version:sha256"; `shas`: processed contents."""

    seen: dict[str, str] = field(default_factory=dict)
    shas: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(seen=dict(data.get("seen", {})), shas=set(data.get("shas", [])))

    def dump(self) -> str:
        return json.dumps({"seen": self.seen, "shas": sorted(self.shas)}, sort_keys=True)


@dataclass
class LandingDecision:
    file: LandingFile
    sha256: str
    outcome: str  # accepted | rejected | duplicate_content
    rows_in: int = 0
    valid_rows: int = 0
    quarantined_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    emotions: list[str] = field(default_factory=list)  # taxonomy order
    run_keys: list[str] = field(default_factory=list)

    def log_row(self, detected_at: datetime) -> dict:
        return {
            "file": self.file.name, "uri": self.file.uri, "sha256": self.sha256, "size_bytes": self.file.size,
            "detected_at": detected_at, "outcome": self.outcome, "rows_in": self.rows_in,
            "valid_rows": self.valid_rows, "quarantined_rows": self.quarantined_rows,
            "reasons": self.reasons, "emotions": ",".join(self.emotions), "run_keys": ",".join(self.run_keys),
        }


def emotions_touched(outcome: FileOutcome, order: list[str] = EMOTIONS) -> list[str]:
    """The emotion partitions a file's valid rows belong to, in taxonomy order."""
    present = {r.emotion for r in outcome.records}
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
    """Validate one file version (read-only) and say which emotions it touches."""
    if file.size > limits.max_file_mb * 1024 * 1024:
        outcome = too_large_outcome(file.uri, sha, file.size, limits)
    else:
        outcome = validate_bytes(zone.read_bytes(file), file.uri, taxonomy=taxonomy, limits=limits)
    reasons: dict[str, int] = {}
    for q in outcome.quarantined:
        reasons[q.reason_code] = reasons.get(q.reason_code, 0) + 1
    emotions = emotions_touched(outcome, taxonomy.labels)
    decision = LandingDecision(
        file=file, sha256=sha, outcome="accepted" if emotions else "rejected", rows_in=outcome.rows_in,
        valid_rows=len(outcome.records), quarantined_rows=len(outcome.quarantined), reasons=reasons,
        emotions=emotions,
    )
    ranges = contiguous_ranges(emotions, taxonomy.labels)
    decision.run_keys = [run_key_for(sha, r, len(ranges)) for r in ranges]
    return decision


def changed_file_versions(
    zone: LandingZone, cursor: LandingCursor, *, settle_seconds: float = 0.0, now: float | None = None,
    files: list[LandingFile] | None = None,
) -> tuple[list[tuple[LandingFile, str]], LandingCursor]:
    """Every file (of `files`, default: the zone's listing) whose (size, version) differs from what
    `cursor` saw, with its content sha256, and the cursor after them (`seen` updated, `shas` untouched).
    Unsettled files are left for a later tick."""
    now = time.time() if now is None else now
    new_cursor = LandingCursor(seen=dict(cursor.seen), shas=set(cursor.shas))
    changed = []
    for file in zone.list_files() if files is None else files:
        stamp = f"{file.size}:{file.version}"
        previous = cursor.seen.get(file.name, "")
        if previous.rsplit(":", 1)[0] == stamp:
            continue
        if settle_seconds and now - file.modified < settle_seconds:
            continue  # probably still being copied; the next tick sees it settled
        sha = zone.sha256(file)
        new_cursor.seen[file.name] = f"{stamp}:{sha}"
        changed.append((file, sha))
    return changed, new_cursor


def scan_landing_zone(
    zone: LandingZone,
    cursor: LandingCursor,
    *,
    taxonomy: Taxonomy,
    limits: ValidationLimits,
    settle_seconds: float = 0.0,
    now: float | None = None,
) -> tuple[list[LandingDecision], LandingCursor]:
    """Every new or changed file version since `cursor`, decided; and the cursor after them."""
    changed, new_cursor = changed_file_versions(zone, cursor, settle_seconds=settle_seconds, now=now)
    decisions = []
    for file, sha in changed:
        if sha in new_cursor.shas:
            decisions.append(LandingDecision(file=file, sha256=sha, outcome="duplicate_content"))
            continue
        decisions.append(decide_file(zone, file, sha, taxonomy=taxonomy, limits=limits))
        new_cursor.shas.add(sha)
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
    files = zone.list_files()
    changed, new_cursor = changed_file_versions(zone, cursor, settle_seconds=settle_seconds, now=now, files=files)
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
