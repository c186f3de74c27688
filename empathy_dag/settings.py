"""Where things live. Every location can be overridden by an environment variable so that the same
code runs from a checkout, an installed wheel, a test's temp dir or a container."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    raise FileNotFoundError(
        f"neither {PROJECT_ROOT / name} (source tree) nor {WHEEL_DATA_DIR / name} (installed "
        "wheel) exists: reinstall empathy_dag (`pip install .`) or run from a checkout"
    )


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


def local_locations() -> tuple[str, str, str]:
    """(DuckDB file, Parquet folder, model folder) of the local profile: each from its variable
    (EMPATHY_DAG_DUCKDB, EMPATHY_DAG_PARQUET_DIR, EMPATHY_DAG_MODEL_DIR), else under the data root."""
    root = data_root()
    return (
        os.environ.get("EMPATHY_DAG_DUCKDB", str(root / "warehouse.duckdb")),
        os.environ.get("EMPATHY_DAG_PARQUET_DIR", str(root / "parquet")),
        os.environ.get("EMPATHY_DAG_MODEL_DIR", str(root / "models")),
    )


# The deployment profile (empathy_dag/defs/profiles.py builds its resources). Read here, without Dagster, because
# the external side of a pipes step needs it too.
PROFILE_ENV = "EMPATHY_DAG_PROFILE"
PROFILES = ("local", "aws")


def active_profile() -> str:
    profile = os.environ.get(PROFILE_ENV, "local").strip().lower() or "local"
    if profile not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={profile!r}: expected one of {PROFILES}")
    return profile


# ------------------------------------------------------------------ automation: run tags and sensor knobs
#
# Read from the environment so that the sensors only need resources the project already has
# (`corpus_sources`, `warehouse`, `model_store`): turning a sensor on never requires new resource wiring.
# Tests build sensors with their own `AutomationSettings`.

# Run tags for cost attribution: every run started by a sensor or schedule of this module carries
# them, so that run_history (and any cost report over Dagster runs) can group by team and trigger.
TEAM_TAG = "team"
COST_CENTER_TAG = "cost_center"
TRIGGER_TAG = "trigger"
# Run-queue key: resources/dagster.yaml limits runs with this tag to one at a time (see README text in
# BENCHMARKS.md "Automation" and `defs/run_policies.py`).
RUN_QUEUE_TAG = "empathy_dag/queue"

LANDING_FILE_TAG = "empathy_dag/landing_file"
LANDING_SHA_TAG = "empathy_dag/landing_sha256"
LANDING_EMOTIONS_TAG = "empathy_dag/emotions"
RETRAIN_NEW_PAIRS_TAG = "empathy_dag/new_train_pairs"
RETRAIN_FINGERPRINT_TAG = "empathy_dag/pairs_fingerprint"
RETRAIN_FILES_TAG = "empathy_dag/landing_files"
REVIEW_FILES_TAG = "empathy_dag/review_files"


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


@dataclass(frozen=True)
class AutomationSettings:
    team: str = "empathy"
    cost_center: str = "research"
    # A local file younger than this is probably still being copied: wait for the next tick.
    settle_seconds: float = 10.0
    # s3://bucket/prefix of the production landing zone; empty = the local corpus_sources.landing_dir.
    landing_s3_uri: str = ""
    s3_endpoint_url: str = ""
    # Retraining starts when the training pairs the current dpo_checkpoint has not seen reach this.
    retrain_min_new_pairs: int = 50
    landing_interval_s: int = 30
    # Run monitoring fails a landing run past this (resources/dagster.yaml): a run whose worker died stays
    # STARTED otherwise, and the landing queue (limit 1) behind it never moves.
    landing_max_runtime_s: int = 14400
    retrain_interval_s: int = 300
    extra_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> AutomationSettings:
        return cls(
            team=os.environ.get("EMPATHY_DAG_TEAM", cls.team),
            cost_center=os.environ.get("EMPATHY_DAG_COST_CENTER", cls.cost_center),
            settle_seconds=_env_float("EMPATHY_DAG_LANDING_SETTLE_S", cls.settle_seconds),
            landing_s3_uri=os.environ.get("EMPATHY_DAG_LANDING_S3_URI", ""),
            s3_endpoint_url=os.environ.get("EMPATHY_DAG_S3_ENDPOINT_URL", ""),
            retrain_min_new_pairs=_env_int("EMPATHY_DAG_RETRAIN_MIN_NEW_PAIRS", cls.retrain_min_new_pairs),
            landing_max_runtime_s=_env_int("EMPATHY_DAG_LANDING_MAX_RUNTIME_S", cls.landing_max_runtime_s),
        )

    def run_tags(self, trigger: str, **more: str) -> dict[str, str]:
        return {
            TEAM_TAG: self.team,
            COST_CENTER_TAG: self.cost_center,
            TRIGGER_TAG: trigger,
            **self.extra_tags,
            **more,
        }


# Read once, when the definitions load: the sensors and schedules of every stage take these.
AUTOMATION_SETTINGS = AutomationSettings.from_env()
