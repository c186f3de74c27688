"""Filters for synthetic dialogues, as pure functions.

Each single-row filter takes text and returns None (keep) or a human-readable reason (drop).
`filter_synthetic` applies them in a fixed order and returns the kept rows plus a report of every
dropped row (id, emotion, filter, reason); a row is reported once, under the first filter it fails.
Duplicate filters look at everything seen so far: the ingested corpus first, then synthetic rows in
order, so a synthetic row is dropped when it repeats the corpus or an earlier synthetic row."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl

from empathy_dag.ingest.language import UNDETERMINED, closest_supported_language, identify_language
from empathy_dag.ingest.records import normalize_text
from empathy_dag.settings import assets_dir

FILTER_ORDER = (
    "empty",
    "length",
    "refusal",
    "prompt_echo",
    "unsafe",
    "language",
    "exact_duplicate",
    "near_duplicate",
    "emotion_consistency",
)
# A dropped row keeps its dialogue fields, so a reviewer who overrules a filter can bring it back
# (review.consensus.apply_review) and a review batch shows the whole dialogue; `text` is the one-line
# "speaker || reply" for previews.
REPORT_DIALOGUE_FIELDS = (
    "situation_id",
    "language",
    "domain",
    "situation",
    "speaker_utterance",
    "listener_reply",
    "prompt_version",
)
REPORT_SCHEMA = {
    "id": pl.String,
    "emotion": pl.String,
    "origin": pl.String,
    "filter": pl.String,
    "reason": pl.String,
    "generator": pl.String,
    "text": pl.String,
    **dict.fromkeys(REPORT_DIALOGUE_FIELDS, pl.String),
}

# ------------------------------------------------------------------------------- single-row filters


def length_reason(text: str, min_chars: int, max_chars: int, field_name: str = "text") -> str | None:
    n = len(normalize_text(text or ""))
    if n < min_chars:
        return f"{field_name} has {n} characters, fewer than {min_chars}"
    if n > max_chars:
        return f"{field_name} has {n} characters, more than {max_chars}"
    return None


_REFUSALS = [
    r"\bas an ai\b",
    r"\bas a (?:large )?language model\b",
    r"\bi(?:'m| am) (?:just )?an? (?:ai|assistant|chatbot)\b",
    r"\bi can(?:'|no)?t help\b",
    r"\bi cannot help\b",
    r"\bi(?:'m| am) (?:not able|unable) to (?:help|assist|provide)\b",
    r"\bi can(?:'|no)?t (?:assist|provide|fulfill|comply)\b",
    r"\bi(?:'m| am) sorry,? but i can(?:'|no)?t\b",
    r"\bi do(?:n't| not) have (?:personal )?(?:feelings|emotions|experiences)\b",
]
_REFUSAL = re.compile("|".join(_REFUSALS), re.IGNORECASE)


def refusal_reason(text: str) -> str | None:
    m = _REFUSAL.search(text or "")
    return f"refusal or AI self-reference: {m.group(0)!r}" if m else None


# Phrases of our own prompt templates: a reply that repeats them is the model echoing instructions.
PROMPT_PHRASES = (
    "write only",
    "in one or two sentences",
    "in two or three sentences",
    "reply to your friend",
    "tell your friend about it",
    "show that you understand how they feel",
    "write situation number",
    "here are situations in which",
    'speaking as "i"',
    "you are a warm, empathetic listener",
)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", (text or "").lower())


def prompt_echo_reason(
    reply: str, prompt_texts: Iterable[str], threshold: float = 0.8, min_words: int = 6
) -> str | None:
    """The reply repeats a template instruction, or most of its words are a run copied from the
    prompt (the utterance or situation it answers): `threshold` of the reply's word 4-grams occur in
    the prompt, or the reply is contained in it verbatim."""
    low = normalize_text(reply or "").lower()
    for phrase in PROMPT_PHRASES:
        if phrase in low:
            return f"echoes the prompt instruction {phrase!r}"
    reply_words = _words(reply)
    for prompt in prompt_texts:
        if not prompt:
            continue
        p_low = normalize_text(prompt).lower()
        if len(low) >= 20 and low.strip(" .!?\"'") in p_low:
            return "reply is copied verbatim from the prompt"
        if len(reply_words) >= min_words:
            grams = {tuple(reply_words[i : i + 4]) for i in range(len(reply_words) - 3)}
            pw = _words(prompt)
            prompt_grams = {tuple(pw[i : i + 4]) for i in range(len(pw) - 3)}
            if grams:
                overlap = len(grams & prompt_grams) / len(grams)
                if overlap >= threshold:
                    return f"{overlap:.0%} of the reply's word 4-grams are copied from the prompt"
    return None


UNSAFE_SECTIONS = {"[any turn]": "any_turn", "[reply]": "reply"}
# Languages written without spaces between words: their entries match anywhere, not as whole words.
UNSPACED_LANGUAGES = ("ja", "zh")


def unsafe_list_path(language: str = "en") -> Path:
    """assets/filters/unsafe_words.txt (English) or unsafe_words.<lang>.txt, as the prompt templates."""
    return (
        assets_dir()
        / "filters"
        / ("unsafe_words.txt" if language == "en" else f"unsafe_words.{language}.txt")
    )


def _read_sections(file: Path) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {"any_turn": [], "reply": []}
    current = "any_turn"  # a list without section headers applies to every turn (the old format)
    for line in file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() in UNSAFE_SECTIONS:
            current = UNSAFE_SECTIONS[line.lower()]
            continue
        sections[current].append(line if line.startswith("re:") else line.lower())
    return sections


@cache
def load_word_list(path: str | None = None) -> tuple[str, ...]:
    """Every entry of a list, whatever its section (the English list by default)."""
    sections = _read_sections(Path(path) if path else unsafe_list_path("en"))
    return tuple(sections["any_turn"] + sections["reply"])


@dataclass(frozen=True)
class UnsafeWordList:
    language: str
    file: str
    any_turn: tuple[str, ...]  # drop a row wherever they occur
    reply: tuple[str, ...]  # drop a row when they occur in the listener's reply


@cache
def load_unsafe_list(language: str) -> UnsafeWordList:
    file = unsafe_list_path(language)
    if not file.is_file():
        raise FileNotFoundError(f"no unsafe-word list for language {language!r} (expected {file})")
    sections = _read_sections(file)
    return UnsafeWordList(language, file.name, tuple(sections["any_turn"]), tuple(sections["reply"]))


@cache
def _word_list_pattern(words: tuple[str, ...], whole_words: bool = True) -> re.Pattern:
    parts = []
    for w in words:
        if w.startswith("re:"):
            parts.append(f"(?:{w[3:]})")
            continue
        stem = re.escape(w.rstrip("*")).replace(r"\ ", r"\s+")
        if not whole_words:
            parts.append(stem)
        else:
            parts.append(rf"\b{stem}\w*" if w.endswith("*") else rf"\b{stem}\b")
    return re.compile("|".join(parts) or r"(?!x)x", re.IGNORECASE)


def unsafe_reason(text: str, words: tuple[str, ...] | None = None, language: str = "en") -> str | None:
    """The first entry of `words` (default: every entry of `language`'s list) found in `text`."""
    if words is None:
        lists = load_unsafe_list(language)
        words = lists.any_turn + lists.reply
    m = _word_list_pattern(words, language not in UNSPACED_LANGUAGES).search(text or "")
    return f"unsafe or profane term {m.group(0)!r}" if m else None


def unsafe_dialogue_reason(
    speaker: str, reply: str, language: str, words: tuple[str, ...] | None = None
) -> str | None:
    """Why a dialogue is unsafe, naming the term, the turn and the list; None when it is not.

    With the language's own list, `[any turn]` entries are looked for in both turns and `[reply]`
    entries in the listener's reply only (the speaker's account is theirs to tell: see the list's
    header). `words` (a user's list from the curate config) applies to both turns, as before lists had
    sections. A language without a list is dropped with that reason rather than let through unchecked."""
    whole_words = language not in UNSPACED_LANGUAGES
    if words is not None:
        m = _word_list_pattern(words, whole_words).search(f"{speaker}\n{reply}")
        return f"unsafe or profane term {m.group(0)!r} (configured unsafe_words)" if m else None
    try:
        lists = load_unsafe_list(language)
    except FileNotFoundError as exc:
        return f"{exc}: cannot check it for unsafe content"
    m = _word_list_pattern(lists.any_turn, whole_words).search(f"{speaker}\n{reply}")
    if m:
        return f"unsafe term {m.group(0)!r} ({lists.file}, any turn)"
    m = _word_list_pattern(lists.reply, whole_words).search(reply or "")
    if m:
        return f"unsafe or profane term {m.group(0)!r} in the listener reply ({lists.file})"
    return None


def language_reason(text: str, expected: str) -> str | None:
    """Drop a row the identifier reads as another language. Text too short to tell ("und") is judged
    among the supported languages only, as the old script-based check did: a terse English reply is
    not dropped for being terse (the length filter is there for that)."""
    guess = identify_language(text or "")
    found = guess.language
    if found == UNDETERMINED and any(ch.isalpha() for ch in text or ""):
        found = closest_supported_language(text)
    if found == expected:
        return None
    return f"language detected as {found!r} (confidence {guess.confidence:.2f}), expected {expected!r}"


def contradiction_reason(
    partition_emotion: str,
    predicted_group: str,
    probability: float,
    sentiment_of: Callable[[str], str],
    min_probability: float = 0.5,
) -> str | None:
    """Positive vs negative is a contradiction; ambiguous or neutral on either side never is."""
    expected = sentiment_of(partition_emotion)
    if probability < min_probability:
        return None
    if {expected, predicted_group} == {"positive", "negative"}:
        return (
            f"classifier reads it as {predicted_group} (p={probability:.2f}) but the emotion "
            f"{partition_emotion!r} is {expected}"
        )
    return None


# ------------------------------------------------------------------------------------ duplicates


def exact_key(*texts: str) -> str:
    return "\x1f".join(re.sub(r"[^\w]+", " ", normalize_text(t or "").lower()).strip() for t in texts)


def shingles(text: str, k: int = 5) -> set[str]:
    s = re.sub(r"[^\w]+", " ", normalize_text(text or "").lower()).strip()
    if len(s) <= k:
        return {s} if s else set()
    return {s[i : i + k] for i in range(len(s) - k + 1)}


def _shingle_text(text: str) -> str:
    return re.sub(r"[^\w]+", " ", normalize_text(text or "").lower()).strip()


_HASH_BASE = np.uint64(1_000_003)


def shingle_hashes(text: str, k: int = 5) -> np.ndarray:
    """32-bit hashes of the character k-grams of `shingles(text)` (the same set of k-grams), computed
    in numpy: a polynomial hash over each window of code points, folded to 32 bits. Hashing each
    shingle with sha1 in Python was ~60% of curation time at 100k rows."""
    s = _shingle_text(text)
    if not s:
        return np.empty(0, dtype=np.uint64)
    codes = np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    windows = codes[None, :] if codes.size <= k else np.lib.stride_tricks.sliding_window_view(codes, k)
    powers = _HASH_BASE ** np.arange(windows.shape[1] - 1, -1, -1, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrap-around mod 2**64 is the hash
        h = (windows * powers).sum(axis=1, dtype=np.uint64)
    return np.unique((h >> np.uint64(32)) ^ (h & np.uint64(0xFFFFFFFF)))


def _identity(value):
    return value


class NearDuplicateIndex:
    """MinHash LSH (datasketch, banded) over character 5-gram shingles (hashed by `shingle_hashes`): `check_and_add` says whether a text is
    within ~`threshold` Jaccard similarity of one already indexed, and indexes it when it is not."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128):
        from datasketch import MinHash, MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._hashes: dict[str, object] = {}
        self._count = 0
        # Built once and shared: a MinHash draws its seeded permutations in __init__, which was most of
        # the cost per row; the shared ones are the same (same seed), so the signatures are unchanged.
        proto = MinHash(num_perm=num_perm, seed=1)
        self._permutations, self._scheme = proto.permutations, proto.scheme

    def _minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(
            num_perm=self.num_perm,
            seed=1,
            permutations=self._permutations,
            scheme=self._scheme,
            hashfunc=_identity,
        )
        m.update_batch(shingle_hashes(text).tolist())
        return m

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, key: str, text: str) -> None:
        if key in self._hashes:
            return
        m = self._minhash(text)
        self.lsh.insert(key, m)
        self._hashes[key] = m

    def check_and_add(self, key: str, text: str) -> tuple[str, float] | None:
        """(matched key, estimated Jaccard) of the closest indexed near-duplicate, else None (added)."""
        m = self._minhash(text)
        best = None
        for other in self.lsh.query(m):
            sim = m.jaccard(self._hashes[other])
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (other, sim)
        if best is None and key not in self._hashes:
            self.lsh.insert(key, m)
            self._hashes[key] = m
        return best


# ------------------------------------------------------------------------------------- the pipeline


@dataclass
class FilterConfig:
    min_chars: int = 12
    max_chars: int = 600
    near_duplicate_threshold: float = 0.8
    echo_threshold: float = 0.8
    language: str | None = None  # None: each row's own `language` column
    consistency_min_probability: float = 0.5
    unsafe_words: tuple[str, ...] | None = None
    disabled: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class FilterResult:
    kept: pl.DataFrame
    report: pl.DataFrame

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(FILTER_ORDER, 0)
        for name, n in self.report.group_by("filter").len().iter_rows():
            out[name] = int(n)
        return out


def row_reason(row: dict, config: FilterConfig, on: Iterable[str]) -> tuple[str | None, str | None]:
    """(filter, reason) of the first single-row filter that drops `row`, else (None, None)."""
    speaker, reply = row.get("speaker_utterance") or "", row.get("listener_reply") or ""
    on = set(on)
    checks: list[tuple[str, Callable[[], str | None]]] = [
        (
            "empty",
            lambda: (
                "speaker utterance or reply is empty" if not speaker.strip() or not reply.strip() else None
            ),
        ),
        (
            "length",
            lambda: (
                length_reason(speaker, config.min_chars, config.max_chars, "speaker utterance")
                or length_reason(reply, config.min_chars, config.max_chars, "reply")
            ),
        ),
        ("refusal", lambda: refusal_reason(speaker) or refusal_reason(reply)),
        (
            "prompt_echo",
            lambda: (
                prompt_echo_reason(reply, [speaker, row.get("situation") or ""], config.echo_threshold)
                or prompt_echo_reason(speaker, [], config.echo_threshold)
            ),
        ),
        (
            "unsafe",
            lambda: unsafe_dialogue_reason(
                speaker, reply, config.language or row.get("language") or "en", config.unsafe_words
            ),
        ),
        (
            "language",
            lambda: language_reason(f"{speaker} {reply}", config.language or row.get("language") or "en"),
        ),
    ]
    for name, check in checks:
        if name in on:
            reason = check()
            if reason:
                return name, reason
    return None, None


def filter_synthetic(
    synthetic: pl.DataFrame,
    corpus: pl.DataFrame,
    config: FilterConfig,
    *,
    predict_groups: Callable[[list[str]], list[tuple[str, float]]] | None = None,
    sentiment_of: Callable[[str], str] | None = None,
) -> FilterResult:
    """Filter synthetic dialogues (columns dialogue_id, emotion, language, situation,
    speaker_utterance, listener_reply, generator) against themselves and the `corpus` dialogues.
    `predict_groups` (texts -> (sentiment group, prob)) enables emotion consistency on the speaker's
    utterance; None skips that filter."""
    dropped: list[dict] = []
    on = [n for n in FILTER_ORDER if n not in config.disabled]

    def drop(row: dict, name: str, reason: str) -> None:
        dropped.append(
            {
                "id": row["dialogue_id"],
                "emotion": row["emotion"],
                "origin": "synthetic",
                "filter": name,
                "reason": reason,
                "generator": row.get("generator"),
                "text": f"{row.get('speaker_utterance') or ''} || {row.get('listener_reply') or ''}",
                **{f: row.get(f) for f in REPORT_DIALOGUE_FIELDS},
            }
        )

    seen_exact: set[str] = set()
    near = NearDuplicateIndex(config.near_duplicate_threshold) if "near_duplicate" in on else None
    for row in corpus.select("dialogue_id", "speaker_utterance", "listener_reply").iter_rows(named=True):
        seen_exact.add(exact_key(row["speaker_utterance"], row["listener_reply"]))
        if near is not None:
            near.add(f"corpus:{row['dialogue_id']}", f"{row['speaker_utterance']} {row['listener_reply']}")

    survivors: list[dict] = []
    for row in synthetic.iter_rows(named=True):
        speaker, reply = row.get("speaker_utterance") or "", row.get("listener_reply") or ""
        name, reason = row_reason(row, config, on)
        if not reason and "exact_duplicate" in on:
            key = exact_key(speaker, reply)
            if key in seen_exact:
                name, reason = "exact_duplicate", "same speaker utterance and reply as an earlier row"
            else:
                seen_exact.add(key)
        if not reason and near is not None:
            match = near.check_and_add(f"synthetic:{row['dialogue_id']}", f"{speaker} {reply}")
            if match:
                name, reason = "near_duplicate", f"~{match[1]:.2f} Jaccard similar to {match[0]}"
        if reason:
            drop(row, name, reason)
        else:
            survivors.append(row)

    if survivors and predict_groups is not None and sentiment_of is not None and "emotion_consistency" in on:
        groups = predict_groups([r["speaker_utterance"] for r in survivors])
        consistent = []
        for row, (group, prob) in zip(survivors, groups):
            reason = contradiction_reason(
                row["emotion"], group, prob, sentiment_of, config.consistency_min_probability
            )
            if reason:
                drop(row, "emotion_consistency", reason)
            else:
                consistent.append(row)
        survivors = consistent

    kept = pl.DataFrame(survivors, schema=synthetic.schema) if survivors else synthetic.clear()
    return FilterResult(kept=kept, report=pl.DataFrame(dropped, schema=REPORT_SCHEMA))


# --------------------------------------------------------------- every source, across partitions

# Filters that no source policy may skip: a duplicate from a trusted source is still a duplicate, and
# duplicates that reach the preference pairs leak between splits and over-weight what they repeat.
NEVER_SKIPPED = ("empty", "exact_duplicate", "near_duplicate")

# Why these defaults: SYNTHEMPATHY's replies run to ~150 words (~800-1,000 characters in English), so the
# old 600-character cap dropped exactly the rows the generator is meant to produce; 2,000 leaves twice that
# headroom and still drops run-away generations. Japanese packs about three times the meaning per
# character, hence the lower bounds for `ja`. Below 12 (en) / 6 (ja) characters a turn ("Oh no!") carries
# no situation to learn from.
DEFAULT_LENGTH_BOUNDS: dict[str, tuple[int, int]] = {"en": (12, 2000), "ja": (6, 1000)}

# Human-written corpora skip the filters that are about generation artefacts and would misfire on people
# ("I can't help but cry" reads as a refusal; a friend may well repeat the speaker's words); they also
# skip emotion consistency because their labels are the annotators', which the classifier was trained to
# imitate, not to overrule. Synthetic rows get every filter.
DEFAULT_SOURCE_POLICIES: dict[str, tuple[str, ...]] = {
    "corpus": ("refusal", "prompt_echo", "emotion_consistency"),
    "synthetic": (),
}


@dataclass
class CurationPolicy:
    """Which filters a row skips and which length bounds it gets, by its source.

    `skip` and `length_bounds` are looked up by the row's `source` first (e.g. "seed",
    "empathetic_dialogues", a landing file's stem), then by its origin ("corpus" / "synthetic");
    length bounds after that by language, then `default_length`."""

    skip: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_SOURCE_POLICIES))
    length_bounds: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(DEFAULT_LENGTH_BOUNDS))
    default_length: tuple[int, int] = (12, 2000)

    def __post_init__(self):
        for key, names in self.skip.items():
            unknown = set(names) - set(FILTER_ORDER)
            if unknown:
                raise ValueError(
                    f"source policy {key!r}: unknown filters {sorted(unknown)}; "
                    f"known: {', '.join(FILTER_ORDER)}"
                )
            never = set(names) & set(NEVER_SKIPPED)
            if never:
                raise ValueError(
                    f"source policy {key!r} skips {sorted(never)}: dedup and the empty check "
                    "apply to every source (a trusted duplicate is still a duplicate)"
                )
        for key, (low, high) in self.length_bounds.items():
            if not 0 <= low <= high:
                raise ValueError(f"length bounds for {key!r}: need 0 <= min <= max, got ({low}, {high})")

    def skipped(self, source: str | None, origin: str) -> tuple[str, ...]:
        if source in self.skip:
            return self.skip[source]
        return self.skip.get(origin, ())

    def bounds(self, source: str | None, origin: str, language: str | None) -> tuple[int, int]:
        for key in (source, origin, language):
            if key is not None and key in self.length_bounds:
                return self.length_bounds[key]
        return self.default_length


@dataclass
class CurationResult:
    kept: dict[str, pl.DataFrame]
    report: dict[str, pl.DataFrame]
    rows_in: dict[tuple[str, str], int]  # (origin, source) -> rows examined

    def counts(self) -> pl.DataFrame:
        """Rows dropped per (filter, origin, source), with the rows each source brought in."""
        frames = [r for r in self.report.values() if r.height]
        dropped = (
            pl.concat(frames).group_by("filter", "origin", "source").len("dropped")
            if frames
            else pl.DataFrame(
                schema={"filter": pl.String, "origin": pl.String, "source": pl.String, "dropped": pl.UInt32}
            )
        )
        rows_in = pl.DataFrame(
            [{"origin": o, "source": s, "rows_in": n} for (o, s), n in self.rows_in.items()],
            schema={"origin": pl.String, "source": pl.String, "rows_in": pl.Int64},
        )
        return dropped.join(rows_in, on=["origin", "source"], how="left").sort("filter", "origin", "source")

    def counts_per_filter(self) -> dict[str, int]:
        out = dict.fromkeys(FILTER_ORDER, 0)
        for name, n in self.counts().group_by("filter").agg(pl.col("dropped").sum()).iter_rows():
            out[name] = int(n)
        return out


def curate_partitions(
    frames: dict[str, pl.DataFrame],
    config: FilterConfig,
    policy: CurationPolicy | None = None,
    *,
    predict_groups: Callable[[list[str]], list[tuple[str, float]]] | None = None,
    sentiment_of: Callable[[str], str] | None = None,
) -> CurationResult:
    """Filter every row of every partition: ingested and synthetic alike, each under its source's policy.

    `frames` maps a partition (emotion) to dialogues with columns dialogue_id, emotion, language,
    situation, speaker_utterance, listener_reply, source and origin (plus anything else, kept). The
    duplicate filters see all partitions at once, because a repeated text can carry two different
    emotion labels. Rows are examined corpus first, then synthetic, each in dialogue_id order, so the
    row that survives a duplicate group is a function of the data alone (not of file or partition
    order) and a synthetic row that repeats the corpus is the one dropped. Cost is linear: exact
    duplicates by hash set, near duplicates by banded MinHash LSH (one query per row).
    `config.min_chars/max_chars` are ignored here in favour of the policy's length bounds."""
    policy = policy or CurationPolicy()
    globally_off = set(config.disabled)
    seen_exact: set[str] = set()
    near = (
        NearDuplicateIndex(config.near_duplicate_threshold) if "near_duplicate" not in globally_off else None
    )
    dropped: dict[str, list[dict]] = {k: [] for k in frames}
    survivors: dict[str, list[dict]] = {k: [] for k in frames}
    rows_in: dict[tuple[str, str], int] = {}

    def drop(partition: str, row: dict, name: str, reason: str) -> None:
        dropped[partition].append(
            {
                "id": row["dialogue_id"],
                "emotion": row["emotion"],
                "origin": row.get("origin"),
                "source": row.get("source"),
                "filter": name,
                "reason": reason,
                "generator": row.get("generator"),
                "text": f"{row.get('speaker_utterance') or ''} || {row.get('listener_reply') or ''}",
                **{f: row.get(f) for f in REPORT_DIALOGUE_FIELDS},
            }
        )

    ordered = []
    for partition, frame in frames.items():
        if frame is None or frame.height == 0:
            continue
        for row in frame.iter_rows(named=True):
            origin = row.get("origin") or "corpus"
            ordered.append((0 if origin == "corpus" else 1, row["dialogue_id"] or "", partition, row))
    ordered.sort(key=lambda t: t[:3])

    consistency_queue: list[tuple[str, dict]] = []
    for _, _, partition, row in ordered:
        origin, source = row.get("origin") or "corpus", row.get("source")
        rows_in[(origin, source)] = rows_in.get((origin, source), 0) + 1
        off = globally_off | set(policy.skipped(source, origin))
        on = [n for n in FILTER_ORDER if n not in off]
        low, high = policy.bounds(source, origin, row.get("language"))
        row_config = FilterConfig(
            min_chars=low,
            max_chars=high,
            echo_threshold=config.echo_threshold,
            language=config.language,
            unsafe_words=config.unsafe_words,
        )
        speaker, reply = row.get("speaker_utterance") or "", row.get("listener_reply") or ""
        name, reason = row_reason(row, row_config, on)
        if not reason and "exact_duplicate" in on:
            key = exact_key(speaker, reply)
            if key in seen_exact:
                name, reason = "exact_duplicate", "same speaker utterance and reply as an earlier row"
            else:
                seen_exact.add(key)
        if not reason and near is not None:
            match = near.check_and_add(f"{origin}:{row['dialogue_id']}", f"{speaker} {reply}")
            if match:
                name, reason = "near_duplicate", f"~{match[1]:.2f} Jaccard similar to {match[0]}"
        if reason:
            drop(partition, row, name, reason)
        elif "emotion_consistency" in on and predict_groups is not None and sentiment_of is not None:
            consistency_queue.append((partition, row))
        else:
            survivors[partition].append(row)

    if consistency_queue:
        groups = predict_groups([r["speaker_utterance"] for _, r in consistency_queue])
        for (partition, row), (group, prob) in zip(consistency_queue, groups, strict=True):
            reason = contradiction_reason(
                row["emotion"], group, prob, sentiment_of, config.consistency_min_probability
            )
            if reason:
                drop(partition, row, "emotion_consistency", reason)
            else:
                survivors[partition].append(row)

    kept, report = {}, {}
    for partition, frame in frames.items():
        schema = frame.schema if frame is not None else None
        rows = sorted(
            survivors[partition], key=lambda r: (r.get("origin") != "corpus", r["dialogue_id"] or "")
        )
        kept[partition] = (
            pl.DataFrame(rows, schema=schema, orient="row")
            if rows
            else (frame.clear() if frame is not None else pl.DataFrame())
        )
        report[partition] = pl.DataFrame(dropped[partition], schema=CURATION_REPORT_SCHEMA)
    return CurationResult(kept=kept, report=report, rows_in=rows_in)


# filter_report from curate-v4 on: the row's source too, so counts per filter and source can be read off it.
CURATION_REPORT_SCHEMA = {**REPORT_SCHEMA, "source": pl.String}
