"""Generation split across several OpenAI-compatible endpoints (one llama.cpp / vLLM server per GPU or
worker), with the same interface as one `OpenAICompatibleGenerator`:

    ShardedGenerator([gen_a, gen_b], chunk_size=64).generate(conversations, settings)

What a call does: the prompts the response cache already answers are served from it; the rest is cut
into chunks of `chunk_size` (in prompt order, so a chunk is a function of the call's inputs), and one
worker thread per endpoint pulls the next chunk from a shared queue. Faster servers simply pull more
chunks. Each endpoint's generator writes its finished replies to the shared cache as they arrive (the
cache is keyed by the weights' `cache_id`, not by the server, so any endpoint serving the same weights
answers any chunk). When an endpoint fails (unreachable, retries exhausted), its unfinished chunk goes
back to the queue for the others and the endpoint takes no more work: a lost worker loses at most the
replies in flight on it, never a finished one, and a re-run completes from the cache. The call fails
only when every endpoint has failed, with each one's error. A prompt whose reply was bad (not JSON, no
choices) is that prompt's error, as on one endpoint: in `last_errors` (positions in the whole call) and
counted in `last_stats["failed_prompts"]`.

`digit_probabilities` (the judge's probabilities mode) is not split: those are one-token requests,
sent to the first endpoint that answers."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from empathy_dag.generate.engine import GenerationSettings, lookup_cached
from empathy_dag.generate.openai_backend import (
    GenerationBackendError,
    OpenAICompatibleGenerator,
    PromptError,
    RetriesExhausted,
    ServerUnreachable,
)


class AllEndpointsFailed(GenerationBackendError):
    """Every endpoint of a sharded call failed; the finished replies are in the cache."""


@dataclass
class ShardedGenerator:
    endpoints: list[OpenAICompatibleGenerator]
    chunk_size: int = 64
    last_stats: dict = field(default_factory=dict)
    last_errors: list[PromptError] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("ShardedGenerator needs at least one endpoint")
        ids = {g.cache_id for g in self.endpoints}
        if len(ids) != 1:
            # Different cache ids mean different weights: their replies must not be mixed in one call.
            raise ValueError(f"every endpoint must serve the same weights (one cache_id), got {sorted(ids)}")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        # One cache object for all endpoints, so their writes go through one lock.
        cache = next((g.cache for g in self.endpoints if g.cache is not None), None)
        for g in self.endpoints:
            g.cache = cache

    @property
    def cache(self):
        return self.endpoints[0].cache

    @cache.setter
    def cache(self, value) -> None:
        for g in self.endpoints:
            g.cache = value

    @property
    def cache_id(self) -> str:
        return self.endpoints[0].cache_id

    @property
    def source(self) -> str:
        # Lineage names the weights, not the server that happened to answer a chunk.
        return f"sharded[{len(self.endpoints)}]#{self.endpoints[0].model}"

    def render(self, conversation) -> str:
        return self.endpoints[0].render(conversation)

    def generate(
        self,
        conversations: Sequence,
        settings: GenerationSettings | None = None,
        progress=None,
        batch_size: int | None = None,
    ) -> list[str]:
        settings = settings or GenerationSettings()
        start = time.perf_counter()
        prompts = [self.render(c) for c in conversations]
        _keys, results, todo, cached = lookup_cached(self.cache, self.cache_id, prompts, settings)
        # One position per distinct prompt; duplicates are filled from it at the end.
        firsts = sorted(idx[0] for idx in todo.values())
        chunks: queue.Queue = queue.Queue()
        for n, s in enumerate(range(0, len(firsts), self.chunk_size)):
            chunks.put((n, firsts[s : s + self.chunk_size]))
        n_chunks = chunks.qsize()
        lock = threading.Lock()
        per_endpoint = {
            g.base_url: {"chunks": 0, "replies": 0, "new_tokens": 0, "failed_prompts": 0, "failed": None}
            for g in self.endpoints
        }
        errors: list[PromptError] = []
        failures: dict[str, str] = {}
        done_chunks = [0]

        def work(gen: OpenAICompatibleGenerator) -> None:
            while True:
                with lock:
                    if done_chunks[0] == n_chunks or len(failures) == len(self.endpoints):
                        return
                try:
                    n, positions = chunks.get(timeout=0.2)
                except queue.Empty:
                    continue  # another worker may still hand its chunk back
                try:
                    replies = gen.generate([conversations[i] for i in positions], settings)
                except (GenerationBackendError, OSError) as exc:
                    chunks.put((n, positions))  # its finished replies are cached; the rest goes to others
                    with lock:
                        failures[gen.base_url] = f"{type(exc).__name__}: {str(exc)[:300]}"
                        per_endpoint[gen.base_url]["failed"] = failures[gen.base_url]
                    return
                with lock:
                    for i, text in zip(positions, replies, strict=True):
                        results[i] = text
                    for e in gen.last_errors:  # positions in the chunk -> positions in the call
                        errors.append(PromptError(positions[e.index], e.kind, e.message))
                    stats = per_endpoint[gen.base_url]
                    stats["failed_prompts"] += len(gen.last_errors)
                    stats["chunks"] += 1
                    stats["replies"] += len(positions)
                    stats["new_tokens"] += int(gen.last_stats.get("new_tokens", 0))
                    done_chunks[0] += 1

        threads = [
            threading.Thread(target=work, args=(g,), name=f"shard-{i}", daemon=True)
            for i, g in enumerate(self.endpoints)
        ]
        if n_chunks:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if done_chunks[0] < n_chunks:
            detail = "; ".join(f"{url}: {msg}" for url, msg in failures.items())
            final = ServerUnreachable if failures else AllEndpointsFailed
            raise final(
                f"sharded generation stopped with {n_chunks - done_chunks[0]} of {n_chunks} chunks "
                f"unfinished: every endpoint failed ({detail}). Finished replies are cached: re-run "
                "once a server is back."
            )
        failed_firsts = {e.index for e in errors}
        for idx in todo.values():
            for j in idx[1:]:
                results[j] = results[idx[0]]
                if idx[0] in failed_firsts:
                    errors.append(
                        next(PromptError(j, e.kind, e.message) for e in errors if e.index == idx[0])
                    )
        self.last_errors = sorted(errors, key=lambda e: e.index)
        elapsed = time.perf_counter() - start
        new_tokens = sum(s["new_tokens"] for s in per_endpoint.values())
        self.last_stats = {
            "backend": "openai-compatible-sharded",
            "endpoints": len(self.endpoints),
            "chunk_size": self.chunk_size,
            "requested": len(prompts),
            "cached": cached,
            "unique_generated": len(todo),
            "chunks": n_chunks,
            "per_endpoint": per_endpoint,
            "new_tokens": new_tokens,
            "seconds": round(elapsed, 3),
            **OpenAICompatibleGenerator._error_stats(self.last_errors),
            "tokens_per_s": round(new_tokens / elapsed, 1) if elapsed > 0 and new_tokens else 0.0,
        }
        return [r if r is not None else "" for r in results]

    def digit_probabilities(self, conversations: Sequence, digits: str = "12345", progress=None):
        """`OpenAICompatibleGenerator.digit_probabilities` on the first endpoint that answers."""
        failures = []
        for gen in self.endpoints:
            try:
                out = gen.digit_probabilities(conversations, digits=digits, progress=progress)
            except (ServerUnreachable, RetriesExhausted) as exc:
                failures.append(f"{gen.base_url}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            self.last_stats, self.last_errors = dict(gen.last_stats), list(gen.last_errors)
            return out
        raise ServerUnreachable(f"digit probabilities: every endpoint failed ({'; '.join(failures)})")
