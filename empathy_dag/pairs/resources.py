"""Resources of this stage, merged into the local profile by `profiles.local_resources`."""

from __future__ import annotations

from pathlib import Path


def stage_resources(root: Path) -> dict:
    """Resource key -> resource instance, with every location under `root` (the data root)."""
    return {}
