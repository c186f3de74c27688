"""Tokenization shared by the lexical metrics. English is split into lower-cased words and
punctuation. Japanese has no spaces: it is segmented into words (short units) by MeCab through
`fugashi` with the UniDic-lite dictionary (both PyPI wheels, no download), so distinct-n counts words
in both languages; EmplifAI's character n-grams are kept as `char_tokens` for comparison with it."""

from __future__ import annotations

import re
from functools import cache

from empathy_dag.ingest.language import closest_supported_language

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def guess_language(text: str) -> str:
    """The supported language closest to a text that came without one (evaluation items of an outside
    file): ingest has already quarantined rows in other languages, so this only has to choose among those."""
    return closest_supported_language(text or "")


@cache
def _japanese_tagger():
    """One MeCab tagger per process: loading the dictionary takes ~0.1 s, a sentence microseconds."""
    import fugashi

    return fugashi.Tagger()


def japanese_words(text: str) -> list[str]:
    """Surface forms of the words of a Japanese text (whitespace dropped, punctuation kept as words,
    as English punctuation is)."""
    return [w.surface for w in _japanese_tagger()(text) if w.surface.strip()]


def char_tokens(text: str) -> list[str]:
    return [ch for ch in (text or "") if not ch.isspace()]


def tokens(text: str, language: str = "en") -> list[str]:
    text = (text or "").strip()
    if language == "ja":
        return japanese_words(text)
    return _WORD.findall(text.lower())


def ngrams(units: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
