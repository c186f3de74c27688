"""Sentiment of a response next to the speaker's turn.

- VADER compound (-1..1) of the response, of the speaker turn, and response - speaker.
- NRC-VAD (Mohammad, 2018), optional: the lexicon is not redistributable, so users point at their
  copy (`NRC-VAD-Lexicon.txt`: word, valence, arousal, dominance, tab-separated). As in EmPO (after
  Lee et al., 2022), each text gets the maximum valence, arousal and dominance over its words found
  in the lexicon, and the metric is |max(prediction) - max(reference)| per item (lower is better).

Both lexicons are English. An item in another language gets NULL, not a score: VADER gives a text
with no English word 0.0 ("neutral"), and those zeros would pull a Japanese system's mean to neutral.
NULLs are left out of every mean (SQL AVG, the scorecard), and metadata counts them."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

from empathy_dag.evaluate.metrics.text import tokens


@cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(texts: Sequence[str]) -> list[float]:
    analyzer = _vader()
    return [float(analyzer.polarity_scores(t or "")["compound"]) for t in texts]


# Languages the valence lexicons (VADER, NRC-VAD's English file) cover.
VALENCE_LANGUAGES: tuple[str, ...] = ("en",)


def valence_rows(
    responses: Sequence[str], speaker_turns: Sequence[str], languages: Sequence[str] | None = None
) -> list[dict[str, float | None]]:
    """VADER per item; None for an item whose language no lexicon covers (`languages` None: all English)."""
    covered = (
        [True] * len(responses) if languages is None else [lang in VALENCE_LANGUAGES for lang in languages]
    )
    resp = vader_compound([t for t, ok in zip(responses, covered) if ok])
    spk = vader_compound([t for t, ok in zip(speaker_turns, covered) if ok])
    scores = iter(zip(resp, spk))
    rows = []
    for ok in covered:
        if ok:
            r, s = next(scores)
            rows.append({"vader_response": r, "vader_speaker": s, "vader_difference": r - s})
        else:
            rows.append({"vader_response": None, "vader_speaker": None, "vader_difference": None})
    return rows


def load_nrc_vad(path: str | Path) -> dict[str, tuple[float, float, float]]:
    lexicon: dict[str, tuple[float, float, float]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 4:
            continue
        try:
            lexicon[parts[0].lower()] = (float(parts[1]), float(parts[2]), float(parts[3]))
        except ValueError:  # the header line
            continue
    if not lexicon:
        raise ValueError(f"{path}: no 'word<TAB>valence<TAB>arousal<TAB>dominance' lines")
    return lexicon


def max_vad(text: str, lexicon: dict[str, tuple[float, float, float]]) -> tuple[float, float, float] | None:
    found = [lexicon[w] for w in tokens(text) if w in lexicon]
    if not found:
        return None
    return tuple(max(v[i] for v in found) for i in range(3))  # type: ignore[return-value]


def vad_difference_rows(
    predictions: Sequence[str],
    references: Sequence[str],
    lexicon: dict[str, tuple[float, float, float]],
    languages: Sequence[str] | None = None,
) -> list[dict[str, float | None]]:
    """None where either text has no lexicon word, or the item's language is not covered: such items
    are left out of the means, not zeroed."""
    rows = []
    langs = languages if languages is not None else ["en"] * len(predictions)
    for p, r, lang in zip(predictions, references, langs):
        mp, mr = (max_vad(p, lexicon), max_vad(r, lexicon)) if lang in VALENCE_LANGUAGES else (None, None)
        if mp is None or mr is None:
            rows.append({"diff_valence": None, "diff_arousal": None, "diff_dominance": None})
        else:
            rows.append(
                {
                    "diff_valence": abs(mp[0] - mr[0]),
                    "diff_arousal": abs(mp[1] - mr[1]),
                    "diff_dominance": abs(mp[2] - mr[2]),
                }
            )
    return rows
