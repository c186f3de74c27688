-- The leaderboard per language: over all emotions, one row per language, metric and system with its
-- n and interval and the paired difference from the baseline on the same items of that language
-- (Japanese items reported on their own, not only mixed into the overall rows). A metric a language
-- cannot be scored on (valence without a lexicon, BERTScore without a Japanese backbone) has no row.
SELECT language, metric, direction, system, model_sha256, n, value, ci_low, ci_high, baseline_value, delta,
       delta_ci_low, delta_ci_high, p_adjusted, verdict, regression
FROM leaderboard
WHERE emotion = 'all' AND language <> 'all'
ORDER BY language, metric, is_baseline DESC, system
