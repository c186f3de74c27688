-- How successive checkpoints moved: every evaluation run's overall scores (kept in scorecard_history,
-- one row per run, system and metric), with the model's sha256, the item set's fingerprint (equal
-- fingerprints = the same items, comparable numbers), the interval and the verdict against the
-- baseline of that run.
SELECT evaluated_at, run_id, system, model_sha256, items_fingerprint, metric, n, value, ci_low, ci_high,
       baseline_system, delta_vs_baseline, verdict_vs_baseline
FROM scorecard_history
ORDER BY metric, system, evaluated_at
