-- Every evaluation metric in long form: one row per (system, emotion, metric) with its value, the
-- number of items behind it and its direction (1 higher is better, -1 lower is better, 0 descriptive).
-- Per-item metrics are averaged per emotion and over all emotions (emotion = 'all'); set-level
-- metrics (diversity) come per emotion and 'all' already; retention is per system ('all' only).
WITH item_scores AS (
    SELECT system, emotion, 'bertscore_precision' AS metric, bertscore_precision AS value FROM metric_bertscore
    UNION ALL SELECT system, emotion, 'bertscore_recall', bertscore_recall FROM metric_bertscore
    UNION ALL SELECT system, emotion, 'bertscore_f1', bertscore_f1 FROM metric_bertscore
    UNION ALL SELECT system, emotion, 'diff_epitome_er', er_squared_diff FROM metric_epitome
    UNION ALL SELECT system, emotion, 'diff_epitome_ip', ip_squared_diff FROM metric_epitome
    UNION ALL SELECT system, emotion, 'diff_epitome_ex', ex_squared_diff FROM metric_epitome
    UNION ALL SELECT system, emotion, 'epitome_er_level', er_prediction FROM metric_epitome
    UNION ALL SELECT system, emotion, 'epitome_ip_level', ip_prediction FROM metric_epitome
    UNION ALL SELECT system, emotion, 'epitome_ex_level', ex_prediction FROM metric_epitome
    UNION ALL SELECT system, emotion, 'vader_response', vader_response FROM metric_valence
    UNION ALL SELECT system, emotion, 'vader_difference', vader_difference FROM metric_valence
    UNION ALL SELECT system, emotion, 'diff_valence', diff_valence FROM metric_valence
    UNION ALL SELECT system, emotion, 'diff_arousal', diff_arousal FROM metric_valence
    UNION ALL SELECT system, emotion, 'diff_dominance', diff_dominance FROM metric_valence
    UNION ALL SELECT system, emotion, 'judge_' || dimension, expected_score FROM metric_judge
    UNION ALL SELECT system, emotion, 'judge_parse_failure_rate', CASE WHEN score IS NULL THEN 1.0 ELSE 0.0 END
        FROM metric_judge
    UNION ALL SELECT system, emotion, 'alignment_bertscore_f1', alignment_bertscore_f1 FROM metric_alignment
    UNION ALL SELECT system, emotion, 'alignment_exact', alignment_exact FROM metric_alignment
    UNION ALL SELECT system, emotion, 'alignment_ekman', alignment_ekman FROM metric_alignment
),
item_means AS (
    SELECT system, coalesce(emotion, 'all') AS emotion, metric, avg(value) AS value, count(value) AS n
    FROM item_scores
    GROUP BY GROUPING SETS ((system, emotion, metric), (system, metric))
),
set_scores AS (
    -- Diversity is computed per language; a system answering in two languages gets their mean.
    SELECT system, emotion, m.metric, avg(m.value) AS value, sum(responses) AS n
    FROM metric_diversity
    CROSS JOIN LATERAL (VALUES ('distinct_1', distinct_1), ('distinct_2', distinct_2),
        ('entropy_1', entropy_1), ('entropy_2', entropy_2), ('unique_share', unique_share)) AS m(metric, value)
    GROUP BY ALL
    UNION ALL SELECT system, 'all', 'perplexity', perplexity, text_tokens FROM metric_retention
    UNION ALL SELECT system, 'all', 'mmlu_accuracy', mmlu_accuracy, mmlu_questions FROM metric_retention
        WHERE mmlu_accuracy IS NOT NULL
)
SELECT
    s.system,
    s.emotion,
    s.metric,
    CASE
        WHEN s.metric LIKE 'diff_%' OR s.metric IN ('perplexity', 'judge_parse_failure_rate') THEN -1
        WHEN s.metric IN ('vader_response', 'vader_difference') OR s.metric LIKE 'epitome_%_level' THEN 0
        ELSE 1
    END AS direction,
    s.value,
    s.n
FROM (SELECT * FROM item_means UNION ALL SELECT * FROM set_scores) s
WHERE s.n > 0
ORDER BY s.system, s.emotion, s.metric
