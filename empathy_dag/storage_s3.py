"""S3 plumbing of the `aws` profile: URIs, the boto3 client (through dagster-aws `S3Resource`, so
credentials come from boto3's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the
ECS task role), folders with a sha256 manifest (model checkpoints), a single file kept on S3 between
runs (the DuckDB warehouse) and the landing zone.

Works against any S3-compatible endpoint (`endpoint_url`): AWS itself, MinIO, or moto on loopback in the
tests. Nothing here stores a credential."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from empathy_dag.ingest.landing import IN_PROGRESS_SUFFIXES, in_non_corpus_subfolder
from empathy_dag.models import sha256_file

MANIFEST_NAME = "_manifest.json"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    if not uri.startswith("s3://"):
        raise ValueError(f"expected an s3:// URI, got {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key.strip("/")


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def s3_client(endpoint_url: str = "", region_name: str = ""):
    """A boto3 S3 client from dagster-aws' `S3Resource` (same retry and session handling as Dagster's
    own S3 integrations)."""
    from dagster_aws.s3 import S3Resource

    return S3Resource(endpoint_url=endpoint_url or None, region_name=region_name or None).get_client()


def storage_options(endpoint_url: str = "", region_name: str = "") -> dict[str, Any]:
    """fsspec-shaped options for UPath / dagster-polars: s3fs reads them as-is and dagster-polars remaps
    them to Polars' object_store keys (aws_endpoint_url, aws_region). Credentials are left to the
    default chain of each library (environment, profile, instance/task role)."""
    client_kwargs = {}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
    if region_name:
        client_kwargs["region_name"] = region_name
    return {"client_kwargs": client_kwargs} if client_kwargs else {}


def _iter_objects(client, bucket: str, prefix: str) -> Iterator[dict]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


# --- folders (model checkpoints) -------------------------------------------------------------------


def folder_manifest(folder: Path) -> dict:
    """Every file of a folder with its size and sha256, plus one sha256 over all of them (names and
    file hashes, sorted) that identifies the folder's content."""
    folder = Path(folder)
    files = {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and q.name != MANIFEST_NAME):
        files[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    if not files:
        raise FileNotFoundError(f"{folder} has no files to publish")
    tree = hashlib.sha256()
    for name, entry in files.items():
        tree.update(name.encode())
        tree.update(entry["sha256"].encode())
    return {"sha256": tree.hexdigest(), "files": files}


def upload_folder(client, folder: Path, bucket: str, prefix: str) -> dict:
    """Upload every file, then the manifest last: a reader that finds the manifest finds a complete
    folder (S3 PUTs are atomic per object, not per folder). Objects under the prefix that the folder
    no longer has are deleted after the manifest is written."""
    manifest = folder_manifest(folder)
    for name in manifest["files"]:
        client.upload_file(str(Path(folder) / name), bucket, join_key(prefix, name))
    client.put_object(
        Bucket=bucket,
        Key=join_key(prefix, MANIFEST_NAME),
        Body=json.dumps(manifest, indent=1, sort_keys=True).encode(),
        ContentType="application/json",
    )
    keep = {join_key(prefix, n) for n in manifest["files"]} | {join_key(prefix, MANIFEST_NAME)}
    _delete_keys(
        client,
        bucket,
        [o["Key"] for o in _iter_objects(client, bucket, join_key(prefix) + "/") if o["Key"] not in keep],
    )
    return manifest


def _delete_keys(client, bucket: str, keys: list[str]) -> int:
    for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
    return len(keys)


def delete_prefix(client, bucket: str, prefix: str) -> int:
    """Delete every object under `prefix/` (a published folder); returns how many."""
    keys = [o["Key"] for o in _iter_objects(client, bucket, join_key(prefix) + "/")]
    return _delete_keys(client, bucket, keys)


def read_manifest(client, bucket: str, prefix: str) -> dict | None:
    try:
        body = client.get_object(Bucket=bucket, Key=join_key(prefix, MANIFEST_NAME))["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def download_folder(client, bucket: str, prefix: str, folder: Path) -> dict:
    """Make `folder` equal to the published folder: download files whose sha256 differs or that are
    missing, delete local files the manifest does not list, and verify every file after download."""
    manifest = read_manifest(client, bucket, prefix)
    if manifest is None:
        raise FileNotFoundError(f"s3://{bucket}/{prefix} has no {MANIFEST_NAME}: nothing was published there")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, entry in manifest["files"].items():
        target = folder / name
        if (
            target.is_file()
            and target.stat().st_size == entry["size"]
            and sha256_file(target) == entry["sha256"]
        ):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        client.download_file(bucket, join_key(prefix, name), str(tmp))
        got = sha256_file(tmp)
        if got != entry["sha256"]:
            tmp.unlink()
            raise OSError(
                f"s3://{bucket}/{join_key(prefix, name)}: sha256 {got} != manifest {entry['sha256']}"
            )
        os.replace(tmp, target)
    for p in [q for q in folder.rglob("*") if q.is_file()]:
        if p.relative_to(folder).as_posix() not in manifest["files"]:
            p.unlink()
    return manifest


# --- one file kept on S3 between runs (the DuckDB warehouse) ---------------------------------------


class ConcurrentUpdateError(RuntimeError):
    """Another process uploaded the file after we downloaded it; our upload would lose its writes."""


@dataclass
class SyncedFile:
    """A local file whose durable copy is one S3 object. `pull()` downloads it when the object changed
    (or the local copy is missing) and remembers the ETag; `push()` uploads with a conditional PUT
    (If-Match the ETag pulled, or If-None-Match when the object did not exist), so two writers that
    started from the same version cannot silently overwrite each other: the second gets
    `ConcurrentUpdateError` and its run fails and can be retried."""

    client: Any
    bucket: str
    key: str
    local_path: Path
    etag: str | None = None

    def _etag_file(self) -> Path:
        return self.local_path.with_name(self.local_path.name + ".s3etag")

    def pull(self) -> bool:
        """True if a download happened."""
        self.local_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                self.etag = None
                return False
            raise
        etag = head["ETag"]
        cached = self._etag_file().read_text() if self._etag_file().is_file() else None
        self.etag = etag
        if cached == etag and self.local_path.is_file():
            return False
        tmp = self.local_path.with_name(f".{self.local_path.name}.part")
        self.client.download_file(self.bucket, self.key, str(tmp))
        os.replace(tmp, self.local_path)
        self._etag_file().write_text(etag)
        return True

    def push(self) -> str:
        condition = {"IfMatch": self.etag} if self.etag else {"IfNoneMatch": "*"}
        try:
            with open(self.local_path, "rb") as fh:
                response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=fh, **condition)
        except self.client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise ConcurrentUpdateError(
                    f"s3://{self.bucket}/{self.key} changed since it was downloaded; rerun the step"
                ) from e
            raise
        self.etag = response["ETag"]
        self._etag_file().write_text(self.etag)
        return self.etag


# --- landing zone -------------------------------------------------------------------------------------


def list_landing_objects(s3_client, bucket: str, prefix: str) -> list[tuple[str, str, int]]:
    """(key, etag, size) of every file object under the prefix, sorted by key. Folder markers and
    files still being written (leading '.', .tmp/.part/... suffixes) are left out, with the same rule
    as the local landing zone."""

    prefix = prefix.lstrip("/")
    out = []
    for obj in _iter_objects(s3_client, bucket, prefix):
        key = obj["Key"]
        base = key.rsplit("/", 1)[-1]
        if not base or base.startswith(".") or base.lower().endswith(IN_PROGRESS_SUFFIXES):
            continue
        out.append((key, str(obj.get("ETag", "")).strip('"'), int(obj["Size"])))
    return sorted(out)


def download_landing_object(
    s3_client, bucket: str, key: str, prefix: str, landing_dir: Path, etag: str = ""
) -> Path:
    """Copy one landing object into the local landing cache (path relative to the prefix, '/' turned
    into '__' so the cache stays flat like the local landing folder; objects under `reviews/` go to the
    `reviews` subfolder, where the review stage reads decisions). Skipped when the cached copy has
    the same ETag (kept in a hidden sidecar file, which the local landing zone ignores)."""

    landing_dir = Path(landing_dir)
    rel = key[len(prefix.lstrip("/")) :].lstrip("/") or key.rsplit("/", 1)[-1]
    if in_non_corpus_subfolder(rel):  # reviews/x.jsonl -> <landing>/reviews/x.jsonl, not a corpus file
        subfolder, _, rel = rel.partition("/")
        landing_dir = landing_dir / subfolder
    target = landing_dir / rel.replace("/", "__")
    sidecar = landing_dir / f".{target.name}.etag"
    if etag and target.is_file() and sidecar.is_file() and sidecar.read_text() == etag:
        return target
    landing_dir.mkdir(parents=True, exist_ok=True)
    tmp = landing_dir / f".{target.name}.part"
    s3_client.download_file(bucket, key, str(tmp))
    os.replace(tmp, target)
    if etag:
        sidecar.write_text(etag)
    return target


def sync_landing_zone(s3_client, landing_uri: str, landing_dir: Path) -> list[Path]:
    """Download every new or changed landing object into `landing_dir`; the local files ingest reads."""
    bucket, prefix = parse_s3_uri(landing_uri)
    paths = [
        download_landing_object(s3_client, bucket, key, prefix, landing_dir, etag)
        for key, etag, _ in list_landing_objects(s3_client, bucket, prefix)
    ]
    remove_deleted_landing_copies(Path(landing_dir), set(paths))
    return paths


def remove_deleted_landing_copies(landing_dir: Path, current: set[Path]) -> list[Path]:
    """Drop the cached copies of objects deleted from the landing prefix, so that their rows leave the
    corpus with the next ingest (the landing sensor asks for that run). Only files this sync downloaded
    (they have an `.<name>.etag` sidecar) are ever removed; anything else in the folder is left alone."""
    removed = []
    for folder in (landing_dir, landing_dir / "reviews"):
        if not folder.is_dir():
            continue
        for sidecar in folder.glob(".*.etag"):
            copy = folder / sidecar.name[1 : -len(".etag")]
            if copy not in current:
                copy.unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
                removed.append(copy)
    return removed
