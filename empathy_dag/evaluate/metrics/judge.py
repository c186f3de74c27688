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
    model, tokenizer, conversations: list[list[dict]], batch_size: int = 16, progress=None
) -> list[list[float]]:
    """P(score = 1..5) from the judge's next-token distribution restricted to the five digit tokens
    (G-Eval style). A small judge that would ramble or echo the rubric when asked to *write* a score
    still ranks the five digits, so every item gets a verdict and the expected score is comparable
    across systems. Needs the weights (a local model), not a chat endpoint.

    One forward pass per prompt, batched; prompts are sorted by length so a batch pads to its own
    longest prompt rather than to the longest of the set (results come back in input order).
    `progress(done, total, elapsed_s, eta_s)` is called after every batch."""
    import time

    import torch

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
    lengths = (
        [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []
    )
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
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
                logits = model(**enc).logits[:, -1, :]
            for i, probs in zip(batch, torch.softmax(logits[:, digit_ids].float(), dim=-1).tolist()):
                out[i] = probs
            if progress is not None:
                done, elapsed = start + len(batch), time.perf_counter() - start_time
                progress(done, len(order), elapsed, elapsed / done * (len(order) - done))
    finally:
        tokenizer.padding_side = side
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
