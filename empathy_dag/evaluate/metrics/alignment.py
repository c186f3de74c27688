"""Emotional alignment (EmplifAI): a model reads the situation and the dialogue (speaker turn and
the system's response) and names the emotion the speaker feels; the named emotion is compared with
the gold label by BERTScore F1 of the two label strings, by exact match and by Ekman group (the
taxonomy maps the 28 labels onto Ekman's six basic emotions + neutral). The namer is an LLM
(EmplifAI's protocol) or, by default for a small base model, the emotion classifier."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from empathy_dag.evaluate.metrics.bertscore import bertscore
from empathy_dag.generate.prompts import BASE_LANGUAGE, emotion_names
from empathy_dag.ingest.language import SUPPORTED_LANGUAGES
from empathy_dag.taxonomy import Taxonomy

SYSTEM = "You are an expert in emotions. Answer with one word."

# The prompt for an item of another language, in that language (a Japanese dialogue asked about in
# English invites an English answer that mixes scripts); the labels are shown by their names in
# `emotion_names.<lang>.json`, and `parse_emotion` reads those names back.
LOCALISED_PROMPTS: dict[str, dict[str, str]] = {
    "ja": {
        "system": "あなたは感情の専門家です。一語で答えてください。",
        "situation": "状況",
        "not_given": "（記載なし）",
        "earlier": "それまでのやり取り",
        "speaker": "話し手",
        "listener": "聞き手",
        "question": "話し手はどの感情を感じていますか。次の中から一つ選んでください: ",
        "separator": "、",
        "end": "。",
        "answer": "感情:",
    },
}


def alignment_conversation(
    situation: str,
    speaker_utterance: str,
    response: str,
    labels: Sequence[str],
    history: str = "",
    language: str = BASE_LANGUAGE,
) -> list[dict]:
    """The namer's prompt for one item, in the item's language (English for a language without one
    of its own in LOCALISED_PROMPTS would be a silent fall-back: an error instead)."""
    if language == BASE_LANGUAGE:
        earlier = f"Earlier turns:\n{history}\n" if history else ""
        user = (
            f"Situation: {situation or '(not given)'}\n"
            f"{earlier}"
            f"Speaker: {speaker_utterance}\n"
            f"Listener: {response}\n\n"
            f"Which emotion does the speaker feel? Choose one of: {', '.join(labels)}.\n"
            "Emotion:"
        )
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    if language not in LOCALISED_PROMPTS:
        raise ValueError(
            f"no alignment prompt for language {language!r} (have: {BASE_LANGUAGE}, "
            f"{', '.join(LOCALISED_PROMPTS)})"
        )
    t = LOCALISED_PROMPTS[language]
    names = emotion_names(language)
    earlier = f"{t['earlier']}:\n{history}\n" if history else ""
    user = (
        f"{t['situation']}: {situation or t['not_given']}\n"
        f"{earlier}"
        f"{t['speaker']}: {speaker_utterance}\n"
        f"{t['listener']}: {response}\n\n"
        f"{t['question']}{t['separator'].join(names[label]['name'] for label in labels)}{t['end']}\n"
        f"{t['answer']}"
    )
    return [{"role": "system", "content": t["system"]}, {"role": "user", "content": user}]


@cache
def _localised_names() -> tuple[tuple[str, str], ...]:
    """(surface form, label) for every supported language's names and variants of the 28 labels."""
    pairs = []
    for language in SUPPORTED_LANGUAGES:
        if language == BASE_LANGUAGE:
            continue
        for label, entry in emotion_names(language).items():
            for form in (entry["name"], *entry.get("variants", ())):
                pairs.append((unicodedata.normalize("NFKC", form).lower(), label))
    return tuple(pairs)


def parse_emotion(reply: str, taxonomy: Taxonomy) -> str | None:
    """The taxonomy label (or EmpatheticDialogues label mapped onto one, or a label's name in another
    supported language) mentioned first in the reply; at the same position the longer name wins
    ("深い悲しみ" is grief, not the sadness inside it). Whatever the item's language: a Japanese item
    may be answered in English and the other way round.

    English names must stand as ASCII words (`joy` is not read in `enjoy`); `\\b` would not do, as
    it sees no boundary between a kana and a Latin letter (感情はsadnessです). Japanese is written
    without spaces, so its names are found as substrings: the variants are stems long enough not to
    occur inside unrelated words."""
    text = unicodedata.normalize("NFKC", reply or "").lower()
    best: tuple[int, int, str] | None = None  # (start, -length, label)
    for word in [*taxonomy.labels, *taxonomy.ed_mapping]:
        m = re.search(rf"(?<![a-z0-9_]){re.escape(word)}(?![a-z0-9_])", text)
        if m and (best is None or (m.start(), -len(word)) < best[:2]):
            best = (m.start(), -len(word), taxonomy.normalize_label(word))
    for form, label in _localised_names():
        start = text.find(form)
        if start >= 0 and (best is None or (start, -len(form)) < best[:2]):
            best = (start, -len(form), label)
    return best[2] if best else None


def named_text(reply: str, parsed: str | None) -> str:
    """What BERTScore compares with the gold label: the parsed label, else the reply's first line."""
    if parsed:
        return parsed
    first = (reply or "").strip().splitlines()
    return first[0][:60] if first else ""


def alignment_rows(replies: Sequence[str], gold: Sequence[str], taxonomy: Taxonomy, scorer) -> list[dict]:
    parsed = [parse_emotion(r, taxonomy) for r in replies]
    named = [named_text(r, p) for r, p in zip(replies, parsed)]
    f1 = bertscore(scorer, named, list(gold))["f1"] if replies else []
    rows = []
    for reply, p, _n, g, f in zip(replies, parsed, named, gold, f1):
        gold_ekman = taxonomy.ekman(g) if g in taxonomy else None
        rows.append(
            {
                "alignment_reply": reply,
                "named_emotion": p,
                "alignment_bertscore_f1": f,
                "alignment_exact": float(p == g),
                "alignment_ekman": float(
                    p is not None and gold_ekman is not None and taxonomy.ekman(p) == gold_ekman
                ),
            }
        )
    return rows


# ------------------------------------------------------------------------------ who names the emotion
# EmplifAI asks a capable LLM to name the emotion. The embedded SmolLM2-135M names 0 of 21 exactly
# (it mostly echoes the list or the speaker's words), so on the default install the metric carries no
# information; the fine-tuned GoEmotions classifier reading the same text is the default namer there.

SMALL_MODEL_PARAMETERS = 1_000_000_000  # below this, `auto` prefers the classifier


def estimated_parameters(config: dict) -> int:
    """Decoder parameters from a transformers config.json (12 h^2 per layer + embeddings): enough to
    tell a 135M model from a 7B one without loading it."""
    hidden = int(config.get("hidden_size") or config.get("n_embd") or 0)
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    vocab = int(config.get("vocab_size") or 0)
    return 12 * layers * hidden * hidden + vocab * hidden


def choose_namer(
    setting: str, model_folder: str | Path | None, classifier_available: bool
) -> tuple[str, str]:
    """(namer, why). `llm` and `classifier` are taken as set (classifier needs the classifier);
    `auto` picks the classifier for a local model under SMALL_MODEL_PARAMETERS when it exists."""
    if setting == "classifier":
        if not classifier_available:
            raise FileNotFoundError(
                "alignment_namer=classifier needs the emotion_classifier folder: materialize "
                "`emotion_classifier` (GoEmotions) or set alignment_namer to llm/auto"
            )
        return "classifier", "set by alignment_namer"
    if setting == "llm":
        return "llm", "set by alignment_namer"
    if setting != "auto":
        raise ValueError(f"alignment_namer must be auto, llm or classifier, got {setting!r}")
    config_path = Path(model_folder) / "config.json" if model_folder else None
    if config_path is None or not config_path.is_file():
        return "llm", "auto: the alignment model is not a local folder (hub id or server): asked as an LLM"
    params = estimated_parameters(json.loads(config_path.read_text()))
    if params >= SMALL_MODEL_PARAMETERS:
        return "llm", f"auto: alignment model ~{params / 1e9:.1f}B parameters"
    if not classifier_available:
        return "llm", (
            f"auto: alignment model ~{params / 1e6:.0f}M parameters (too small to name emotions) but no "
            "emotion_classifier folder: asked as an LLM anyway"
        )
    return (
        "classifier",
        f"auto: alignment model ~{params / 1e6:.0f}M parameters, too small: the emotion classifier names",
    )


def namer_texts(
    situations: Sequence[str], histories: Sequence[str], speakers: Sequence[str], responses: Sequence[str]
) -> list[str]:
    """What the classifier reads: the same situation and dialogue the LLM is shown."""
    return [
        " ".join(t for t in (s or "", h or "", u or "", r or "") if t)
        for s, h, u, r in zip(situations, histories, speakers, responses)
    ]
