"""`PipesBatchGenerator`: `engine.Generator`'s interface for the generation assets, generating a large batch
in a heavy step through Dagster Pipes (`empathy_dag.generate.steps:generate_prompts` in another process)
and a small one in process."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from empathy_dag.defs.pipes import run_heavy_step, store_params
from empathy_dag.generate.engine import (
    Conversation,
    GenerationSettings,
    Generator,
    ResponseCache,
    cache_key,
    lookup_cached,
    model_cache_id,
)
from empathy_dag.generate.steps import PROMPTS_FILE, REPLIES_FILE, STEP
from empathy_dag.models import hub_offline_by_default
from empathy_dag.pipes import read_jsonl, write_jsonl


class PipesBatchGenerator:
    """`engine.Generator`'s interface, generating large batches in a Pipes step."""

    def __init__(
        self,
        context,
        resource,
        model_store,
        *,
        source: str,
        store_model: str | None,
        min_prompts: int,
        load_local,
    ):
        from transformers import AutoTokenizer

        hub_offline_by_default()
        self.context, self.resource, self.model_store = context, resource, model_store
        self.source, self.store_model, self.min_prompts = source, store_model, min_prompts
        self.adapter = resource.adapter or None
        self._load_local = load_local
        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=resource.trust_remote_code)
        self.cache_id = model_cache_id(source, self.adapter)
        self.cache = ResponseCache(resource.cache_dir) if resource.use_cache else None
        self.last_stats: dict = {}

    def render(self, conversation: Conversation) -> str:
        return Generator.render(self, conversation)  # needs only self.tokenizer

    def generate(
        self,
        conversations: Sequence[Conversation],
        settings: GenerationSettings | None = None,
        progress=None,
        batch_size: int | None = None,
    ) -> list[str]:
        settings = settings or GenerationSettings()
        prompts = [self.render(c) for c in conversations]
        _, _, todo, _ = lookup_cached(self.cache, self.cache_id, prompts, settings)
        if len(todo) < self.min_prompts:
            local = self._load_local()
            out = local.generate_prompts(prompts, settings, progress=progress, batch_size=batch_size)
            self.last_stats = dict(local.last_stats)
            return out
        return self._generate_in_step(prompts, settings, batch_size)

    def _generate_in_step(self, prompts: list[str], settings: GenerationSettings, batch_size: int | None):
        digest = hashlib.sha256(
            json.dumps([self.cache_id, settings.cache_dict(), prompts]).encode()
        ).hexdigest()
        name = f"work/generation/{digest[:16]}"
        folder = self.model_store.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        write_jsonl(folder / PROMPTS_FILE, prompts)
        self.model_store.persist(name)
        r = self.resource
        params = {
            "store": store_params(self.model_store),
            "folder": name,
            "settings": {**settings.as_dict(), "stop": list(settings.stop)},
            "source": None if self.store_model else self.source,
            "store_model": self.store_model,
            "adapter": self.adapter,
            "dtype": r.dtype,
            "device": r.device,
            "batch_size": batch_size or r.batch_size,
            "use_cache": r.use_cache,
            "cache_dir": r.cache_dir,
            "allow_hub": r.allow_hub,
            "trust_remote_code": r.trust_remote_code,
            "threads": r.threads or None,
        }
        result = run_heavy_step(self.context, STEP, params)
        replies = read_jsonl(self.model_store.fetch(name) / REPLIES_FILE)
        if len(replies) != len(prompts):
            raise RuntimeError(f"generation step returned {len(replies)} replies for {len(prompts)} prompts")
        stats = {
            k: v.value
            for k, v in (result.metadata or {}).items()
            if k
            in (
                "requested",
                "cached",
                "generated",
                "unique_generated",
                "new_tokens",
                "seconds",
                "tokens_per_s",
            )
        }
        self.last_stats = stats
        step_cache = result.metadata.get("cache_path")
        if self.cache is not None and (step_cache is None or step_cache.value != str(self.cache.path)):
            # The step cached into its own disk: the run's cache learns the replies too. (On a shared
            # disk the step wrote them, with their token counts, into this very cache already.)
            settings_json = json.dumps(settings.cache_dict(), sort_keys=True)
            self.cache.put_many(
                [
                    (cache_key(self.cache_id, p, settings), self.cache_id, p, settings_json, t, 0, 0.0)
                    for p, t in zip(prompts, replies)
                ]
            )
        self.model_store.discard(name)
        return replies
