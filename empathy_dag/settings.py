"""Where things live. Every location can be overridden by an environment variable so that the same
code runs from a checkout, an installed wheel, a test's temp dir or a container."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent


def assets_dir() -> Path:
    """The non-code inputs of the pipeline: taxonomy, seed situations, prompt templates, rubrics."""
    return Path(os.environ.get("EMPATHY_DAG_ASSETS_DIR", PROJECT_ROOT / "assets"))


def shared_data_dir() -> Path:
    """Public research data (GoEmotions, Epitome, EmpatheticDialogues). Never copied into the repo."""
    return Path(os.environ.get("EMPATHY_DAG_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / ".dagster_home"))


def data_root() -> Path:
    """Parquet files, checkpoints, the DuckDB warehouse and the raw-file archive (local profile)."""
    return Path(os.environ.get("EMPATHY_DAG_DATA_DIR", dagster_home() / "data"))
