"""Which languages the pipeline supports, and a language identifier for rows that do not declare one.

The identifier is lingua (`lingua-language-detector`, PyPI): n-gram models for 75 languages shipped
inside the wheel, so nothing is downloaded at run time. It is built with only the supported languages
plus a few confusers, the languages a supported one is most often mistaken for or that a user is most
likely to drop into the landing folder: without Chinese every Han-only text would be called Japanese,
without Spanish and French every Latin-script text would be called English (what the old regex did).
Building it with all 75 languages would cost seconds and hundreds of MB per process; with these seven
each language's models load lazily on first use, once per process (`_detector` is cached).

Pure Python, no Dagster here."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

import polars as pl

# The one list of languages the pipeline runs end to end (ingest quarantines the others; generation
# prompts, the judge rubric, the unsafe-word lists and the per-language metrics exist for these).
SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "ja")

# Told apart from the supported ones, never supported themselves (ISO 639-1).
CONFUSER_LANGUAGES: tuple[str, ...] = ("zh", "ko", "es", "fr", "de")

UNDETERMINED = "und"

# Below this the top language is not trusted: "Oh no!" reads German 0.36 / English 0.32, "Yes"
# English 0.35 / Spanish 0.34, while any sentence-length English text scores above 0.55.
MIN_CONFIDENCE = 0.4


@dataclass(frozen=True)
class LanguageGuess:
    language: str  # ISO 639-1 code, or "und" when no language is confident enough
    confidence: float  # lingua's confidence for `language` (for "und": the best language's, below the floor)


@cache
def _detector():
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    codes = (*SUPPORTED_LANGUAGES, *CONFUSER_LANGUAGES)
    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in codes]
    return LanguageDetectorBuilder.from_languages(*languages).build()


def _has_letters(text: str) -> bool:
    return bool(text) and any(ch.isalpha() for ch in text)


def _guess(values) -> LanguageGuess:
    """lingua's confidence values (best first) as a guess: "und" below `MIN_CONFIDENCE`."""
    if not values:
        return LanguageGuess(UNDETERMINED, 0.0)
    best = values[0]
    code = best.language.iso_code_639_1.name.lower()
    confidence = float(best.value)
    return LanguageGuess(code if confidence >= MIN_CONFIDENCE else UNDETERMINED, confidence)


def identify_language(text: str) -> LanguageGuess:
    """The most likely language of `text` and its confidence; "und" for text with no letters (digits,
    punctuation, emoji) or when even the best language is below `MIN_CONFIDENCE`."""
    if not _has_letters(text):
        return LanguageGuess(UNDETERMINED, 0.0)
    return _guess(_detector().compute_language_confidence_values(text))


# Below this many distinct texts the batch call is one call per text: lingua's thread pool is not worth
# starting for a handful.
PARALLEL_MIN_TEXTS = 64


def identify_languages(texts: Iterable[str]) -> dict[str, LanguageGuess]:
    """`identify_language` of many texts: {text: guess}, each distinct text identified once. Inside
    `cached_guesses`, a text identified by an earlier run is not identified again. The others go through
    lingua's multi-threaded batch call (`compute_language_confidence_values_in_parallel`, the same values
    as one call per text: tests/test_ingest_readers.py checks), which uses every core where ingest runs;
    on 2 busy cores it gains little (BENCHMARKS.md, Scale)."""
    store = _active_caches[-1] if _active_caches else None
    out: dict[str, LanguageGuess] = {}
    todo: list[str] = []
    for text in dict.fromkeys(texts):
        if store is not None and (known := store.get(text)) is not None:
            out[text] = known  # only texts with letters are cached
        elif not _has_letters(text):
            out[text] = LanguageGuess(UNDETERMINED, 0.0)
        else:
            todo.append(text)
    if len(todo) >= PARALLEL_MIN_TEXTS:
        values = _detector().compute_language_confidence_values_in_parallel(todo)
    else:
        values = [_detector().compute_language_confidence_values(t) for t in todo]
    for text, v in zip(todo, values, strict=True):
        out[text] = _guess(v)
        if store is not None:
            store.put(text, out[text])
    return out


class GuessCache:
    """Guesses of the texts an earlier ingest identified, in a Parquet file (text, language, confidence):
    ingest re-reads every file of the landing zone on each run, and without this each run pays the
    identifier again for every row it already read (~0.2 ms a row, most of ingest). The file name carries
    a fingerprint of what a guess depends on (lingua's version, the languages, the confidence floor): a
    guess from another identifier is never reused. On `save`, only the texts this run looked up or added
    are kept, so the file follows the corpus instead of growing forever. Keyed by the text itself: a
    lookup is one dict probe (a digest per text cost more than the rest of the lookup)."""

    def __init__(self, path: Path):
        self.path = path.with_name(f"{path.stem}.{_fingerprint()}{path.suffix}")
        self._guesses: dict[str, LanguageGuess] = {}
        self._used: set[str] = set()
        self._added = 0
        if self.path.is_file():
            try:
                frame = pl.read_parquet(self.path)
                self._guesses = {
                    t: LanguageGuess(lang, conf)
                    for t, lang, conf in zip(
                        frame["text"].to_list(),
                        frame["language"].to_list(),
                        frame["confidence"].to_list(),
                        strict=True,
                    )
                }
            except Exception:  # noqa: BLE001 - an unreadable cache is an empty one: it is only a shortcut
                self._guesses = {}

    def get(self, text: str) -> LanguageGuess | None:
        found = self._guesses.get(text)
        if found is not None:
            self._used.add(text)
        return found

    def put(self, text: str, guess: LanguageGuess) -> None:
        self._guesses[text] = guess
        self._used.add(text)
        self._added += 1

    def save(self) -> None:
        """Write the guesses of this run (temp + rename); nothing when nothing changed. An OSError leaves the
        previous file: the next run identifies again what is missing."""
        if not self._added and len(self._used) == len(self._guesses):
            return
        texts = list(self._used)
        frame = pl.DataFrame(
            {
                "text": pl.Series(texts, dtype=pl.String),
                "language": [self._guesses[t].language for t in texts],
                "confidence": pl.Series([self._guesses[t].confidence for t in texts], dtype=pl.Float64),
            }
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(tmp)
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)


_active_caches: list[GuessCache] = []


def _fingerprint() -> str:
    codes = ",".join((*SUPPORTED_LANGUAGES, *CONFUSER_LANGUAGES))
    what = f"lingua {version('lingua-language-detector')}|{codes}|{MIN_CONFIDENCE}"
    return hashlib.sha256(what.encode()).hexdigest()[:12]


@contextlib.contextmanager
def cached_guesses(path: Path | None) -> Iterator[GuessCache | None]:
    """While inside, `identify_languages` reuses and adds to the guesses cached at `path` (None: no cache),
    saved on a clean exit."""
    if path is None:
        yield None
        return
    store = GuessCache(Path(path))
    _active_caches.append(store)
    try:
        yield store
    finally:
        _active_caches.remove(store)
    store.save()


def closest_supported_language(text: str, default: str = SUPPORTED_LANGUAGES[0]) -> str:
    """The supported language `text` is most likely in, for text that must be scored in one of them
    (evaluation items from an outside file that says nothing): a short English reply that lingua
    leans German on stays English. `default` for text with no letters."""
    if not _has_letters(text):
        return default
    for value in _detector().compute_language_confidence_values(text):
        code = value.language.iso_code_639_1.name.lower()
        if code in SUPPORTED_LANGUAGES:
            return code
    return default
