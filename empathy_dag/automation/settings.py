"""Knobs of the automation layer, read from the environment so that the sensors only need resources
the project already has (`corpus_sources`, `warehouse`, `model_store`): turning a sensor on never
requires new resource wiring. Tests build sensors with their own `AutomationSettings`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Run tags for cost attribution: every run started by a sensor or schedule of this module carries
# them, so that run_history (and any cost report over Dagster runs) can group by team and trigger.
TEAM_TAG = "team"
COST_CENTER_TAG = "cost_center"
TRIGGER_TAG = "trigger"
# Run-queue key: resources/dagster.yaml limits runs with this tag to one at a time (see README text in
# BENCHMARKS.md "Automation" and the module docstring of `jobs.py`).
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
        )

    def run_tags(self, trigger: str, **more: str) -> dict[str, str]:
        return {TEAM_TAG: self.team, COST_CENTER_TAG: self.cost_center, TRIGGER_TAG: trigger,
                **self.extra_tags, **more}
