"""Emotional alignment (EmplifAI): a model reads the situation and the dialogue (speaker turn and
the system's response) and names the emotion the speaker feels; the named emotion is compared with
the gold label by BERTScore F1 of the two label strings, by exact match and by Ekman group (the
taxonomy maps the 28 labels onto Ekman's six basic emotions + neutral)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from empathy_dag.taxonomy import Taxonomy

SYSTEM = "You are an expert in emotions. Answer with one word."


def alignment_conversation(situation: str, speaker_utterance: str, response: str, labels: Sequence[str]) -> list[dict]:
    user = (
        f"Situation: {situation or '(not given)'}\n"
        f"Speaker: {speaker_utterance}\n"
        f"Listener: {response}\n\n"
        f"Which emotion does the speaker feel? Choose one of: {', '.join(labels)}.\n"
        "Emotion:"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_emotion(reply: str, taxonomy: Taxonomy) -> str | None:
    """The taxonomy label (or EmpatheticDialogues label mapped onto one) mentioned first in the reply."""
    text = (reply or "").lower()
    best: tuple[int, str] | None = None
    for word in [*taxonomy.labels, *taxonomy.ed_mapping]:
        m = re.search(rf"\b{re.escape(word)}\b", text)
        if m and (best is None or m.start() < best[0] or (m.start() == best[0] and len(word) > len(best[1]))):
            best = (m.start(), word)
    return taxonomy.normalize_label(best[1]) if best else None


def named_text(reply: str, parsed: str | None) -> str:
    """What BERTScore compares with the gold label: the parsed label, else the reply's first line."""
    if parsed:
        return parsed
    first = (reply or "").strip().splitlines()
    return first[0][:60] if first else ""


def alignment_rows(replies: Sequence[str], gold: Sequence[str], taxonomy: Taxonomy, scorer) -> list[dict]:
    from empathy_dag.evaluate.metrics.bertscore import bertscore

    parsed = [parse_emotion(r, taxonomy) for r in replies]
    named = [named_text(r, p) for r, p in zip(replies, parsed)]
    f1 = bertscore(scorer, named, list(gold))["f1"] if replies else []
    rows = []
    for reply, p, n, g, f in zip(replies, parsed, named, gold, f1):
        gold_ekman = taxonomy.ekman(g) if g in taxonomy else None
        rows.append({
            "alignment_reply": reply,
            "named_emotion": p,
            "alignment_bertscore_f1": f,
            "alignment_exact": float(p == g),
            "alignment_ekman": float(p is not None and gold_ekman is not None and taxonomy.ekman(p) == gold_ekman),
        })
    return rows
