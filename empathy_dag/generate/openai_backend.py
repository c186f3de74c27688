"""Generation through any OpenAI-compatible chat-completions server (vLLM, llama.cpp's server,
`python -m llama_cpp.server`, hosted APIs), behind the same interface as the in-process engine:

    generator = OpenAICompatibleBackend(base_url=..., model=..., cache_id=...).get_generator()
    replies: list[str] = generator.generate(conversations, GenerationSettings(...), progress=callback)
    probs: list[list[float] | None] = generator.digit_probabilities(judge_conversations)

Same response cache, same key rules as `engine.Generator`: key = (cache_id, prompt text, settings).
The prompt text is the chat-template rendering when a local `tokenizer` folder is configured (exactly
what the in-process engine keys by), so a model generated in-process and then served (or the other
way round) reuses every reply as long as `cache_id` is the same. Without a tokenizer the key uses the
canonical JSON of the messages (shared by every server backend, not by the in-process engine).

HTTP is the official `openai` client's: it retries what a retry can fix (429, 408, 409, 5xx, timeouts,
dropped connections) with exponential backoff and jitter, honouring Retry-After, and raises typed
errors. This module adds what the client does not know about this project:
- bounded concurrency: `max_in_flight` requests at a time in a thread pool over one client;
- the client's typed errors mapped onto the `GenerationBackendError` classes below, whose messages name
  the URL, the model and what to check; failures a retry cannot fix (auth, unknown model, wrong URL)
  or that outlasted the client's retries stop the call;
- bad replies: a 200 whose body is not a reply (not JSON, no choices, no content, a content_filter
  finish, no logprobs when asked for them) is asked again up to `max_retries` more times, then recorded
  as that prompt's error (`last_errors`, counted in `last_stats["failed_prompts"]`) and the call goes on:
  one broken reply never fails a partition. Its result is "" (None for probabilities);
- the response cache: only complete, well-formed replies are written, as they arrive, so a failed call
  keeps what it finished and a rerun asks again only for what is missing or failed;
- progress lines (`ServerProgress`) and `last_stats`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import openai

from empathy_dag.generate.engine import (
    Conversation,
    GenerationProgress,
    GenerationSettings,
    Generator,
    ProgressCallback,
    ResponseCache,
    lookup_cached,
    truncate_at_stop,
)
from empathy_dag.models import hub_offline_by_default

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


class LogprobsUnsupported(MalformedResponse):
    """Probability scoring asked for top logprobs and the server never sends them."""


class BadReply(ValueError):
    """A 200 whose body is not a usable reply. `kind` names what was wrong (it is what `last_stats`
    counts); `retry` is False where asking again gives the same answer (greedy, deterministic)."""

    def __init__(self, kind: str, message: str, retry: bool = True):
        super().__init__(message)
        self.kind = kind
        self.retry = retry


@dataclass(frozen=True)
class PromptError:
    """One prompt of a call that got no usable reply: its position in the call, what went wrong."""

    index: int
    kind: str
    message: str


OVERLOADED_ADVICE = (
    ". The server is overloaded or failing: lower max_in_flight, raise timeout_s, or check its log."
)

# The client refuses to call without a key; local servers need none and ignore this one. Never the
# environment's OPENAI_API_KEY: that would send a real key to whatever base_url says.
NO_KEY = "no-key"

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


# ---------------------------------------------------------------------------------- reading replies


def _get(obj: Any, name: str) -> Any:
    """A field of a parsed body: the client builds models without validating them, so a field may be
    missing, None, or (in an odd body) a plain dict."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _first_choice(completion: Any) -> Any:
    if isinstance(completion, (str, bytes, list)) or completion is None:
        raise BadReply(
            "not_a_completion",
            f"expected a chat.completion JSON object, got {type(completion).__name__}: "
            f"{str(completion)[:80]!r}",
        )
    choices = _get(completion, "choices")
    if not isinstance(choices, list) or not choices or choices[0] is None:
        raise BadReply("no_choices", f"no choices in the reply (choices={str(choices)[:80]})")
    return choices[0]


def reply_from_completion(completion: Any) -> tuple[str, int | None, int | None]:
    """(reply text, completion tokens, prompt tokens) of a parsed chat completion; BadReply when it is
    not a complete reply (never cached)."""
    choice = _first_choice(completion)
    content = _get(_get(choice, "message"), "content")
    if content is None and isinstance(_get(choice, "text"), str):
        content = _get(choice, "text")  # completions-style servers
    if not isinstance(content, str):
        raise BadReply("no_content", f"the choice has no message content: {str(choice)[:120]}")
    finish = _get(choice, "finish_reason")
    if finish not in (None, "stop", "length", "eos", "stop_sequence"):
        # e.g. "content_filter", "error", "abort": not a reply we want to keep.
        raise BadReply("finish_reason", f"finish_reason {finish!r}")
    usage = _get(completion, "usage")
    completion_tokens, prompt_tokens = _get(usage, "completion_tokens"), _get(usage, "prompt_tokens")
    return (
        content,
        completion_tokens if isinstance(completion_tokens, int) else None,
        prompt_tokens if isinstance(prompt_tokens, int) else None,
    )


def digit_probabilities_from_completion(completion: Any, digits: str = "12345") -> list[float]:
    """P(score = digit) from the top logprobs of the reply's first token, the maths of the in-process
    judge (`evaluate.metrics.judge.digit_probabilities`): a softmax restricted to the digit tokens,
    i.e. exp(logprob) of each digit token renormalised over the digits. A server's logprobs are the
    log-softmax over the whole vocabulary, so this equals softmax(logits[digits]) exactly when every
    digit is among the top logprobs; a digit outside them counts 0 (its probability is below the
    last one listed). Tokens match the digit exactly, like the single token the in-process judge
    reads (" 4" is a different token)."""
    choice = _first_choice(completion)
    content = _get(_get(choice, "logprobs"), "content")
    if not isinstance(content, list) or not content:
        raise BadReply("no_logprobs", "the reply carries no logprobs (the server ignored logprobs=true)")
    top = _get(content[0], "top_logprobs")
    if not isinstance(top, list) or not top:
        raise BadReply(
            "no_logprobs", "the reply's first token has no top_logprobs (the server ignored top_logprobs)"
        )
    mass = [0.0] * len(digits)
    for entry in top:
        token, logprob = _get(entry, "token"), _get(entry, "logprob")
        if (
            isinstance(token, str)
            and token in digits
            and len(token) == 1
            and isinstance(logprob, (int, float))
        ):
            mass[digits.index(token)] += math.exp(logprob)
    total = sum(mass)
    if total <= 0:
        listed = [_get(e, "token") for e in top][:10]
        raise BadReply(
            "no_digit",
            f"none of the digits {'/'.join(digits)} among the first token's top "
            f"{len(top)} logprobs ({listed})",
            retry=False,
        )
    return [m / total for m in mass]


# ---------------------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class ServerProgress(GenerationProgress):
    """`GenerationProgress` plus what matters for a server: request rate, retries, failed prompts."""

    requests_per_s: float = 0.0
    retries: int = 0
    in_flight: int = 0
    failed: int = 0

    def __str__(self) -> str:
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f}s"
        return (
            f"generated {self.done}/{self.total} ({self.cached} cached), {self.new_tokens} new tokens, "
            f"{self.requests_per_s:.2f} req/s, {self.tokens_per_s:.1f} tok/s, {self.in_flight} in flight, "
            f"{self.retries} retries, {self.failed} failed, elapsed {self.elapsed_s:.0f}s, ETA {eta}"
        )


# ---------------------------------------------------------------------------------------- generator


@dataclass
class _Reply:
    value: Any  # (text, completion tokens, prompt tokens) or digit probabilities
    seconds: float


@dataclass
class _Failed:
    kind: str
    message: str


# Finished replies are written to the response cache in batches (32 replies, or this many seconds):
# one SQLite transaction per batch, and what a killed run loses is bounded by it.
FLUSH_EVERY_S = 2.0


class _Cancelled(Exception):
    """Another request of the call failed for good: this one stops before its next attempt."""


@dataclass
class OpenAICompatibleGenerator:
    base_url: str
    model: str
    cache_id: str
    api_key: str | None = None
    max_in_flight: int = 4
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_retries: int = 5  # the client's retries of one request; also how often a bad reply is asked again
    send_seed: bool = True
    check_model: bool = True
    tokenizer: Any = None  # a transformers tokenizer: render prompts exactly like the in-process engine
    cache: ResponseCache | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    top_logprobs: int = 20  # how many first-token alternatives digit_probabilities asks for
    last_stats: dict = field(default_factory=dict)
    last_errors: list[PromptError] = field(default_factory=list)
    _checked: bool = field(default=False, repr=False)

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
            return Generator.render(_TokenizerOnly(self.tokenizer), conversation)  # type: ignore[arg-type]
        return messages_key_text(conversation)

    def request_body(self, conversation: Conversation, settings: GenerationSettings, key: str) -> dict:
        """The keyword arguments of `chat.completions.create` for one prompt."""
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

    # -- the client and its errors

    def client(self, max_retries: int | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key or NO_KEY,
            timeout=openai.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s)),
            max_retries=self.max_retries if max_retries is None else max_retries,
            default_headers=self.extra_headers or None,
            # trust_env=False: no proxy from the environment between us and a local server.
            http_client=openai.DefaultHttpxClient(trust_env=False),
        )

    def _where(self) -> str:
        return f"model '{self.model}' at {self.base_url}"

    def _unreachable_message(self, url: str, exc: Exception) -> str:
        cause = exc.__cause__ or exc
        return (
            f"cannot reach {url} ({type(cause).__name__}: {cause}; gave up after {self.max_retries + 1} attempts). "
            f"Check that the inference server is running and listening there, and that base_url "
            f"(host, port, /v1) is right."
        )

    def _model_not_found_message(self, detail: str) -> str:
        served = self.served_models(quiet=True)
        hint = f" The server serves: {', '.join(served)}." if served else ""
        return (
            f"{self.base_url} does not serve model '{self.model}' ({detail}).{hint} Set the backend's "
            f"`model` to the name the server was started with (vLLM: --served-model-name; "
            f"llama_cpp.server: --model_alias)."
        )

    def backend_error(self, exc: openai.APIError, url: str | None = None) -> GenerationBackendError:
        """The project's error, with what to check, for one of the client's typed errors (raised once
        the client's own retries are spent, or at once where a retry cannot help)."""
        url = url or self.endpoint
        if isinstance(exc, openai.APITimeoutError):
            return RetriesExhausted(
                f"{self._where()}: gave up after {self.max_retries + 1} attempts; last error: "
                f"no answer within {self.timeout_s:g}s" + OVERLOADED_ADVICE
            )
        if isinstance(exc, openai.APIConnectionError):
            return ServerUnreachable(self._unreachable_message(url, exc))
        if not isinstance(exc, openai.APIStatusError):
            return GenerationBackendError(f"{url} for {self._where()}: {type(exc).__name__}: {exc}")
        status, detail = exc.status_code, _error_detail(exc)
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return AuthenticationFailed(
                f"{url} refused the request with HTTP {status} ({detail}). Check the API key: set the "
                f"environment variable the backend's api_key reads (EnvVar) to a key valid for {self.base_url}"
                f"{' and allowed to use model ' + repr(self.model) if status == 403 else ''}."
            )
        if isinstance(exc, openai.NotFoundError):
            if "model" in detail.lower():
                return ModelNotFound(self._model_not_found_message(detail))
            return EndpointNotFound(
                f"{url} answered HTTP 404 ({detail}). Check base_url: it should be the server's OpenAI "
                f"root, usually ending in /v1 (e.g. http://127.0.0.1:8000/v1)."
            )
        if isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)):
            low = detail.lower()
            if "model" in low and ("not found" in low or "does not exist" in low):
                return ModelNotFound(self._model_not_found_message(detail))
            return BadRequest(f"{url} rejected the request for {self._where()} with HTTP {status}: {detail}")
        if isinstance(exc, (openai.RateLimitError, openai.InternalServerError)) or status in (408, 409):
            return RetriesExhausted(
                f"{self._where()}: gave up after {self.max_retries + 1} attempts; last error: "
                f"HTTP {status} ({detail})" + OVERLOADED_ADVICE
            )
        return GenerationBackendError(f"{url} answered HTTP {status} for {self._where()}: {detail}")

    def served_models(self, quiet: bool = False) -> list[str]:
        """Model ids from GET {base_url}/models ([] when the server has no such route, and on any
        failure when quiet)."""
        url = f"{self.base_url}/models"
        try:
            with self.client(max_retries=0 if quiet else None) as client:
                return [str(_get(m, "id")) for m in client.models.list().data]
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.APIConnectionError) as exc:
            if quiet:
                return []
            raise self.backend_error(exc, url) from exc
        except (openai.APIError, ValueError, AttributeError, TypeError):
            return []  # no model listing here: the first completion will tell

    def check(self) -> None:
        """Fail fast, before any generation, on a wrong URL, a bad key or a model the server lacks.
        Connection errors are retried by the client (a server may still be starting)."""
        served = self.served_models()
        if served and self.model not in served:
            raise ModelNotFound(
                f"{self.base_url}/models lists models {served}, not '{self.model}'. Set the backend's `model` to "
                f"one of them (vLLM: --served-model-name; llama_cpp.server: --model_alias)."
            )
        self._checked = True

    # -- one prompt

    def _ask(
        self,
        client: openai.OpenAI,
        body: dict,
        read: Callable[[Any], Any],
        stop: threading.Event,
        count_retry: Callable[[int], None],
    ) -> _Reply | _Failed:
        """One prompt's reply. The client retries transport failures inside `create`; a body that is
        not a reply is asked again, `max_retries` more times at most, then returned as `_Failed`.
        Raises GenerationBackendError for what stops the whole call."""
        last: BadReply | None = None
        attempts = 0
        for attempt in range(self.max_retries + 1):
            if stop.is_set():
                raise _Cancelled
            attempts = attempt + 1
            t0 = time.perf_counter()
            try:
                raw = client.chat.completions.with_raw_response.create(**body)
            except openai.APIError as exc:
                raise self.backend_error(exc) from exc
            count_retry(raw.retries_taken)
            try:
                try:
                    parsed = raw.parse()
                except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
                    raise BadReply(
                        "not_json", f"not JSON ({getattr(exc, 'msg', exc)}): {raw.content[:80]!r}"
                    ) from None
                return _Reply(read(parsed), time.perf_counter() - t0)
            except BadReply as exc:
                last = exc
                if not exc.retry:
                    break
                if attempt < self.max_retries:
                    count_retry(1)
        assert last is not None
        return _Failed(
            last.kind,
            f"{self._where()}: gave up after {attempts} attempt{'s' * (attempts > 1)}; "
            f"last error: malformed response: {last}",
        )

    # -- many prompts, max_in_flight at a time

    def _run(
        self,
        bodies: list[tuple[Any, dict]],
        read: Callable[[Any], Any],
        on_result: Callable[[Any, _Reply | _Failed], None],
        on_tick: Callable[[int, bool], None],
        retries: list[int],
    ) -> None:
        """Send every (tag, body), `max_in_flight` at a time; `on_result(tag, outcome)` in this thread as
        each finishes, `on_tick(in_flight, any_finished)` after each wake-up (at least every
        FLUSH_EVERY_S / 2)."""
        if self.check_model and not self._checked:
            self.check()
        stop = threading.Event()
        lock = threading.Lock()

        def count_retry(n: int) -> None:
            if n:
                with lock:
                    retries[0] += n

        pool = ThreadPoolExecutor(max_workers=max(1, self.max_in_flight), thread_name_prefix="openai-gen")
        futures: dict[Future, Any] = {}
        queue = iter(bodies)
        failed = False
        with self.client() as client:

            def submit_next() -> bool:
                nxt = next(queue, None)
                if nxt is None:
                    return False
                tag, body = nxt
                futures[pool.submit(self._ask, client, body, read, stop, count_retry)] = tag
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
                        tag = futures.pop(fut)
                        on_result(tag, fut.result())  # raises GenerationBackendError: handled below
                        submit_next()
                    on_tick(len(futures), bool(finished))
            except BaseException:
                failed = True
                stop.set()
                for fut in futures:
                    fut.cancel()
                raise
            finally:
                # After a failure, requests still in flight end on their own (their results are dropped).
                pool.shutdown(wait=not failed, cancel_futures=True)

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
        errors: list[PromptError] = []
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
            progress(self._progress(start, state, len(prompts), cached, retries[0], in_flight, len(errors)))

        def on_result(tag: tuple[str, int], outcome: _Reply | _Failed) -> None:
            k, i = tag
            state["requests"] += 1
            if isinstance(outcome, _Failed):
                # Never cached: a rerun asks again.
                errors.extend(PromptError(j, outcome.kind, outcome.message) for j in todo[k])
                state["done"] += len(todo[k])
                return
            raw_text, tokens, prompt_tokens = outcome.value
            text = truncate_at_stop(raw_text, settings.stop).strip()
            if tokens is None:
                tokens = self._count_tokens(raw_text)
                state["estimated"] += 1
            pending_rows.append((k, self.cache_id, prompts[i], settings_json, text, tokens, outcome.seconds))
            for j in todo[k]:
                results[j] = text
                state["done"] += 1
            state["new_tokens"] += tokens
            state["prompt_tokens"] += prompt_tokens or 0

        def on_tick(in_flight: int, finished: bool) -> None:
            flush()
            if finished:
                report(in_flight)

        report(0)
        if todo:
            bodies = [
                ((k, idx[0]), self.request_body(conversations[idx[0]], settings, k))
                for k, idx in todo.items()
            ]
            try:
                self._run(bodies, reply_from_completion, on_result, on_tick, retries)
            finally:
                # Complete replies are kept even when the call fails: a rerun resumes from them.
                flush(force=True)
        elapsed = time.perf_counter() - start
        self.last_errors = sorted(errors, key=lambda e: e.index)
        self.last_stats = {
            "backend": "openai-compatible",
            "base_url": self.base_url,
            "model": self.model,
            "requested": len(prompts),
            "cached": cached,
            "generated": sum(len(idx) for idx in todo.values() if results[idx[0]] is not None),
            "unique_generated": sum(1 for idx in todo.values() if results[idx[0]] is not None),
            "new_tokens": state["new_tokens"],
            "prompt_tokens": state["prompt_tokens"],
            "tokens_estimated_for": state["estimated"],
            **self._error_stats(errors),
            "retries": retries[0],
            "max_in_flight": self.max_in_flight,
            "seconds": round(elapsed, 3),
            "requests_per_s": round(state["requests"] / elapsed, 2)
            if elapsed > 0 and state["requests"]
            else 0.0,
            "tokens_per_s": round(state["new_tokens"] / elapsed, 1)
            if elapsed > 0 and state["new_tokens"]
            else 0.0,
        }
        return [r if r is not None else "" for r in results]

    def digit_probabilities(
        self,
        conversations: Sequence[Conversation],
        digits: str = "12345",
        progress: ProgressCallback | None = None,
    ) -> list[list[float] | None]:
        """P(score = each digit) per conversation from the first token's top logprobs (one greedy
        one-token request each; see `digit_probabilities_from_completion` for the maths), None where the
        prompt failed (in `last_errors`). Not cached: like the in-process judge's forward pass, the
        distribution is recomputed on each call.

        A server that does not send top logprobs stops the call with `LogprobsUnsupported` (use
        judge_scoring='generate'): until one reply has carried them, a prompt that spent its attempts
        without them is taken to mean the server has no such feature."""
        start = time.perf_counter()
        results: list[list[float] | None] = [None] * len(conversations)
        state = {"done": 0, "requests": 0, "new_tokens": 0, "with_logprobs": 0}
        retries = [0]
        errors: list[PromptError] = []

        def on_result(i: int, outcome: _Reply | _Failed) -> None:
            state["requests"] += 1
            state["done"] += 1
            if isinstance(outcome, _Reply):
                results[i] = outcome.value
                state["with_logprobs"] += 1
                state["new_tokens"] += 1
                return
            if outcome.kind == "no_logprobs" and not state["with_logprobs"]:
                raise LogprobsUnsupported(
                    f"{self._where()} returned no top_logprobs for a chat completion asked with logprobs=true, "
                    f"top_logprobs={self.top_logprobs} ({outcome.message}). This server cannot score by "
                    f"digit probabilities: set judge_scoring='generate' (or serve the judge with vLLM or "
                    f"llama_cpp.server, which return top_logprobs)."
                )
            errors.append(PromptError(i, outcome.kind, outcome.message))

        def on_tick(in_flight: int, finished: bool) -> None:
            if progress is not None and finished:
                progress(
                    self._progress(start, state, len(conversations), 0, retries[0], in_flight, len(errors))
                )

        bodies = [
            (
                i,
                {
                    "model": self.model,
                    "messages": [{"role": m["role"], "content": m["content"]} for m in c],
                    "max_tokens": 1,
                    "temperature": 0.0,
                    "logprobs": True,
                    "top_logprobs": self.top_logprobs,
                    "stream": False,
                },
            )
            for i, c in enumerate(conversations)
        ]
        if bodies:
            self._run(
                bodies,
                functools.partial(digit_probabilities_from_completion, digits=digits),
                on_result,
                on_tick,
                retries,
            )
        elapsed = time.perf_counter() - start
        self.last_errors = sorted(errors, key=lambda e: e.index)
        self.last_stats = {
            "backend": "openai-compatible",
            "base_url": self.base_url,
            "model": self.model,
            "requested": len(conversations),
            "scored": len(conversations) - len(errors),
            **self._error_stats(errors),
            "retries": retries[0],
            "max_in_flight": self.max_in_flight,
            "seconds": round(elapsed, 3),
            "requests_per_s": round(state["requests"] / elapsed, 2)
            if elapsed > 0 and state["requests"]
            else 0.0,
        }
        return results

    @staticmethod
    def _error_stats(errors: list[PromptError]) -> dict:
        """What `last_stats` says about failed prompts (the counts reach asset metadata)."""
        return {
            "failed_prompts": len(errors),
            "failed_by_kind": dict(Counter(e.kind for e in errors)),
            "first_error": errors[0].message[:500] if errors else "",
        }

    @staticmethod
    def _progress(
        start: float, state: dict, total: int, cached: int, retries: int, in_flight: int, failed: int
    ) -> ServerProgress:
        elapsed = time.perf_counter() - start
        gen_done = state["done"] - cached
        remaining = total - state["done"]
        return ServerProgress(
            done=state["done"],
            total=total,
            cached=cached,
            new_tokens=state["new_tokens"],
            elapsed_s=elapsed,
            tokens_per_s=state["new_tokens"] / elapsed if elapsed > 0 else 0.0,
            eta_s=(elapsed / gen_done) * remaining if gen_done else None,
            requests_per_s=state["requests"] / elapsed if elapsed > 0 else 0.0,
            retries=retries,
            in_flight=in_flight,
            failed=failed,
        )

    def _count_tokens(self, text: str) -> int:
        """Completion tokens when the server sent no `usage`: the local tokenizer if any, else ~4
        characters per token (flagged in last_stats as tokens_estimated_for)."""
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return max(1, round(len(text) / 4)) if text else 0


def _error_detail(exc: openai.APIStatusError) -> str:
    """The server's own words about an error, short: OpenAI's {"error": {"message"}} (the client keeps
    its inside as `body`), FastAPI's {"detail"}, or the start of the body."""
    body = exc.body
    if isinstance(body, dict):
        for name in ("message", "detail", "error"):
            value = body.get(name)
            if isinstance(value, dict) and value.get("message"):
                value = value["message"]
            if value:
                return str(value)[:300]
    if isinstance(body, str) and body.strip():
        return body.strip().replace("\n", " ")[:300]
    try:
        text = exc.response.text.strip().replace("\n", " ")
    except Exception:  # noqa: BLE001 (a body that cannot be read is only a missing detail)
        text = ""
    return text[:300] or getattr(exc.response, "reason_phrase", "") or "no body"


# The Dagster resources that configure this client (OpenAICompatibleBackend, ServerTextGenerator) live in
# generate/resources.py: this module is the Dagster-free client.


@functools.lru_cache(maxsize=8)
def load_key_tokenizer(folder: str):
    """The tokenizer whose chat template renders cache-key prompts (no model weights loaded); loaded
    once per process per folder."""
    from transformers import AutoTokenizer

    hub_offline_by_default()
    return AutoTokenizer.from_pretrained(folder)
