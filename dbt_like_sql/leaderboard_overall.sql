-- The headline view of the leaderboard: over all emotions, one row per metric and system with its
-- interval, the paired difference from the baseline with its interval, adjusted p and verdict
-- (per-emotion rows are in `leaderboard`).
SELECT metric, direction, system, model_sha256, n, value, ci_low, ci_high, baseline_value, delta,
       delta_ci_low, delta_ci_high, p_adjusted, verdict, regression
FROM leaderboard
WHERE emotion = 'all' AND language = 'all'
ORDER BY metric, is_baseline DESC, system
