"""SYNTHEMPATHY-style synthetic data, as pure functions over polars frames and a `Generator`:

1. brainstorm new situations per emotion, conditioned on a few seed situations and a domain;
2. rewrite each as the person's first-person explanation (what they would say);
3. write an empathetic listener reply to each explanation, with one or more models.

Small instruct models (SmolLM2-135M) wrap their answer in quotes, prefixes ("Sure! Here is...",
"Situation:") or lists, so every output goes through `clean_generation`; outputs that leave nothing
usable are dropped and counted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from empathy_dag.generate.engine import GenerationSettings, Generator, ProgressCallback
from empathy_dag.generate.prompts import PromptTemplate, localised_domain, localised_emotion, template_for
from empathy_dag.ingest.records import dialogue_id, normalize_text, situation_id, stable_id
from empathy_dag.taxonomy import Taxonomy

BRAINSTORM_TEMPLATE = "brainstorm_situation"
EXPLANATION_TEMPLATE = "speaker_explanation"
REPLY_TEMPLATE = "listener_reply"

BRAINSTORM_SCHEMA = {
    "situation_id": pl.String,
    "emotion": pl.String,
    "language": pl.String,
    "domain": pl.String,
    "situation": pl.String,
    "seed_situation_ids": pl.List(pl.String),
    "item_index": pl.Int64,
    "generator": pl.String,
    "generator_source": pl.String,
    "prompt_version": pl.String,
}
EXPLANATION_SCHEMA = {
    "explanation_id": pl.String,
    "situation_id": pl.String,
    "emotion": pl.String,
    "language": pl.String,
    "domain": pl.String,
    "situation": pl.String,
    "speaker_utterance": pl.String,
    "generator": pl.String,
    "generator_source": pl.String,
    "prompt_version": pl.String,
}
DIALOGUE_SCHEMA = {
    "dialogue_id": pl.String,
    "situation_id": pl.String,
    "explanation_id": pl.String,
    "emotion": pl.String,
    "language": pl.String,
    "domain": pl.String,
    "situation": pl.String,
    "speaker_utterance": pl.String,
    "listener_reply": pl.String,
    "generator": pl.String,
    "generator_source": pl.String,
    "prompt_version": pl.String,
}

# ---------------------------------------------------------------------------------------- parsing

_PREFIX = re.compile(
    r"^\s*(?:(?:sure|okay|ok|certainly|of course|absolutely)[!,.]?\s*)?"
    r"(?:(?:here(?:'s| is| are)|this is)\b[^:\n]{0,60}:\s*)?"
    r"(?:(?:new\s+)?(?:situation|scenario|reply|response|answer|listener|friend|you|me|speaker|person|"
    r"explanation)(?:\s*(?:number\s*)?#?\d+)?\s*:\s*)?",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s+")
_QUOTES = "\"'“”‘’`«»"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def clean_generation(text: str, *, max_sentences: int = 4, max_chars: int = 600, min_chars: int = 12) -> str:
    """The usable part of a small model's answer, or "" when nothing usable is left: prefixes and
    quotes stripped, the first non-empty line kept (a model that goes on to a second item or a
    commentary line is cut there), at most `max_sentences` sentences and `max_chars` characters."""
    if not text:
        return ""
    text = text.replace("**", "").replace("__", "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # A lead-in line ("Here is a new situation:") carries nothing itself.
    while len(lines) > 1 and lines[0].endswith(":") and len(lines[0]) < 80:
        lines.pop(0)
    if not lines:
        return ""
    line = _BULLET.sub("", lines[0])
    line = _PREFIX.sub("", line, count=1).strip()
    line = line.strip(_QUOTES + " ").strip()
    # A quote opened and never closed ("I felt ... ) loses only its opening mark above; an inner
    # closing quote followed by attribution ("...," she said) is cut at the quote.
    for q in ('"', "”"):
        if q in line and line.count(q) == 1:
            line = line.split(q)[0].strip()
    sentences = _SENTENCE_END.split(line)
    line = " ".join(sentences[:max_sentences]).strip()
    if len(line) > max_chars:
        cut = line[:max_chars]
        end = max(cut.rfind("."), cut.rfind("!"), cut.rfind("?"))
        line = cut[: end + 1] if end > min_chars else cut
    line = normalize_text(line)
    if len(line) < min_chars or not re.search(r"\w", line):
        return ""
    return line


# ---------------------------------------------------------------------------------------- prompts


def pick_seeds(seed_texts: list[str], item_index: int, k: int) -> list[int]:
    """k seed indices, rotating through the seeds so that successive items see different examples."""
    n = len(seed_texts)
    if n == 0 or k <= 0:
        return []
    start = (item_index * k) % n
    return [(start + j) % n for j in range(min(k, n))]


@dataclass
class StageResult:
    frame: pl.DataFrame
    empty_outputs: int
    stats: dict


Templates = PromptTemplate | Mapping[str, PromptTemplate]  # one for all rows, or language -> template


def _render(templates: Templates, language: str, **values) -> tuple[list, str]:
    """The conversation for one row, in its language's template, and that template's version."""
    template = template_for(templates, language)
    if not isinstance(templates, PromptTemplate):  # per-language templates show localised names
        values["emotion"], definition = localised_emotion(
            values["emotion"], values.get("definition", ""), language
        )
        if "definition" in values:
            values["definition"] = definition
        if "domain" in values:
            values["domain"] = localised_domain(values["domain"], language)
    return template.render(**values), template.version


def _generated_rows(
    generator: Generator,
    versions: list[str],
    settings: GenerationSettings,
    conversations: list,
    items: list,
    *,
    max_sentences: int,
    make_row,
    schema: dict,
    id_column: str,
    progress: ProgressCallback | None,
) -> StageResult:
    """One generation per conversation, cleaned; each non-empty one becomes `make_row(item, text)` plus
    the provenance columns (generator, the version of the template it was prompted with); duplicates by
    `id_column` dropped. A prompt a server gave no usable reply for (its error in the generator's
    `last_errors`, counted in its stats as failed_prompts) is neither a row nor an empty output."""
    outputs = generator.generate(conversations, settings, progress=progress) if conversations else []
    failed = {e.index for e in getattr(generator, "last_errors", [])} if conversations else set()
    rows, empty = [], 0
    for n, (item, raw, version) in enumerate(zip(items, outputs, versions)):
        if n in failed:
            continue
        text = clean_generation(raw, max_sentences=max_sentences)
        if not text:
            empty += 1
            continue
        rows.append(
            {
                **make_row(item, text),
                "generator": generator.cache_id,
                "generator_source": generator.source,
                "prompt_version": version,
            }
        )
    frame = pl.DataFrame(rows, schema=schema).unique(id_column, keep="first", maintain_order=True)
    return StageResult(frame, empty, dict(generator.last_stats) if conversations else {})


def brainstorm_situations(
    generator: Generator,
    template: Templates,
    settings: GenerationSettings,
    *,
    seeds_by_emotion: dict[str, pl.DataFrame],
    taxonomy: Taxonomy,
    count: int,
    domain: str,
    examples_per_prompt: int = 3,
    language: str = "en",
    progress: ProgressCallback | None = None,
) -> StageResult:
    """`count` new situations for each emotion of `seeds_by_emotion` (emotion -> its `situations`
    frame), generated in one batched call across emotions."""
    conversations, meta, versions = [], [], []
    for emotion, seeds in seeds_by_emotion.items():
        if seeds.height:
            seeds = seeds.filter(pl.col("language") == language)
        seed_texts = seeds["situation"].to_list() if seeds.height else []
        seed_ids = seeds["situation_id"].to_list() if seeds.height else []
        definition = taxonomy[emotion].definition
        for i in range(count):
            idx = pick_seeds(seed_texts, i, examples_per_prompt)
            examples = "\n".join(f"- {seed_texts[j]}" for j in idx) or "- (no examples yet)"
            conversation, version = _render(
                template,
                language,
                emotion=emotion,
                definition=definition,
                domain=domain,
                examples=examples,
                number=i + 1,
            )
            conversations.append(conversation)
            versions.append(version)
            meta.append(
                {"emotion": emotion, "item_index": i, "seed_situation_ids": [seed_ids[j] for j in idx]}
            )
    return _generated_rows(
        generator,
        versions,
        settings,
        conversations,
        meta,
        max_sentences=3,
        schema=BRAINSTORM_SCHEMA,
        id_column="situation_id",
        progress=progress,
        make_row=lambda m, text: {
            **m,
            "situation_id": situation_id(m["emotion"], language, text),
            "language": language,
            "domain": domain,
            "situation": text,
        },
    )


def speaker_explanations(
    generator: Generator,
    template: Templates,
    settings: GenerationSettings,
    situations: pl.DataFrame,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Each situation rewritten as the person's first-person utterance."""
    records = situations.to_dicts()
    rendered = [
        _render(template, r["language"], emotion=r["emotion"], situation=r["situation"]) for r in records
    ]
    conversations, versions = [c for c, _ in rendered], [v for _, v in rendered]
    return _generated_rows(
        generator,
        versions,
        settings,
        conversations,
        records,
        max_sentences=4,
        schema=EXPLANATION_SCHEMA,
        id_column="explanation_id",
        progress=progress,
        make_row=lambda r, text: {
            "explanation_id": stable_id("explanation", r["situation_id"], text),
            "situation_id": r["situation_id"],
            "emotion": r["emotion"],
            "language": r["language"],
            "domain": r["domain"],
            "situation": r["situation"],
            "speaker_utterance": text,
        },
    )


def listener_replies(
    generator: Generator,
    template: Templates,
    settings: GenerationSettings,
    explanations: pl.DataFrame,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """One empathetic listener reply per explanation from this generator."""
    records = explanations.to_dicts()
    rendered = [
        _render(template, r["language"], emotion=r["emotion"], utterance=r["speaker_utterance"])
        for r in records
    ]
    conversations, versions = [c for c, _ in rendered], [v for _, v in rendered]
    return _generated_rows(
        generator,
        versions,
        settings,
        conversations,
        records,
        max_sentences=3,
        schema=DIALOGUE_SCHEMA,
        id_column="dialogue_id",
        progress=progress,
        make_row=lambda r, text: {
            "dialogue_id": dialogue_id(r["situation_id"], r["speaker_utterance"], text),
            "situation_id": r["situation_id"],
            "explanation_id": r["explanation_id"],
            "emotion": r["emotion"],
            "language": r["language"],
            "domain": r["domain"],
            "situation": r["situation"],
            "speaker_utterance": r["speaker_utterance"],
            "listener_reply": text,
        },
    )
