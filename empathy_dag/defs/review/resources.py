"""Resources of this stage, merged into the local profile by `profiles.local_resources`."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from empathy_dag.settings import data_root


class ReviewStore(ConfigurableResource):
    """Where review batches are written for people to pick up. Decisions come back through the landing
    zone (`<corpus_sources.landing_dir>/reviews/`), not through here."""

    outbox_dir: str = Field(
        default_factory=lambda: str(data_root() / "review" / "outbox"),
        description="One folder per batch: <outbox_dir>/<batch_id>/.",
    )

    def batch_folder(self, batch_id: str) -> Path:
        return Path(self.outbox_dir) / batch_id


def stage_resources(root: Path) -> dict:
    """Resource key -> resource instance, with every location under `root` (the data root)."""
    return {"review_store": ReviewStore(outbox_dir=str(Path(root) / "review" / "outbox"))}
