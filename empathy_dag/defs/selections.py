"""The asset selections the jobs of several stages share, written with `AssetSelection` (groups, keys,
`.downstream()`), so that a job's assets are resolved by Dagster against the real asset graph when the
definitions load, not computed by walking a graph at import time. `tests/snapshots/definitions.json` pins
what each resolves to."""

from __future__ import annotations

from dagster import AssetSelection

# The one step that validates every landing file (corpus_rows + quarantine + ingest_file_log, a multi-asset).
INGEST_STEP_KEYS = ("corpus_rows", "quarantine", "ingest_file_log")
INGEST_STEP = AssetSelection.assets(*INGEST_STEP_KEYS)

TRAINING_CHECKPOINT_KEYS = ("sft_checkpoint", "dpo_checkpoint")
TRAINING_CHECKPOINTS = AssetSelection.assets(*TRAINING_CHECKPOINT_KEYS)

# The review stage's unpartitioned tables: re-read from the whole decision inbox by review_decisions_job.
REVIEW_DECISION_KEYS = (
    "review_decisions",
    "review_quarantine",
    "review_agreement",
    "reviewer_pair_agreement",
    "reviewer_acceptance",
)
REVIEW_DECISION_TABLES = AssetSelection.assets(*REVIEW_DECISION_KEYS)

# The data work of a new landing file: ingest, then every per-emotion data asset the corpus feeds
# (situations, dialogues, generation, curation, review batches, splits, pairs, the evaluation set), but
# nothing a checkpoint feeds (evaluation of a trained model is not data work), not the whole-inbox review
# tables (their own job), and not the SQL reports (the nightly evaluation refreshes those).
LANDING_DATA = (
    (INGEST_STEP | AssetSelection.assets("corpus_rows").downstream())
    - TRAINING_CHECKPOINTS.downstream()
    - REVIEW_DECISION_TABLES
    - AssetSelection.groups("warehouse")
)

# Retraining: the checkpoints and everything they feed (reference log-probs, DPO, evaluation, leaderboard,
# promotion, export, the merged model).
RETRAINING = TRAINING_CHECKPOINTS.downstream()

# Re-evaluation: the evaluation stage and what reads it (SQL models, promotion, the merged model), never training.
EVALUATION = AssetSelection.groups("evaluate").downstream() - TRAINING_CHECKPOINTS
