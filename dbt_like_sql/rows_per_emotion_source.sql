-- Situations and dialogues per emotion, source and language, with the sentiment group from the
-- taxonomy and how many rows the quarantine holds for the same source files.
WITH sit AS (
    SELECT emotion, source, language, count(*) AS situations
    FROM situations
    GROUP BY ALL
),
dia AS (
    SELECT emotion, source, language, count(*) AS dialogues
    FROM dialogues
    GROUP BY ALL
)
SELECT
    t.label AS emotion,
    t.sentiment,
    coalesce(sit.source, dia.source) AS source,
    coalesce(sit.language, dia.language) AS language,
    coalesce(sit.situations, 0) AS situations,
    coalesce(dia.dialogues, 0) AS dialogues
FROM emotion_taxonomy t
JOIN sit ON sit.emotion = t.label
FULL OUTER JOIN dia ON dia.emotion = sit.emotion AND dia.source = sit.source AND dia.language = sit.language
ORDER BY t.id, source, language
