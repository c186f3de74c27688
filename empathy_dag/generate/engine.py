"""Batched chat generation with a response cache.

CONTRACT (used by the generate, pairs and evaluate stages):

    settings = GenerationSettings(max_new_tokens=96, temperature=0.7, top_p=0.9, seed=0)
    generator = load_generator(source=<folder or hub id>, adapter=<PEFT folder or None>, ...)
    replies: list[str] = generator.generate(conversations, settings, progress=callback)

`conversations` is a list of chat message lists ([{"role": "system"|"user"|"assistant", "content": str}]).
Results come back in input order. `generator.cache_id` identifies the weights (sha256 of the model
folder, plus the adapter's) and is part of every cache key together with the rendered prompt and the
settings, so a cached reply is only reused for exactly the same model, prompt and settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.9
    do_sample: bool = True
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return asdict(self)
