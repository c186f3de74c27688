"""LLM-as-a-judge: a judge model rates each response on the dimensions of a rubric (fluency, general
empathy, emotion-specific empathy), 1 to 5, one short generation per (item, dimension). The rubric
lives in `assets/rubrics/` so it can be reviewed and versioned without reading code; its sha256 is
part of the materialization metadata. A reply with no score in 1..5 is a parse failure: it is
stored with score NULL and counted, never replaced by a default.

Each language has its own rubric file beside the English one (`judge_rubric_v1.ja.yaml` next to
`judge_rubric_v1.yaml`), with the same dimension keys; an item is judged with its language's rubric,
and an item whose language has none is not judged (counted in metadata), never judged in English."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from empathy_dag.generate.prompts import BASE_LANGUAGE, localised_emotion
from empathy_dag.ingest.language import SUPPORTED_LANGUAGES
from empathy_dag.settings import assets_dir

_SCORE = re.compile(r"(?<![\d.])([1-5])(?!\d|\.\d)")
# "1: Unreadable or broken text" is the judge repeating the rubric's scale, not a score: small models
# do this often, and reading it as a 1 would turn a parse failure into a fake verdict.
_SCALE_ECHO = re.compile(r"^\s*[1-5]\s*[:)\-]\s*\S")


@dataclass(frozen=True)
class Rubric:
    name: str
    system: str
    template: str
    dimensions: dict[str, dict]  # name -> {question, scale: {1..5: description}}
    sha256: str
    language: str = BASE_LANGUAGE

    def conversation(
        self, dimension: str, *, emotion: str, situation: str, speaker_utterance: str, response: str
    ) -> list[dict]:
        spec = self.dimensions[dimension]
        emotion, _ = localised_emotion(emotion, "", self.language)  # the rubric's language's name for it
        scale = "\n".join(f"{k}: {v}" for k, v in sorted(spec["scale"].items(), key=lambda kv: int(kv[0])))
        user = self.template.format(
            question=spec["question"].format(emotion=emotion),
            scale=scale,
            emotion=emotion,
            situation=situation or "(not given)",
            speaker_utterance=speaker_utterance or "",
            response=response or "",
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def default_rubric_path() -> Path:
    return assets_dir() / "rubrics" / "judge_rubric_v1.yaml"


def rubric_path_for(path: str | Path | None, language: str) -> Path:
    """The `language` rubric beside the English one: judge_rubric_v1.yaml -> judge_rubric_v1.ja.yaml."""
    path = Path(path) if path else default_rubric_path()
    return path if language == BASE_LANGUAGE else path.with_name(f"{path.stem}.{language}{path.suffix}")


def load_rubrics(
    path: str | Path | None = None, languages: tuple[str, ...] = SUPPORTED_LANGUAGES
) -> dict[str, Rubric]:
    """language -> rubric for each of `languages` that has a rubric file; all must share the English
    rubric's dimensions (scores are compared by dimension across languages)."""
    rubrics = {}
    for lang in languages:
        file = rubric_path_for(path, lang)
        if lang == BASE_LANGUAGE or file.is_file():
            rubrics[lang] = load_rubric(file, language=lang)
    base = rubrics.get(BASE_LANGUAGE)
    for lang, rubric in rubrics.items():
        if base is not None and set(rubric.dimensions) != set(base.dimensions):
            raise ValueError(
                f"rubric {rubric.name} ({lang}) has dimensions {sorted(rubric.dimensions)}, "
                f"the English one {sorted(base.dimensions)}: they must match"
            )
    return rubrics


def load_rubric(path: str | Path | None = None, language: str = BASE_LANGUAGE) -> Rubric:
    path = Path(path) if path else default_rubric_path()
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    for dim, spec in data["dimensions"].items():
        if sorted(int(k) for k in spec["scale"]) != [1, 2, 3, 4, 5]:
            raise ValueError(f"{path}: dimension {dim} must describe scores 1 to 5")
    return Rubric(
        name=data["name"],
        system=data["system"],
        template=data["template"],
        dimensions=data["dimensions"],
        sha256=hashlib.sha256(raw).hexdigest(),
        language=language,
    )


def parse_score(reply: str) -> int | None:
    """The first standalone digit 1-5 of the reply ("4", "Score: 4/5", "I'd give it a 4"); None for a
    reply that echoes the rubric's scale ("1: Unreadable...") or has no such digit."""
    if _SCALE_ECHO.match(reply or ""):
        return None
    m = _SCORE.search(reply or "")
    return int(m.group(1)) if m else None


JUDGE_SCORING_MODES = ("probabilities", "generate")


def digit_probabilities(
    model,
    tokenizer,
    conversations: list[list[dict]],
    batch_size: int = 16,
    progress=None,
    groups: list | None = None,
) -> list[list[float]]:
    """P(score = 1..5) from the judge's next-token distribution restricted to the five digit tokens
    (G-Eval style). A small judge that would ramble or echo the rubric when asked to *write* a score
    still ranks the five digits, so every item gets a verdict and the expected score is comparable
    across systems. Needs the weights (a local model), not a chat endpoint.

    Without `groups`: one forward pass per prompt, batched; prompts are sorted by length so a batch pads
    to its own longest prompt rather than to the longest of the set. With `groups` (one hashable per
    conversation, e.g. the (system, item) a rubric dimension is asked about): the prompts of a group share
    their longest common token prefix (system prompt, situation, dialogue, reply), which is computed once
    and its KV cache reused for each prompt's own suffix (the dimension's question and scale): the same
    token ids at the same positions, so the same probabilities (to float rounding; tests check), for
    ~40% fewer tokens with the demo's rubric. Results come back in input order either way.
    `progress(done, total, elapsed_s, eta_s)` is called after every batch or group."""
    import inspect

    digit_ids = []
    for d in "12345":
        ids = tokenizer.encode(d, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"the judge's tokenizer splits the digit {d!r} into {ids}: use judge_scoring=generate"
            )
        digit_ids.append(ids[0])
    prompts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations
    ]
    token_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    # Only the last position's logits are read: without `logits_to_keep` the LM head (49k x 576 for
    # SmolLM2, ~20% of a forward pass) runs on every prompt token and a batch of 16 x 500 tokens
    # materializes 1.5 GB of float32 logits.
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    if groups is not None:
        if len(groups) != len(prompts):
            raise ValueError(f"{len(groups)} groups for {len(prompts)} conversations")
        return _grouped_digit_probabilities(
            model, token_ids, groups, digit_ids, keeps_logits, tokenizer, progress
        )
    return _batched_digit_probabilities(
        model, tokenizer, prompts, token_ids, digit_ids, keeps_logits, batch_size, progress
    )


def _batched_digit_probabilities(
    model, tokenizer, prompts, token_ids, digit_ids, keeps_logits, batch_size, progress
) -> list[list[float]]:
    import time

    import torch

    order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
    last_only = {"use_cache": False, **({"logits_to_keep": 1} if keeps_logits else {})}
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # the last position is the next token
    out: list[list[float] | None] = [None] * len(prompts)
    start_time = time.perf_counter()
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            enc = tokenizer(
                [prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            with torch.no_grad():
                logits = model(**enc, **last_only).logits[:, -1, :]
            for i, probs in zip(batch, torch.softmax(logits[:, digit_ids].float(), dim=-1).tolist()):
                out[i] = probs
            if progress is not None:
                done, elapsed = start + len(batch), time.perf_counter() - start_time
                progress(done, len(order), elapsed, elapsed / done * (len(order) - done))
    finally:
        tokenizer.padding_side = side
    return out


def _common_prefix_length(sequences: list[list[int]]) -> int:
    first, n = sequences[0], min(len(s) for s in sequences)
    for k in range(n):
        if any(s[k] != first[k] for s in sequences[1:]):
            return k
    return n


def _grouped_digit_probabilities(
    model, token_ids, groups, digit_ids, keeps_logits, tokenizer, progress
) -> list[list[float]]:
    """Per group: the shared prefix once (batch 1, its KV cache kept), then the group's suffixes as one
    right-padded batch continuing from it (explicit positions; a pad token comes after the real ones, so a
    causal model's real positions never see it), read at each suffix's last real token."""
    import inspect
    import time

    import torch

    # transformers 5 renamed the KV-cache argument and output `past_key_values` -> `cache` (the old name
    # is deprecated); pyproject allows 4.56 too, which only knows the old one
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[list[float] | None] = [None] * len(token_ids)
    done, total, start_time = 0, len(token_ids), time.perf_counter()
    for idx in members.values():
        seqs = [token_ids[i] for i in idx]
        # every prompt keeps at least its last token in the suffix: that position gives the logits
        shared = min(_common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
        suffixes = [s[shared:] for s in seqs]
        width = max(len(s) for s in suffixes)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes], device=model.device)
        mask = torch.tensor(
            [[1] * (shared + len(s)) + [0] * (width - len(s)) for s in suffixes], device=model.device
        )
        positions = torch.arange(shared, shared + width, device=model.device).expand(len(seqs), -1)
        last = torch.tensor([len(s) - 1 for s in suffixes], device=model.device)
        wanted = torch.unique(last)  # the suffix positions whose logits are read (<= one per prompt)
        with torch.no_grad():
            cache = None
            if shared:
                prefix = torch.tensor([seqs[0][:shared]], device=model.device)
                cache = getattr(
                    model(
                        input_ids=prefix, use_cache=True, **({"logits_to_keep": 1} if keeps_logits else {})
                    ),
                    cache_name,
                )
                cache.batch_repeat_interleave(len(seqs))
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{cache_name: cache},
                use_cache=cache is not None,
                **({"logits_to_keep": wanted} if keeps_logits else {}),
            ).logits
        column = torch.searchsorted(wanted, last) if keeps_logits else last
        rows = logits[torch.arange(len(seqs), device=model.device), column][:, digit_ids]
        for i, probs in zip(idx, torch.softmax(rows.float(), dim=-1).tolist()):
            out[i] = probs
        done += len(idx)
        if progress is not None:
            elapsed = time.perf_counter() - start_time
            progress(done, total, elapsed, elapsed / done * (total - done))
    return out


def log_judge_progress(log, every_s: float = 10.0):
    """A `digit_probabilities` progress callback for `context.log`: first, last and one per `every_s`."""
    import time

    last = [0.0]

    def callback(done: int, total: int, elapsed: float, eta: float) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            log.info(
                f"judge: {done}/{total} prompts, {done / max(elapsed, 1e-9):.1f} prompts/s, "
                f"elapsed {elapsed:.0f}s, ETA {eta:.0f}s"
            )

    return callback


def expected_score(probabilities: list[float]) -> float:
    return float(sum(p * (k + 1) for k, p in enumerate(probabilities)))
