"""Generation through any OpenAI-compatible chat-completions server (vLLM, llama.cpp's server,
`python -m llama_cpp.server`, hosted APIs), behind the same interface as the in-process engine:

    generator = OpenAICompatibleBackend(base_url=..., model=..., cache_id=...).get_generator()
    replies: list[str] = generator.generate(conversations, GenerationSettings(...), progress=callback)

Same response cache, same key rules as `engine.Generator`: key = (cache_id, prompt text, settings).
The prompt text is the chat-template rendering when a local `tokenizer` folder is configured (exactly
what the in-process engine keys by), so a model generated in-process and then served (or the other
way round) reuses every reply as long as `cache_id` is the same. Without a tokenizer the key uses the
canonical JSON of the messages (shared by every server backend, not by the in-process engine).

Requests run `max_in_flight` at a time in a thread pool over one `httpx.Client`. Transient failures
(429, 5xx, timeouts, dropped connections, malformed bodies) are retried with exponential backoff and
full jitter, honouring Retry-After. Failures a retry cannot fix (auth, unknown model, wrong URL) stop
the call at once with a message naming the URL and model and what to check. Only complete,
well-formed replies are written to the cache, as they arrive, so a failed call keeps what it finished.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx
from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from empathy_dag.generate.engine import (
    Conversation,
    GenerationProgress,
    GenerationSettings,
    ProgressCallback,
    ResponseCache,
    lookup_cached,
    truncate_at_stop,
)
from empathy_dag.generate.resources import TextGenerator

# --------------------------------------------------------------------------------------------- errors


class GenerationBackendError(RuntimeError):
    """A generation request failed in a way the user has to act on; the message says how."""


class ServerUnreachable(GenerationBackendError):
    pass


class AuthenticationFailed(GenerationBackendError):
    pass


class ModelNotFound(GenerationBackendError):
    pass


class EndpointNotFound(GenerationBackendError):
    pass


class BadRequest(GenerationBackendError):
    pass


class MalformedResponse(GenerationBackendError):
    pass


class RetriesExhausted(GenerationBackendError):
    pass


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; `final` is raised once attempts run out."""

    def __init__(self, reason: str, final: type[GenerationBackendError], retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.final = final
        self.retry_after = retry_after


RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, base * 2**attempt)]. Jitter keeps many
    workers that failed together from retrying together."""
    return rng.uniform(0.0, min(max_s, base_s * (2**attempt)))


# ------------------------------------------------------------------------------------- prompt keys


class _TokenizerOnly:
    """Lets `engine.Generator.render` run with a tokenizer alone, so the prompt text (and therefore
    the cache key) is produced by the very same code the in-process engine uses."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer


def messages_key_text(conversation: Conversation) -> str:
    """Canonical text of a conversation for the cache key when no chat template is at hand."""
    messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
    return "messages:" + json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def request_seed(seed: int, key: str) -> int:
    """A per-request seed from the settings' seed and the item's cache key: reruns draw the same reply
    for the same item whatever else is in flight or cached."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class ServerProgress(GenerationProgress):
    """`GenerationProgress` plus what matters for a server: request rate and retries."""

    requests_per_s: float = 0.0
    retries: int = 0
    in_flight: int = 0

    def __str__(self) -> str:
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f}s"
        return (
            f"generated {self.done}/{self.total} ({self.cached} cached), {self.new_tokens} new tokens, "
            f"{self.requests_per_s:.2f} req/s, {self.tokens_per_s:.1f} tok/s, {self.in_flight} in flight, "
            f"{self.retries} retries, elapsed {self.elapsed_s:.0f}s, ETA {eta}"
        )


# ---------------------------------------------------------------------------------------- generator


@dataclass
class _Reply:
    text: str
    completion_tokens: int | None
    prompt_tokens: int | None
    seconds: float
    attempts: int


# Finished replies are written to the response cache in batches (32 replies, or this many seconds):
# one SQLite transaction per batch, and what a killed run loses is bounded by it.
FLUSH_EVERY_S = 2.0


@dataclass
class OpenAICompatibleGenerator:
    base_url: str
    model: str
    cache_id: str
    api_key: str | None = None
    max_in_flight: int = 4
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_retries: int = 5
    backoff_base_s: float = 1.0
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0
    send_seed: bool = True
    check_model: bool = True
    tokenizer: Any = None  # a transformers tokenizer: render prompts exactly like the in-process engine
    cache: ResponseCache | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    last_stats: dict = field(default_factory=dict)
    _checked: bool = field(default=False, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")

    # -- what identifies a request

    @property
    def source(self) -> str:
        """What generated the replies, for lineage columns (`generator_source`) and metadata."""
        return f"{self.base_url}#{self.model}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def render(self, conversation: Conversation) -> str:
        """The prompt text the cache is keyed by (see the module docstring)."""
        if self.tokenizer is not None:
            from empathy_dag.generate.engine import Generator

            return Generator.render(_TokenizerOnly(self.tokenizer), conversation)  # type: ignore[arg-type]
        return messages_key_text(conversation)

    def request_body(self, conversation: Conversation, settings: GenerationSettings, key: str) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in conversation],
            "max_tokens": settings.max_new_tokens,
            "stream": False,
        }
        if settings.do_sample:
            body.update(temperature=settings.temperature, top_p=settings.top_p)
            if self.send_seed:
                body["seed"] = request_seed(settings.seed, key)
        else:
            body.update(temperature=0.0, top_p=1.0)
        if settings.stop:
            body["stop"] = list(settings.stop)
        return body

    # -- HTTP

    def _client(self) -> httpx.Client:
        headers = {"Content-Type": "application/json", **self.extra_headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s))
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
        # trust_env=False: no proxy from the environment between us and a local server.
        return httpx.Client(headers=headers, timeout=timeout, limits=limits, trust_env=False)

    def _where(self) -> str:
        return f"model '{self.model}' at {self.base_url}"

    def _fatal_for_status(self, response: httpx.Response, url: str) -> GenerationBackendError | None:
        status, detail = response.status_code, _error_detail(response)
        if status in (401, 403):
            return AuthenticationFailed(
                f"{url} refused the request with HTTP {status} ({detail}). Check the API key: set the "
                f"environment variable the backend's api_key reads (EnvVar) to a key valid for {self.base_url}"
                f"{' and allowed to use model ' + repr(self.model) if status == 403 else ''}."
            )
        if status == 404:
            if "model" in detail.lower():
                return ModelNotFound(self._model_not_found_message(detail))
            return EndpointNotFound(
                f"{url} answered HTTP 404 ({detail}). Check base_url: it should be the server's OpenAI "
                f"root, usually ending in /v1 (e.g. http://127.0.0.1:8000/v1)."
            )
        if status in (400, 422):
            if "model" in detail.lower() and ("not found" in detail.lower() or "does not exist" in detail.lower()):
                return ModelNotFound(self._model_not_found_message(detail))
            return BadRequest(f"{url} rejected the request for {self._where()} with HTTP {status}: {detail}")
        return None

    def _model_not_found_message(self, detail: str) -> str:
        served = self.served_models(quiet=True)
        hint = f" The server serves: {', '.join(served)}." if served else ""
        return (
            f"{self.base_url} does not serve model '{self.model}' ({detail}).{hint} Set the backend's "
            f"`model` to the name the server was started with (vLLM: --served-model-name; "
            f"llama_cpp.server: --model_alias)."
        )

    def served_models(self, quiet: bool = False) -> list[str]:
        """Model ids from GET {base_url}/models ([] when the server has no such route and quiet)."""
        url = f"{self.base_url}/models"
        try:
            with self._client() as client:
                response = client.get(url, timeout=min(self.timeout_s, 30.0))
        except httpx.HTTPError as exc:
            if quiet:
                return []
            raise ServerUnreachable(self._unreachable_message(url, exc)) from exc
        if response.status_code != 200:
            if quiet:
                return []
            fatal = self._fatal_for_status(response, url)
            if isinstance(fatal, (AuthenticationFailed,)):
                raise fatal
            return []  # no model listing here: the first completion will tell
        try:
            return [str(m["id"]) for m in response.json().get("data", [])]
        except (ValueError, AttributeError, KeyError, TypeError):
            return []

    def _unreachable_message(self, url: str, exc: Exception) -> str:
        return (
            f"cannot reach {url} ({type(exc).__name__}: {exc}). Check that the inference server is "
            f"running and listening there, and that base_url (host, port, /v1) is right."
        )

    def check(self) -> None:
        """Fail fast, before any generation, on a wrong URL, a bad key or a model the server lacks.
        Connection errors are retried like requests (a server may still be starting)."""
        url = f"{self.base_url}/models"
        for attempt in range(self.max_retries + 1):
            try:
                served = self.served_models()
                break
            except ServerUnreachable:
                if attempt == self.max_retries:
                    raise
                time.sleep(backoff_delay(attempt, self.backoff_base_s, self.max_backoff_s, self._rng))
        if served and self.model not in served:
            raise ModelNotFound(
                f"{url} lists models {served}, not '{self.model}'. Set the backend's `model` to one of them "
                f"(vLLM: --served-model-name; llama_cpp.server: --model_alias)."
            )
        self._checked = True

    def _attempt(self, client: httpx.Client, body: dict) -> _Reply:
        url = self.endpoint
        t0 = time.perf_counter()
        try:
            response = client.post(url, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"no answer within {self.timeout_s:g}s ({type(exc).__name__})", RetriesExhausted)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise _Retryable(self._unreachable_message(url, exc), ServerUnreachable)
        seconds = time.perf_counter() - t0
        if response.status_code != 200:
            fatal = self._fatal_for_status(response, url)
            if fatal is not None:
                raise fatal
            if response.status_code in RETRYABLE_STATUS:
                raise _Retryable(
                    f"HTTP {response.status_code} ({_error_detail(response)})", RetriesExhausted,
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                )
            raise GenerationBackendError(
                f"{url} answered HTTP {response.status_code} for {self._where()}: {_error_detail(response)}"
            )
        try:
            text, completion_tokens, prompt_tokens = parse_chat_completion(response.content)
        except ValueError as exc:
            raise _Retryable(f"malformed response: {exc}", MalformedResponse)
        return _Reply(text, completion_tokens, prompt_tokens, seconds, 1)

    def _request(self, client: httpx.Client, body: dict, stop: threading.Event, retries: list[int]) -> _Reply:
        """One reply, retrying transient failures; raises GenerationBackendError when it cannot."""
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if stop.is_set():
                raise GenerationBackendError("cancelled: another request of this call failed")
            try:
                reply = self._attempt(client, body)
                reply.attempts = attempt + 1
                return reply
            except _Retryable as exc:
                last = exc
                if attempt == self.max_retries:
                    break
                with _LOCK:
                    retries[0] += 1
                delay = backoff_delay(attempt, self.backoff_base_s, self.max_backoff_s, self._rng)
                if exc.retry_after is not None:
                    # The server said when; never sooner, and never absurdly long.
                    delay = max(delay, min(exc.retry_after, self.max_retry_after_s))
                if stop.wait(delay):
                    raise GenerationBackendError("cancelled: another request of this call failed")
        assert last is not None
        raise last.final(
            f"{self._where()}: gave up after {self.max_retries + 1} attempts; last error: {last.reason}"
            + ("" if last.final is ServerUnreachable else
               ". The server is overloaded or failing: lower max_in_flight, raise timeout_s, or check its log.")
        )

    # -- the interface shared with engine.Generator

    def generate(
        self,
        conversations: Sequence[Conversation],
        settings: GenerationSettings | None = None,
        progress: ProgressCallback | None = None,
        batch_size: int | None = None,  # accepted for interface parity; max_in_flight bounds the load
    ) -> list[str]:
        settings = settings or GenerationSettings()
        start = time.perf_counter()
        prompts = [self.render(c) for c in conversations]
        _keys, results, todo, cached = lookup_cached(self.cache, self.cache_id, prompts, settings)
        state = {"done": cached, "requests": 0, "new_tokens": 0, "prompt_tokens": 0, "estimated": 0}
        retries = [0]
        settings_json = json.dumps(settings.cache_dict(), sort_keys=True)
        pending_rows: list[tuple] = []
        last_flush = [time.monotonic()]

        def flush(force: bool = False) -> None:
            if self.cache is None or not pending_rows:
                return
            if force or len(pending_rows) >= 32 or time.monotonic() - last_flush[0] > FLUSH_EVERY_S:
                self.cache.put_many(list(pending_rows))
                pending_rows.clear()
                last_flush[0] = time.monotonic()

        def report(in_flight: int) -> None:
            if progress is None:
                return
            elapsed = time.perf_counter() - start
            gen_done = state["done"] - cached
            remaining = len(prompts) - state["done"]
            progress(ServerProgress(
                done=state["done"], total=len(prompts), cached=cached, new_tokens=state["new_tokens"],
                elapsed_s=elapsed, tokens_per_s=state["new_tokens"] / elapsed if elapsed > 0 else 0.0,
                eta_s=(elapsed / gen_done) * remaining if gen_done else None,
                requests_per_s=state["requests"] / elapsed if elapsed > 0 else 0.0,
                retries=retries[0], in_flight=in_flight,
            ))

        report(0)
        if todo:
            if self.check_model and not self._checked:
                self.check()
            stop = threading.Event()
            items = [(k, idx[0]) for k, idx in todo.items()]
            with self._client() as client, ThreadPoolExecutor(
                max_workers=max(1, self.max_in_flight), thread_name_prefix="openai-gen"
            ) as pool:
                futures: dict[Future, tuple[str, int]] = {}
                queue = iter(items)

                def submit_next() -> bool:
                    nxt = next(queue, None)
                    if nxt is None:
                        return False
                    k, i = nxt
                    body = self.request_body(conversations[i], settings, k)
                    futures[pool.submit(self._request, client, body, stop, retries)] = (k, i)
                    return True

                # Submit lazily: only max_in_flight requests exist at a time, so a fatal error leaves
                # nothing queued behind it and memory stays flat for 100k items.
                for _ in range(max(1, self.max_in_flight)):
                    if not submit_next():
                        break
                try:
                    while futures:
                        # With a timeout, so that replies finished while every request in flight is slow
                        # still reach the cache within FLUSH_EVERY_S: a SIGKILL then loses at most that.
                        finished, _ = wait(list(futures), timeout=FLUSH_EVERY_S / 2, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            k, i = futures.pop(fut)
                            reply = fut.result()  # raises GenerationBackendError: handled below
                            text = truncate_at_stop(reply.text, settings.stop).strip()
                            tokens = reply.completion_tokens
                            if tokens is None:
                                tokens = self._count_tokens(reply.text)
                                state["estimated"] += 1
                            pending_rows.append((k, self.cache_id, prompts[i], settings_json, text, tokens,
                                                 reply.seconds))
                            for j in todo[k]:
                                results[j] = text
                                state["done"] += 1
                            state["requests"] += 1
                            state["new_tokens"] += tokens
                            state["prompt_tokens"] += reply.prompt_tokens or 0
                            submit_next()
                        flush()
                        if finished:
                            report(len(futures))
                except BaseException:
                    stop.set()
                    for fut in futures:
                        fut.cancel()
                    raise
                finally:
                    # Complete replies are kept even when the call fails: a rerun resumes from them.
                    flush(force=True)
        elapsed = time.perf_counter() - start
        self.last_stats = {
            "backend": "openai-compatible",
            "base_url": self.base_url,
            "model": self.model,
            "requested": len(prompts),
            "cached": cached,
            "generated": sum(len(v) for v in todo.values()),
            "unique_generated": len(todo),
            "new_tokens": state["new_tokens"],
            "prompt_tokens": state["prompt_tokens"],
            "tokens_estimated_for": state["estimated"],
            "retries": retries[0],
            "max_in_flight": self.max_in_flight,
            "seconds": round(elapsed, 3),
            "requests_per_s": round(state["requests"] / elapsed, 2) if elapsed > 0 and state["requests"] else 0.0,
            "tokens_per_s": round(state["new_tokens"] / elapsed, 1) if elapsed > 0 and state["new_tokens"] else 0.0,
        }
        return [r if r is not None else "" for r in results]

    def _count_tokens(self, text: str) -> int:
        """Completion tokens when the server sent no `usage`: the local tokenizer if any, else ~4
        characters per token (flagged in last_stats as tokens_estimated_for)."""
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return max(1, round(len(text) / 4)) if text else 0


_LOCK = threading.Lock()


def _error_detail(response: httpx.Response) -> str:
    """The server's own words about an error, short: OpenAI's {"error": {"message"}}, FastAPI's
    {"detail"}, or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if data.get("detail"):
            return str(data["detail"])[:300]
        if data.get("message"):
            return str(data["message"])[:300]
    text = response.text.strip().replace("\n", " ")
    return (text[:300] or response.reason_phrase or "no body")


def parse_chat_completion(raw: bytes) -> tuple[str, int | None, int | None]:
    """(reply text, completion tokens, prompt tokens) from a chat-completions body; ValueError when the
    body is not one (those are retried and never cached)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc.msg if hasattr(exc, 'msg') else exc}): {raw[:80]!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")  # noqa: TRY004 (a bad body)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError(f"no choices in {json.dumps(data)[:120]}")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if content is None and isinstance(choice.get("text"), str):
        content = choice["text"]  # completions-style servers
    if not isinstance(content, str):
        raise ValueError(f"choice has no message content: {json.dumps(choice)[:120]}")  # noqa: TRY004 (a bad body)
    finish = choice.get("finish_reason")
    if finish not in (None, "stop", "length", "eos", "stop_sequence"):
        # e.g. "content_filter", "error", "abort": not a reply we want to keep.
        raise ValueError(f"finish_reason {finish!r}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    completion = usage.get("completion_tokens")
    prompt = usage.get("prompt_tokens")
    return (content, completion if isinstance(completion, int) else None,
            prompt if isinstance(prompt, int) else None)


# ----------------------------------------------------------------------------------------- resource


@functools.lru_cache(maxsize=8)
def load_key_tokenizer(folder: str):
    """The tokenizer whose chat template renders cache-key prompts (no model weights loaded); loaded
    once per process per folder."""
    from transformers import AutoTokenizer

    from empathy_dag.models import hub_offline_by_default

    hub_offline_by_default()
    return AutoTokenizer.from_pretrained(folder)


class OpenAICompatibleBackend(ConfigurableResource):
    """Generation on an OpenAI-compatible server: vLLM, llama.cpp (`llama-server`,
    `python -m llama_cpp.server`), or a hosted API. Same `get_generator().generate(...)` interface and
    the same response cache as the in-process engine; set `cache_id` (and `tokenizer`) to what the
    in-process engine uses for the same weights to share cached replies across backends."""

    base_url: str = Field(default="http://127.0.0.1:8000/v1",
                          description="The server's OpenAI root, usually ending in /v1.")
    model: str = Field(default="smollm2", description="The model name the server serves "
                       "(vLLM --served-model-name, llama_cpp.server --model_alias).")
    api_key: str | None = Field(default=None, description="Bearer token; pass EnvVar('OPENAI_API_KEY') "
                                "(or your variable), never the key itself. Local servers need none.")
    cache_id: str = Field(default="", description="Identifies the weights in the cache key: the in-process "
                          "engine's id (engine.model_cache_id(folder)) to share replies with it, or e.g. "
                          "'<model>@<revision>'. Empty: 'server:<model>'.")
    tokenizer: str | None = Field(default=None, description="A local folder with the model's tokenizer "
                                  "(e.g. the base_model folder): prompts are then keyed exactly like the "
                                  "in-process engine keys them. None: keyed by the messages' JSON.")
    cache_dir: str | None = Field(default=None, description="Response cache folder (shared with the "
                                  "in-process engine when the same); None disables the cache.")
    max_in_flight: int = Field(default=4, ge=1, description="Concurrent requests.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request read timeout.")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    backoff_base_s: float = Field(default=1.0, ge=0)
    max_backoff_s: float = Field(default=30.0, ge=0)
    max_retry_after_s: float = Field(default=120.0, ge=0, description="Cap on a server's Retry-After.")
    send_seed: bool = Field(default=True, description="Send a per-request `seed` (vLLM, llama.cpp and "
                            "OpenAI honour it); turn off for servers that reject the field.")
    check_model: bool = Field(default=True, description="GET /models before the first request and fail "
                              "early when the model is not served.")
    more_base_urls: list[str] = Field(default_factory=list, description="Further servers of the same "
                                      "weights (one per GPU or worker): work is split across all of them by "
                                      "chunk (generate/sharded.py), a failed one hands its chunk to the others.")
    chunk_size: int = Field(default=64, ge=1, description="Prompts per chunk when several servers share the work.")

    def get_generator(self, model: str | None = None, cache_id: str | None = None):
        """A generator for `model` (default: the configured one; e.g. a LoRA adapter vLLM serves under
        its own name via --lora-modules) with its own `cache_id`: an `OpenAICompatibleGenerator`, or a
        `ShardedGenerator` over every server when `more_base_urls` lists others."""
        urls = [self.base_url, *[u for u in self.more_base_urls if u and u != self.base_url]]
        generators = [self._one_generator(url, model, cache_id) for url in urls]
        if len(generators) == 1:
            return generators[0]
        from empathy_dag.generate.sharded import ShardedGenerator

        return ShardedGenerator(generators, chunk_size=self.chunk_size)

    def _one_generator(self, base_url: str, model: str | None, cache_id: str | None) -> OpenAICompatibleGenerator:
        model = model or self.model
        cid = cache_id or self.cache_id or f"server:{model}"
        return OpenAICompatibleGenerator(
            base_url=base_url, model=model, cache_id=cid, api_key=self.api_key or None,
            max_in_flight=self.max_in_flight, timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s, max_retries=self.max_retries,
            backoff_base_s=self.backoff_base_s, max_backoff_s=self.max_backoff_s,
            max_retry_after_s=self.max_retry_after_s, send_seed=self.send_seed, check_model=self.check_model,
            tokenizer=load_key_tokenizer(self.tokenizer) if self.tokenizer else None,
            cache=ResponseCache(self.cache_dir) if self.cache_dir else None,
        )


def openai_backend_from_env(cache_dir: str | None = None) -> OpenAICompatibleBackend | None:
    """The backend a profile asks for through the environment, or None when
    EMPATHY_DAG_OPENAI_BASE_URL is unset (then the in-process engine is used):

    EMPATHY_DAG_OPENAI_BASE_URL   e.g. http://127.0.0.1:8000/v1
    EMPATHY_DAG_OPENAI_MORE_BASE_URLS  comma-separated further servers of the same weights (work is
                                  split across all of them by chunk: generate/sharded.py)
    EMPATHY_DAG_OPENAI_CHUNK_SIZE prompts per chunk when sharded (default 64)
    EMPATHY_DAG_OPENAI_MODEL      the served model name (default smollm2)
    EMPATHY_DAG_OPENAI_KEY_VAR    the name of the variable holding the API key (default OPENAI_API_KEY;
                                  read through EnvVar, so the key never lands in run config)
    EMPATHY_DAG_OPENAI_CACHE_ID   cache id of the served weights (see OpenAICompatibleBackend.cache_id)
    EMPATHY_DAG_OPENAI_TOKENIZER  local tokenizer folder for engine-compatible cache keys
    EMPATHY_DAG_OPENAI_IN_FLIGHT  concurrent requests (default 4)
    EMPATHY_DAG_OPENAI_TIMEOUT_S  per-request timeout (default 120)
    """
    env = os.environ
    base_url = env.get("EMPATHY_DAG_OPENAI_BASE_URL")
    if not base_url:
        return None
    key_var = env.get("EMPATHY_DAG_OPENAI_KEY_VAR", "OPENAI_API_KEY")
    return OpenAICompatibleBackend(
        base_url=base_url,
        model=env.get("EMPATHY_DAG_OPENAI_MODEL", "smollm2"),
        api_key=EnvVar(key_var) if key_var in env else None,
        cache_id=env.get("EMPATHY_DAG_OPENAI_CACHE_ID", ""),
        tokenizer=env.get("EMPATHY_DAG_OPENAI_TOKENIZER") or None,
        cache_dir=cache_dir,
        max_in_flight=int(env.get("EMPATHY_DAG_OPENAI_IN_FLIGHT", "4")),
        timeout_s=float(env.get("EMPATHY_DAG_OPENAI_TIMEOUT_S", "120")),
        more_base_urls=[u.strip() for u in env.get("EMPATHY_DAG_OPENAI_MORE_BASE_URLS", "").split(",") if u.strip()],
        chunk_size=int(env.get("EMPATHY_DAG_OPENAI_CHUNK_SIZE", "64")),
    )


class ServerTextGenerator(TextGenerator):
    """The `text_generator` resource, generating on a server: a drop-in for `TextGenerator` (same
    settings, same cache folder, same `load()`), so the synthetic-data assets run unchanged. Its own
    model is served by `server`; other sources (e.g. `extra_generators` folders) still load in-process."""

    server: OpenAICompatibleBackend

    def resolve_source(self, model_store) -> str:
        return f"{self.server.base_url.rstrip('/')}#{self.server.model}"

    def for_asset(self, context, model_store, source: str | None = None):
        # The server already runs the model elsewhere: no Pipes step for its own replies.
        if not source or source == self.resolve_source(model_store):
            return self.load(model_store, source)
        return super().for_asset(context, model_store, source)

    def load(self, model_store, source: str | None = None):
        if source and source != self.resolve_source(model_store):
            return super().load(model_store, source=source)
        generator = self.server.get_generator()
        # The stage's cache folder and switch win, so both text_generator flavours share replies.
        generator.cache = ResponseCache(self.cache_dir) if self.use_cache else None
        return generator


def served_generator(text_generator: TextGenerator, served_model: str):
    """`served_model` on the server of a `ServerTextGenerator`; a clear error when the text_generator
    loads weights in process (no server configured)."""
    server = getattr(text_generator, "server", None)  # a ServerTextGenerator's backend
    if server is None:
        raise ValueError(f"served model {served_model!r} configured, but the text_generator resource "
                         "has no server: set EMPATHY_DAG_OPENAI_BASE_URL (or use a ServerTextGenerator)")
    generator = server.get_generator(model=served_model, cache_id=f"server:{served_model}")
    # The stage's cache folder and switch, as for the text_generator's own model (one cache object
    # for every endpoint when several servers share the work).
    generator.cache = ResponseCache(text_generator.cache_dir) if text_generator.use_cache else None
    return generator
