"""Heavy-step functions run through Dagster Pipes (`empathy_dag.pipes.run_heavy_step`). Each takes JSON
params and the Pipes context, logs through it, and returns the materialization metadata.

`model_folder_checksum` is the smallest real one: it verifies a model folder (file list, sizes, the
same sha256 over the weights as `empathy_dag.models.sha256_tree`) in a separate process. Training and
large generation steps follow the same shape (see empathy_dag/pipes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from empathy_dag.models import sha256_tree


def model_folder_checksum(params: dict, pipes: Any) -> dict:
    folder = Path(params["folder"])
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    pipes.log.info(f"hashing {len(files)} files under {folder}")
    patterns = tuple(params.get("patterns", ["*.safetensors"]))
    digest = sha256_tree(folder, patterns)
    size = sum(p.stat().st_size for p in files)
    pipes.log.info(f"sha256 {digest[:12]}… over {patterns}")
    return {
        "path": str(folder),
        "sha256": digest,
        "files": len(files),
        "size_mb": round(size / 2**20, 3),
        "has_config": (folder / "config.json").is_file(),
    }
