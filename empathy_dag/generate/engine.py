"""Batched chat generation with a response cache.

CONTRACT (used by the generate, pairs and evaluate stages):

    settings = GenerationSettings(max_new_tokens=96, temperature=0.7, top_p=0.9, seed=0)
    generator = load_generator(source=<folder or hub id>, adapter=<PEFT folder or None>, ...)
    replies: list[str] = generator.generate(conversations, settings, progress=callback)

`conversations` is a list of chat message lists ([{"role": "system"|"user"|"assistant", "content": str}]).
Results come back in input order. `generator.cache_id` identifies the weights (sha256 of the model
folder, plus the adapter's) and is part of every cache key together with the rendered prompt and the
settings, so a cached reply is only reused for exactly the same model, prompt and settings.

`progress`, when given, is called with one `GenerationProgress` after every batch (and once at the
start with the cache hits counted); `str(progress)` reads well in a log line, and
`log_progress(context.log)` makes such a callback. After each call `generator.last_stats` holds what
happened (requested, cached, generated, new_tokens, seconds, tokens_per_s) for asset metadata.

Why it is fast on CPU: prompts that miss the cache are sorted by token length before batching, so a
batch pads little; left padding lets a whole batch decode together; the model is loaded once per
process (`load_generator` keeps it keyed by source + adapter + dtype + device).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from empathy_dag.models import load_causal_lm, pick_device, pick_dtype, sha256_tree

Conversation = Sequence[dict[str, str]]


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

    def cache_dict(self) -> dict:
        """The settings that change a reply. Sampling knobs do not matter when decoding greedily, so a
        greedy reply is shared whatever temperature/top_p/seed the caller happened to pass."""
        d = self.as_dict()
        d["stop"] = list(self.stop)
        if not self.do_sample:
            d.pop("temperature"), d.pop("top_p"), d.pop("seed")
        return d


# ---------------------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class GenerationProgress:
    done: int  # items answered so far (cache hits included)
    total: int
    cached: int  # of `done`, how many came from the cache
    new_tokens: int  # tokens generated so far in this call
    elapsed_s: float
    tokens_per_s: float
    eta_s: float | None  # None until a first batch has been timed

    def __str__(self) -> str:
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f}s"
        return (
            f"generated {self.done}/{self.total} ({self.cached} cached), {self.new_tokens} new tokens, "
            f"{self.tokens_per_s:.1f} tok/s, elapsed {self.elapsed_s:.0f}s, ETA {eta}"
        )


ProgressCallback = Callable[[GenerationProgress], None]


def log_progress(log, every_s: float = 10.0) -> ProgressCallback:
    """A progress callback for `context.log`: the first and last update and one per `every_s`."""
    last = [0.0]

    def callback(p: GenerationProgress) -> None:
        now = time.monotonic()
        if p.done in (0, p.total) or p.done == p.cached or now - last[0] >= every_s:
            last[0] = now
            log.info(str(p))

    return callback


# ------------------------------------------------------------------------------------------- cache


def cache_key(cache_id: str, prompt: str, settings: GenerationSettings) -> str:
    payload = json.dumps([cache_id, prompt, settings.cache_dict()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def lookup_cached(cache, cache_id: str, prompts: list[str], settings):
    """Split a call into what the cache already answers and what must be generated. Returns the cache
    keys, the results so far (None where missing), the keys to generate with the positions each one
    fills (identical prompts in one call are generated once), and how many were cached. Shared by every
    backend so that their cache behaviour cannot drift apart."""
    keys = [cache_key(cache_id, p, settings) for p in prompts]
    results: list[str | None] = [None] * len(prompts)
    hits = cache.get_many(sorted(set(keys))) if cache is not None else {}
    todo: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k in hits:
            results[i] = hits[k]
        else:
            todo.setdefault(k, []).append(i)
    cached = len(prompts) - sum(len(v) for v in todo.values())
    return keys, results, todo, cached


class ResponseCache:
    """Replies on disk in one SQLite file (WAL). Only finished generations are written, one transaction
    per batch, so a killed run loses at most the batch in flight and never leaves a partial reply.
    Several readers and one writer at a time are safe (SQLite locking; writers wait up to 60 s)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "responses.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, cache_id TEXT, prompt TEXT, "
                "settings TEXT, response TEXT, new_tokens INTEGER, seconds REAL, created REAL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get_many(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock, self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk))
        return found

    def put_many(self, rows: list[tuple[str, str, str, str, str, int, float]]) -> None:
        """rows: (key, cache_id, prompt, settings_json, response, new_tokens, seconds)."""
        now = time.time()
        with self._lock, self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(*r, now) for r in rows]
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


# -------------------------------------------------------------------------------------- generation


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut at the first stop string (generation stops on it, but the stop text itself is returned)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def _batch_seed(seed: int, prompts: Sequence[str]) -> int:
    """Sampling is seeded per batch from the settings' seed and the batch's prompts, so a rerun that
    misses the same prompts draws the same replies whatever else is in the cache."""
    h = hashlib.sha256(str(seed).encode())
    for p in prompts:
        h.update(p.encode("utf-8"))
    return int.from_bytes(h.digest()[:4], "little")


@dataclass
class Generator:
    model: Any
    tokenizer: Any
    cache_id: str
    source: str
    adapter: str | None = None
    batch_size: int = 16
    cache: ResponseCache | None = None
    # CPU threads for generation (None: torch's default). On a shared machine 1 thread is often far
    # faster than 2: OpenMP workers spin-wait on a descheduled sibling (measured 20 vs 2.4 tok/s).
    threads: int | None = None
    last_stats: dict = field(default_factory=dict)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def render(self, conversation: Conversation) -> str:
        """The exact prompt text the model sees (chat template + generation prompt)."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                list(conversation), tokenize=False, add_generation_prompt=True
            )
        # A plain LM without a chat template: role-prefixed lines and an open assistant turn.
        lines = [f"{m['role']}: {m['content']}" for m in conversation]
        return "\n".join(lines) + "\nassistant:"

    def generate(
        self,
        conversations: Sequence[Conversation],
        settings: GenerationSettings | None = None,
        progress: ProgressCallback | None = None,
        batch_size: int | None = None,
    ) -> list[str]:
        settings = settings or GenerationSettings()
        prompts = [self.render(c) for c in conversations]
        return self.generate_prompts(prompts, settings, progress=progress, batch_size=batch_size)

    def generate_prompts(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        progress: ProgressCallback | None = None,
        batch_size: int | None = None,
    ) -> list[str]:
        """Like `generate`, on prompts already rendered with the chat template."""
        import torch

        previous_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._generate_prompts(prompts, settings, progress, batch_size)
        finally:
            if self.threads:
                torch.set_num_threads(previous_threads)

    def _generate_prompts(self, prompts, settings, progress, batch_size) -> list[str]:
        start = time.perf_counter()
        batch_size = batch_size or self.batch_size
        _keys, results, todo, cached = lookup_cached(self.cache, self.cache_id, prompts, settings)
        done, new_tokens = cached, 0

        def report() -> None:
            if progress is None:
                return
            elapsed = time.perf_counter() - start
            rate = new_tokens / elapsed if elapsed > 0 else 0.0
            gen_done = done - cached
            remaining = len(prompts) - done
            eta = (elapsed / gen_done) * remaining if gen_done else None
            progress(GenerationProgress(done, len(prompts), cached, new_tokens, elapsed, rate, eta))

        report()
        if todo:
            unique = [(k, prompts[idx[0]]) for k, idx in todo.items()]
            lengths = [
                len(ids)
                for ids in self.tokenizer([p for _, p in unique], add_special_tokens=False)["input_ids"]
            ]
            order = sorted(range(len(unique)), key=lambda j: -lengths[j])
            settings_json = json.dumps(settings.cache_dict(), sort_keys=True)
            for b in range(0, len(order), batch_size):
                batch = [unique[j] for j in order[b : b + batch_size]]
                t0 = time.perf_counter()
                texts, counts = self._generate_batch([p for _, p in batch], settings)
                seconds = time.perf_counter() - t0
                if self.cache is not None:
                    self.cache.put_many(
                        [
                            (k, self.cache_id, p, settings_json, t, n, seconds / len(batch))
                            for (k, p), t, n in zip(batch, texts, counts)
                        ]
                    )
                for (k, _), t in zip(batch, texts):
                    for i in todo[k]:
                        results[i] = t
                        done += 1
                new_tokens += sum(counts)
                report()
        elapsed = time.perf_counter() - start
        generated = sum(len(v) for v in todo.values())
        self.last_stats = {
            "requested": len(prompts),
            "cached": cached,
            "generated": generated,
            "unique_generated": len(todo),
            "new_tokens": new_tokens,
            "seconds": round(elapsed, 3),
            "tokens_per_s": round(new_tokens / elapsed, 1) if elapsed > 0 and new_tokens else 0.0,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
        }
        return [r if r is not None else "" for r in results]

    def _generate_batch(
        self, prompts: list[str], settings: GenerationSettings
    ) -> tuple[list[str], list[int]]:
        import torch

        tok = self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": settings.do_sample,
            "pad_token_id": tok.pad_token_id,
        }
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
            torch.manual_seed(_batch_seed(settings.seed, prompts))
        else:
            # Greedy: unset the sampling knobs a model's generation_config may carry (avoids warnings).
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if settings.stop:
            kwargs.update(stop_strings=list(settings.stop), tokenizer=tok)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {tok.eos_token_id}
        eos.discard(None)
        texts, counts = [], []
        for row in new.tolist():
            n = len(row)
            for j, t in enumerate(row):
                if t in eos:
                    n = j
                    break
            texts.append(
                truncate_at_stop(tok.decode(row[:n], skip_special_tokens=True), settings.stop).strip()
            )
            counts.append(n)
        return texts, counts


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


# ------------------------------------------------------------------------------------------ loading

_LOADED: dict[tuple, tuple[Any, Any, str]] = {}
_LOAD_LOCK = threading.Lock()


def model_cache_id(source: str, adapter: str | None = None) -> str:
    """sha256 of the weights (folder) or the hub id + resolved commit, plus the adapter's weights."""

    if Path(source).is_dir():
        base = sha256_tree(Path(source))
    else:
        base = hashlib.sha256(f"hub:{source}".encode()).hexdigest()
    if adapter:
        base = hashlib.sha256((base + sha256_tree(Path(adapter))).encode()).hexdigest()
    return base[:16]


def _weights_mtime(folder: str | None) -> float | None:
    if not folder or not Path(folder).is_dir():
        return None
    return max((p.stat().st_mtime for p in Path(folder).rglob("*.safetensors")), default=None)


def load_generator(
    source: str | Path,
    adapter: str | Path | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    allow_hub: bool = False,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> Generator:
    """A Generator over (source, adapter). The weights are loaded once per process and shared by every
    Generator asking for the same source/adapter/dtype/device; `cache_dir` None disables the cache.
    `dtype` "auto" is `models.pick_dtype` (bfloat16 where the hardware has it). The cache is keyed by
    weights, prompt and settings, not precision: a reply is what these weights answered to that prompt."""

    source = str(source)
    adapter = str(adapter) if adapter else None
    resolved = pick_device(device)
    dtype = pick_dtype(dtype, resolved)
    # The weights' mtimes are part of the key: a folder rewritten in place (a re-materialized
    # base_model or adapter) is loaded and hashed again instead of served stale.
    key = (source, adapter, dtype, resolved, _weights_mtime(source), _weights_mtime(adapter))
    with _LOAD_LOCK:
        if key not in _LOADED:
            model, tokenizer = load_causal_lm(
                source,
                dtype=dtype,
                device=resolved,
                trust_remote_code=trust_remote_code,
                allow_hub=allow_hub,
                adapter=adapter,
            )
            _LOADED[key] = (model, tokenizer, model_cache_id(source, adapter))
        model, tokenizer, cid = _LOADED[key]
    return Generator(
        model=model,
        tokenizer=tokenizer,
        cache_id=cid,
        source=source,
        adapter=adapter,
        batch_size=batch_size,
        cache=ResponseCache(cache_dir) if cache_dir else None,
        threads=threads,
    )


def forget_loaded_models() -> None:
    """Drop the process-wide model cache (e.g. after a training step rewrote a folder in place)."""
    with _LOAD_LOCK:
        _LOADED.clear()
