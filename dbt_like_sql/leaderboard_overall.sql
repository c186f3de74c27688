-- The headline view of the leaderboard: over all emotions, one row per metric and system with the
-- delta against the baseline and the regression flag (per-emotion rows are in `leaderboard`).
SELECT metric, direction, system, value, baseline_value, delta, regression, n
FROM leaderboard
WHERE emotion = 'all'
ORDER BY metric, is_baseline DESC, system
