"""Where things live. Every location can be overridden by an environment variable so that the same
code runs from a checkout, an installed wheel, a test's temp dir or a container."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
# The design card's top-level folders (`assets/`, `dbt_like_sql/`, `resources/`) live beside the package in
# the source tree; a wheel carries copies inside the package (setup.py's build_py puts them here), so a
# non-editable install finds every prompt, taxonomy file and SQL model without the source tree.
SHIPPED_FOLDERS = ("assets", "dbt_like_sql", "resources")
WHEEL_DATA_DIR = PACKAGE_DIR / "_shipped"


def shipped_dir(name: str) -> Path:
    """The folder `name` (one of SHIPPED_FOLDERS): the source tree's in a checkout, else the wheel's copy.
    Missing both is an error, never an empty pipeline: a silently absent SQL folder would drop the
    leaderboard from the definitions."""
    if name not in SHIPPED_FOLDERS:
        raise ValueError(f"{name!r} is not one of the shipped folders {SHIPPED_FOLDERS}")
    for candidate in (PROJECT_ROOT / name, WHEEL_DATA_DIR / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"neither {PROJECT_ROOT / name} (source tree) nor {WHEEL_DATA_DIR / name} (installed "
                            "wheel) exists: reinstall empathy_dag (`pip install .`) or run from a checkout")


def assets_dir() -> Path:
    """The non-code inputs of the pipeline: taxonomy, seed situations, prompt templates, rubrics."""
    override = os.environ.get("EMPATHY_DAG_ASSETS_DIR")
    return Path(override) if override else shipped_dir("assets")


def shared_data_dir() -> Path:
    """Public research data (GoEmotions, Epitome, EmpatheticDialogues). Never copied into the repo."""
    return Path(os.environ.get("EMPATHY_DAG_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / ".dagster_home"))


def data_root() -> Path:
    """Parquet files, checkpoints, the DuckDB warehouse and the raw-file archive (local profile)."""
    return Path(os.environ.get("EMPATHY_DAG_DATA_DIR", dagster_home() / "data"))


# The deployment profile (empathy_dag/profiles.py builds its resources). Read here, without Dagster, because
# the external side of a pipes step needs it too.
PROFILE_ENV = "EMPATHY_DAG_PROFILE"
PROFILES = ("local", "aws")


def active_profile() -> str:
    profile = os.environ.get(PROFILE_ENV, "local").strip().lower() or "local"
    if profile not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={profile!r}: expected one of {PROFILES}")
    return profile
