"""Lexical diversity of a set of responses (one system, one emotion or all of them).

- distinct-n (Li et al., 2016): distinct n-grams / all n-grams over the whole set.
- n-gram entropy (Zhang et al., 2018): Shannon entropy, natural log, of the n-gram distribution.
- unique share: distinct responses (after whitespace normalization) / responses; catches a model
  that answers every prompt with the same sentence.
Words for English, characters for Japanese (`text.tokens`)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from empathy_dag.evaluate.metrics.text import ngrams, tokens


def _ngram_counts(responses: Sequence[str], n: int, language: str) -> Counter:
    counts: Counter = Counter()
    for r in responses:
        counts.update(ngrams(tokens(r, language), n))
    return counts


def distinct_n(responses: Sequence[str], n: int, language: str = "en") -> float:
    counts = _ngram_counts(responses, n, language)
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def ngram_entropy(responses: Sequence[str], n: int, language: str = "en") -> float:
    counts = _ngram_counts(responses, n, language)
    total = sum(counts.values())
    if not total:
        return 0.0
    return -sum(c / total * math.log(c / total) for c in counts.values())


def unique_share(responses: Sequence[str]) -> float:
    if not responses:
        return 0.0
    return len({" ".join((r or "").split()) for r in responses}) / len(responses)


def diversity_scores(responses: Sequence[str], language: str = "en") -> dict[str, float]:
    return {
        "distinct_1": distinct_n(responses, 1, language),
        "distinct_2": distinct_n(responses, 2, language),
        "entropy_1": ngram_entropy(responses, 1, language),
        "entropy_2": ngram_entropy(responses, 2, language),
        "unique_share": unique_share(responses),
    }
