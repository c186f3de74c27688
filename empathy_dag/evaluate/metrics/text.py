"""Tokenization shared by the lexical metrics. English is split into lower-cased words and
punctuation; Japanese has no spaces, so its units are characters (the usual choice for distinct-n
on Japanese, as in EmplifAI)."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)
# Hiragana, katakana and CJK ideographs: enough to tell Japanese text from English.
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")


def guess_language(text: str) -> str:
    return "ja" if _JAPANESE.search(text or "") else "en"


def tokens(text: str, language: str = "en") -> list[str]:
    text = (text or "").strip()
    if language == "ja":
        return [ch for ch in text if not ch.isspace()]
    return _WORD.findall(text.lower())


def ngrams(units: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
