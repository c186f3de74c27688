"""EmPO preference pairs (Sotolar et al., 2024, "EmPO: Emotion Grounding for Empathetic Response
Generation through Preference Optimization"): the prompt is the speaker's turn, `chosen` is the
empathetic reply written for it, `rejected` is a reply written for a situation of the taxonomy's
opposite emotion. A rejected reply is fluent and empathetic in form, only wrong about the feeling,
so the preference teaches emotion grounding rather than fluency.

Every pair keeps the ids of both source dialogues and its draw index; a pair is a pure function of
(prompt row, candidate pool, seed), so re-running on the same data gives the same pairs."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import polars as pl

PAIR_SCHEMA = {
    "pair_id": pl.String,
    "emotion": pl.String,
    "rejected_emotion": pl.String,
    "split": pl.String,
    "language": pl.String,
    "draw": pl.Int64,
    "prompt_dialogue_id": pl.String,
    "prompt_situation_id": pl.String,
    "rejected_dialogue_id": pl.String,
    "rejected_situation_id": pl.String,
    "negative_source": pl.String,
    "system_prompt": pl.String,
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "seed": pl.Int64,
}


@dataclass
class PairStats:
    prompts: int = 0
    pairs: int = 0
    prompts_without_opposite: int = 0
    by_split: dict[str, int] = field(default_factory=dict)


def pair_id(prompt_dialogue_id: str, rejected_id: str, draw: int, system_prompt: str | None) -> str:
    key = "\x1f".join([prompt_dialogue_id, rejected_id, str(draw), system_prompt or ""])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _draw_rng(seed: int, dialogue_id: str) -> random.Random:
    # Seeded per prompt, not per run: a prompt's draws do not depend on which other prompts exist.
    return random.Random(hashlib.sha256(f"{seed}\x1f{dialogue_id}".encode()).digest())


def build_preference_pairs(
    prompts: pl.DataFrame,
    candidates: pl.DataFrame,
    *,
    emotion: str,
    opposite: str,
    k: int = 3,
    seed: int = 0,
    system_prompt: str | None = None,
    same_split: bool = True,
    same_language: bool = True,
) -> tuple[pl.DataFrame, PairStats]:
    """Pairs for the dialogues of `emotion` (`prompts`, with a `split` column) against replies of
    `opposite` (`candidates`). Up to `k` distinct rejected replies per prompt, drawn without
    replacement. Rejected replies come from the same split by default, so no validation or test
    reply ever appears in a training pair, and from the same language, so that the preference is
    about the emotion and not about the language."""
    if emotion == opposite:
        raise ValueError(f"{emotion}: an emotion cannot be its own opposite")
    prompts = prompts.filter(pl.col("emotion") == emotion) if prompts.height else prompts
    candidates = candidates.filter(pl.col("emotion") == opposite) if candidates.height else candidates
    # The pools are indexed once, (split, language) -> candidates sorted by dialogue_id, with the set of
    # their situation ids: a prompt then samples its pool by index in O(k), instead of rebuilding the pool
    # by scanning every candidate (which made pairing quadratic: ~1.9e8 checks at 105k rows).
    pools: dict[tuple, list[dict]] = {}
    pool_situations: dict[tuple, set[str]] = {}
    for row in candidates.sort("dialogue_id").iter_rows(named=True) if candidates.height else []:
        key = (row["split"] if same_split else None, row["language"] if same_language else None)
        pools.setdefault(key, []).append(row)
        pool_situations.setdefault(key, set()).add(row["situation_id"])

    stats = PairStats()
    out: list[dict] = []
    for row in prompts.sort("dialogue_id").iter_rows(named=True) if prompts.height else []:
        stats.prompts += 1
        key = (row["split"] if same_split else None, row["language"] if same_language else None)
        # Never the prompt's own reply, never its own situation. Across emotions a shared situation is
        # (nearly) impossible, so the indexed pool is used as is; only when the situation does occur in it
        # is a filtered copy made. Either way `sample` sees the same list as the old per-prompt scan did,
        # so the seeded draws (and pair ids) are unchanged: no new code version.
        pool = pools.get(key, [])
        if row["situation_id"] in pool_situations.get(key, ()):
            pool = [c for c in pool if c["situation_id"] != row["situation_id"]]
        if not pool:
            stats.prompts_without_opposite += 1
            continue
        drawn = _draw_rng(seed, row["dialogue_id"]).sample(pool, min(k, len(pool)))
        for draw, neg in enumerate(drawn):
            out.append(
                {
                    "pair_id": pair_id(row["dialogue_id"], neg["dialogue_id"], draw, system_prompt),
                    "emotion": emotion,
                    "rejected_emotion": opposite,
                    "split": row["split"],
                    "language": row["language"],
                    "draw": draw,
                    "prompt_dialogue_id": row["dialogue_id"],
                    "prompt_situation_id": row["situation_id"],
                    "rejected_dialogue_id": neg["dialogue_id"],
                    "rejected_situation_id": neg["situation_id"],
                    "negative_source": "opposite_emotion",
                    "system_prompt": system_prompt,
                    "prompt": row["speaker_utterance"],
                    "chosen": row["listener_reply"],
                    "rejected": neg["listener_reply"],
                    "seed": seed,
                }
            )
            stats.by_split[row["split"]] = stats.by_split.get(row["split"], 0) + 1
    stats.pairs = len(out)
    return pl.DataFrame(out, schema=PAIR_SCHEMA), stats


def negative_instruction(opposite: str, definition: str) -> str:
    return (
        f"Reply to the speaker as a friend would, assuming they feel {opposite} ({definition}). "
        "Answer in one or two sentences."
    )


def model_written_negatives(
    prompts: pl.DataFrame,
    *,
    emotion: str,
    opposite: str,
    opposite_definition: str,
    generate,
    seed: int = 0,
    system_prompt: str | None = None,
) -> pl.DataFrame:
    """EmPO's optional second kind of negative: the base model answering each prompt as if the speaker
    felt the opposite emotion. `generate(conversations) -> list[str]` is injected (the generate
    stage's engine) so that this stays a pure function of its inputs."""
    rows = list(prompts.sort("dialogue_id").iter_rows(named=True)) if prompts.height else []
    if not rows:
        return pl.DataFrame(schema=PAIR_SCHEMA)
    instruction = negative_instruction(opposite, opposite_definition)
    conversations = [
        [{"role": "system", "content": instruction}, {"role": "user", "content": r["speaker_utterance"]}]
        for r in rows
    ]
    replies = generate(conversations)
    out = []
    for row, reply in zip(rows, replies, strict=True):
        if not reply or not reply.strip():
            continue
        rejected_id = "model:" + hashlib.sha256(reply.encode()).hexdigest()[:16]
        out.append(
            {
                "pair_id": pair_id(row["dialogue_id"], rejected_id, -1, system_prompt),
                "emotion": emotion,
                "rejected_emotion": opposite,
                "split": row["split"],
                "language": row["language"],
                "draw": -1,
                "prompt_dialogue_id": row["dialogue_id"],
                "prompt_situation_id": row["situation_id"],
                "rejected_dialogue_id": rejected_id,
                "rejected_situation_id": None,
                "negative_source": "model",
                "system_prompt": system_prompt,
                "prompt": row["speaker_utterance"],
                "chosen": row["listener_reply"],
                "rejected": reply.strip(),
                "seed": seed,
            }
        )
    return pl.DataFrame(out, schema=PAIR_SCHEMA)


def pairs_content_hash(frame: pl.DataFrame) -> str:
    """A version of a pairs frame that depends only on its content (ids and texts), not on row order."""
    h = hashlib.sha256()
    if frame.height:
        cols = ["pair_id", "split", "system_prompt", "prompt", "chosen", "rejected"]
        for row in frame.sort("pair_id").select(cols).iter_rows():
            h.update("\x1f".join("" if v is None else str(v) for v in row).encode())
            h.update(b"\x1e")
    return h.hexdigest()
