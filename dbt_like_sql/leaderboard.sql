-- The leaderboard: every system x metric, over all emotions ('all') and per emotion, with the
-- baseline's value (the system marked is_baseline in evaluation_systems, "base" by default), the
-- delta against it, and a regression flag: the metric moved in its bad direction by more than 2% of
-- the baseline's magnitude (at least 0.005 absolute). Descriptive metrics (direction 0) are never flagged.
WITH baseline AS (
    SELECT m.emotion, m.metric, m.value
    FROM metric_scores m
    JOIN evaluation_systems s ON s.system = m.system AND s.is_baseline
)
SELECT
    m.system,
    m.emotion,
    m.metric,
    m.direction,
    round(m.value, 6) AS value,
    m.n,
    round(b.value, 6) AS baseline_value,
    round(m.value - b.value, 6) AS delta,
    coalesce(s.is_baseline, false) AS is_baseline,
    CASE
        WHEN b.value IS NULL OR coalesce(s.is_baseline, false) OR m.direction = 0 THEN NULL
        ELSE m.direction * (m.value - b.value) < -greatest(0.02 * abs(b.value), 0.005)
    END AS regression
FROM metric_scores m
LEFT JOIN baseline b ON b.emotion = m.emotion AND b.metric = m.metric
LEFT JOIN evaluation_systems s ON s.system = m.system
ORDER BY m.emotion = 'all' DESC, m.emotion, m.metric, m.system
