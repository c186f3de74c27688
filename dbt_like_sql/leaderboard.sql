-- The leaderboard: every system x metric, over all emotions ('all') and per emotion, and per language
-- over all emotions (language 'all' = every language; emotion 'all' AND language 'all' = every item), each mean with
-- n, its standard error and 95% bootstrap interval (metric_scores), the model it scored (asset
-- sha256 and the run that materialized it, from evaluation_systems), and the paired comparison with
-- the baseline on the same items (metric_comparisons): delta, its 95% paired-bootstrap interval, the
-- permutation p-value, the Benjamini-Hochberg adjusted p, a verdict (better / worse / inconclusive;
-- descriptive metrics have none) and `regression` = worse with confidence beyond the margin.
SELECT
    m.system,
    s.model_sha256,
    s.model_run_id,
    m.emotion,
    m.language,
    m.metric,
    m.direction,
    m.kind,
    m.n,
    round(m.value, 6) AS value,
    round(m.std_error, 6) AS std_error,
    round(m.ci_low, 6) AS ci_low,
    round(m.ci_high, 6) AS ci_high,
    m.interval_note,
    round(c.versus_value, 6) AS baseline_value,
    c.n AS paired_n,
    round(c.delta, 6) AS delta,
    round(c.delta_ci_low, 6) AS delta_ci_low,
    round(c.delta_ci_high, 6) AS delta_ci_high,
    c.p_value,
    c.p_adjusted,
    CASE WHEN coalesce(s.is_baseline, false) THEN 'baseline' ELSE c.verdict END AS verdict,
    coalesce(s.is_baseline, false) AS is_baseline,
    CASE WHEN coalesce(s.is_baseline, false) OR m.direction = 0 THEN NULL ELSE c.regression END AS regression,
    s.items_fingerprint
FROM metric_scores m
LEFT JOIN evaluation_systems s ON s.system = m.system
LEFT JOIN metric_comparisons c
    ON c.system = m.system AND c.emotion = m.emotion AND c.language = m.language AND c.metric = m.metric
    AND c.versus_role = 'baseline'
ORDER BY m.emotion = 'all' DESC, m.emotion, m.language = 'all' DESC, m.language, m.metric, is_baseline DESC, m.system
