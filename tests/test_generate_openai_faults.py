"""The OpenAI-compatible backend against a scripted stub server on 127.0.0.1: retries on 429/5xx,
timeouts and garbage, clear errors on 401/404/unreachable, and nothing bad in the response cache."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from empathy_dag.defs.generate.resources import OpenAICompatibleBackend
from empathy_dag.generate.engine import GenerationSettings, ResponseCache, cache_key
from empathy_dag.generate.openai_backend import (
    AuthenticationFailed,
    BadReply,
    EndpointNotFound,
    LogprobsUnsupported,
    ModelNotFound,
    OpenAICompatibleGenerator,
    RetriesExhausted,
    ServerProgress,
    ServerUnreachable,
    digit_probabilities_from_completion,
    messages_key_text,
    reply_from_completion,
)

pytestmark = pytest.mark.timeout(60)

SETTINGS = GenerationSettings(max_new_tokens=16, temperature=0.7, top_p=0.9, seed=3)


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be kind."}, {"role": "user", "content": text}]


def completion(text: str, tokens: int = 5) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "stub",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": tokens, "total_tokens": 11 + tokens},
        }
    ).encode()


def with_logprobs(top: dict[str, float]) -> bytes:
    first = max(top, key=top.get)
    data = json.loads(completion(first, 1))
    data["choices"][0]["logprobs"] = {
        "content": [
            {
                "token": first,
                "logprob": top[first],
                "bytes": None,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()],
            }
        ]
    }
    return json.dumps(data).encode()


class StubServer:
    """A chat-completions server whose answers come from `script`: a list of actions consumed one per
    POST (the last one repeats). Actions: ("ok",), ("status", code, body, headers), ("hang", seconds),
    ("raw", bytes). Replies echo the last user message so a test can tell them apart."""

    def __init__(self, script: list[tuple], models: tuple[str, ...] = ("stub",)):
        self.script = list(script)
        self.models = models
        self.posts: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def do_GET(self):
                if self.path.endswith("/v1/models"):
                    data = {"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]}
                    self._send(200, json.dumps(data).encode())
                else:
                    self._send(404, b'{"detail": "Not Found"}')

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.posts.append(
                        {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                    )
                    action = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                if not self.path.endswith("/v1/chat/completions"):
                    return self._send(404, b'{"detail": "Not Found"}')
                kind = action[0]
                if kind == "ok":
                    return self._send(200, completion("reply to " + body["messages"][-1]["content"]))
                if kind == "status":
                    return self._send(action[1], action[2], action[3] if len(action) > 3 else None)
                if kind == "hang":
                    time.sleep(action[1])
                    return self._send(200, completion("late reply"))
                if kind == "raw":
                    return self._send(200, action[1])
                if kind == "logprobs":  # a one-token reply with these first-token top logprobs
                    return self._send(200, with_logprobs(action[1]))
                raise AssertionError(kind)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def completions(self) -> int:
        return sum(1 for p in self.posts if p["path"].endswith("/chat/completions"))


def make_generator(url: str, tmp_path, **kw) -> OpenAICompatibleGenerator:
    defaults = {
        "base_url": url,
        "model": "stub",
        "cache_id": "stub-weights",
        "max_in_flight": 2,
        "timeout_s": 2.0,
        "max_retries": 3,
        "cache": ResponseCache(tmp_path / "cache"),
    }
    defaults.update(kw)
    return OpenAICompatibleGenerator(**defaults)


def cached_rows(gen: OpenAICompatibleGenerator) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(gen.cache.path) as db:
        return db.execute("SELECT cache_id, prompt, response FROM responses").fetchall()


# ------------------------------------------------------------------------------------------- happy


def test_replies_in_order_cached_and_request_body(tmp_path):
    with StubServer([("ok",)]) as stub:
        gen = make_generator(stub.url, tmp_path, api_key="sk-test", max_in_flight=3)
        seen: list[ServerProgress] = []
        texts = [f"I lost my job {i}" for i in range(7)] + ["I lost my job 0"]  # one duplicate
        replies = gen.generate([conv(t) for t in texts], SETTINGS, progress=seen.append)
        assert replies == [f"reply to {t}" for t in texts]
        # The duplicate is asked once; the /models check happened once before.
        assert stub.completions == 7
        body = stub.posts[0]["body"]
        assert body["model"] == "stub" and body["max_tokens"] == 16 and body["temperature"] == 0.7
        assert body["top_p"] == 0.9 and isinstance(body["seed"], int) and body["stream"] is False
        assert stub.posts[0]["auth"] == "Bearer sk-test"
        # Seeds are per item: reproducible, and different items get different seeds.
        assert len({p["body"]["seed"] for p in stub.posts}) == 7
        assert gen.last_stats["generated"] == 8 and gen.last_stats["unique_generated"] == 7
        assert gen.last_stats["new_tokens"] == 35 and gen.last_stats["retries"] == 0
        assert gen.last_stats["requests_per_s"] > 0 and gen.last_stats["tokens_per_s"] > 0
        assert seen[-1].done == 8 and seen[-1].total == 8 and "req/s" in str(seen[-1])

        # Same call again: everything from the cache, not one request.
        again = gen.generate([conv(t) for t in texts], SETTINGS)
        assert again == replies and stub.completions == 7 and gen.last_stats["cached"] == 8
        # Keys follow the engine's rule: (cache_id, prompt text, settings).
        key = cache_key("stub-weights", messages_key_text(conv(texts[0])), SETTINGS)
        assert gen.cache.get_many([key]) == {key: replies[0]}


def test_greedy_stop_strings_and_usage_fallback(tmp_path):
    text_with_stop = "Sounds hard.\nUser: and then"
    body = json.dumps(
        {"choices": [{"message": {"content": text_with_stop}, "finish_reason": "stop"}]}
    ).encode()
    with StubServer([("raw", body)]) as stub:
        gen = make_generator(stub.url, tmp_path)
        greedy = GenerationSettings(max_new_tokens=8, do_sample=False, stop=("\nUser:",))
        assert gen.generate([conv("hi")], greedy) == ["Sounds hard."]
        sent = stub.posts[0]["body"]
        assert sent["temperature"] == 0.0 and "seed" not in sent and sent["stop"] == ["\nUser:"]
        # No `usage` in the body: tokens are estimated and flagged.
        assert gen.last_stats["tokens_estimated_for"] == 1 and gen.last_stats["new_tokens"] > 0


# ---------------------------------------------------------------------------------------- retries


def test_429_respects_retry_after_then_succeeds(tmp_path):
    script = [("status", 429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "1"}), ("ok",)]
    with StubServer(script) as stub:
        gen = make_generator(stub.url, tmp_path, max_in_flight=1)
        t0 = time.perf_counter()
        assert gen.generate([conv("a")], SETTINGS) == ["reply to a"]
        waited = time.perf_counter() - t0
        assert stub.completions == 2 and gen.last_stats["retries"] == 1
        assert waited >= 0.95, f"Retry-After: 1 not honoured (retried after {waited:.2f}s)"


def test_500_and_timeout_and_garbage_are_retried(tmp_path):
    script = [
        ("status", 500, b"boom"),
        ("hang", 1.5),
        ("raw", b"{not json"),
        ("raw", b'{"choices": []}'),
        ("ok",),
    ]
    with StubServer(script) as stub:
        gen = make_generator(stub.url, tmp_path, max_in_flight=1, timeout_s=0.4, max_retries=5)
        assert gen.generate([conv("b")], SETTINGS) == ["reply to b"]
        assert stub.completions == 5 and gen.last_stats["retries"] == 4
        rows = cached_rows(gen)
        assert [r[2] for r in rows] == ["reply to b"]  # only the good reply; no "late reply", no garbage


def test_persistent_garbage_is_that_prompts_counted_error_and_caches_nothing_bad(tmp_path):
    # The first item succeeds, every later request gets garbage: the good reply stays cached, the
    # second prompt's error is recorded naming the problem (the call goes on), and no garbage is stored.
    script = [("ok",), ("raw", b"<html>proxy error</html>")]
    with StubServer(script) as stub:
        gen = make_generator(stub.url, tmp_path, max_in_flight=1, max_retries=2)
        assert gen.generate([conv("first"), conv("second")], SETTINGS) == ["reply to first", ""]
        [error] = gen.last_errors
        assert error.index == 1 and error.kind == "not_json"
        msg = error.message
        assert "malformed response" in msg and "not JSON" in msg and "gave up after 3 attempts" in msg
        assert "'stub'" in msg and stub.url in msg
        assert gen.last_stats["failed_prompts"] == 1 and gen.last_stats["failed_by_kind"] == {"not_json": 1}
        assert gen.last_stats["generated"] == 1 and gen.last_stats["first_error"] == msg
        assert stub.completions == 1 + 3
        assert [r[2] for r in cached_rows(gen)] == ["reply to first"]
        # A rerun resumes: the finished reply comes from the cache, the failed prompt is asked again.
        stub.script = [("ok",)]
        assert gen.generate([conv("first"), conv("second")], SETTINGS) == [
            "reply to first",
            "reply to second",
        ]
        assert gen.last_stats["cached"] == 1 and stub.completions == 5 and gen.last_errors == []


@pytest.mark.parametrize(
    "bad, kind",
    [
        (b'{"choices": [{"message": {"content": "cut', "not_json"),
        (b'{"id": "x", "choices": []}', "no_choices"),
    ],
)
def test_bad_reply_is_retried_bounded_then_counted_per_prompt(tmp_path, bad, kind):
    """Malformed JSON / empty choices for one prompt: asked again max_retries times, then that prompt's
    counted error; the prompts before and after it are answered and cached, the bad body never."""
    script = [("ok",), ("raw", bad), ("raw", bad), ("raw", bad), ("ok",)]
    with StubServer(script) as stub:
        gen = make_generator(stub.url, tmp_path, max_in_flight=1, max_retries=2)
        seen: list[ServerProgress] = []
        replies = gen.generate([conv("one"), conv("two"), conv("three")], SETTINGS, progress=seen.append)
        assert replies == ["reply to one", "", "reply to three"]
        assert stub.completions == 1 + 3 + 1
        assert [(e.index, e.kind) for e in gen.last_errors] == [(1, kind)]
        assert "gave up after 3 attempts" in gen.last_errors[0].message
        assert gen.last_stats["failed_prompts"] == 1 and gen.last_stats["retries"] == 2
        assert gen.last_stats["generated"] == 2 and seen[-1].failed == 1 and "1 failed" in str(seen[-1])
        assert sorted(r[2] for r in cached_rows(gen)) == ["reply to one", "reply to three"]


def test_overloaded_server_gives_up_with_advice(tmp_path):
    with StubServer([("status", 503, b'{"error": {"message": "overloaded"}}')]) as stub:
        gen = make_generator(stub.url, tmp_path, max_retries=2, max_in_flight=1)
        with pytest.raises(RetriesExhausted, match=r"HTTP 503 \(overloaded\).*lower max_in_flight"):
            gen.generate([conv("c")], SETTINGS)
        assert stub.completions == 3
        assert cached_rows(gen) == []


def test_content_filter_finish_is_not_cached(tmp_path):
    filtered = json.dumps(
        {"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}
    ).encode()
    with StubServer([("raw", filtered)]) as stub:
        gen = make_generator(stub.url, tmp_path, max_retries=1)
        assert gen.generate([conv("d")], SETTINGS) == [""]
        assert gen.last_errors[0].kind == "finish_reason" and "content_filter" in gen.last_errors[0].message
        assert stub.completions == 2 and cached_rows(gen) == []


# ----------------------------------------------------------------------------- digit probabilities


def test_digit_probabilities_from_top_logprobs(tmp_path):
    import math

    top = {
        "4": math.log(0.5),
        "3": math.log(0.2),
        " 4": math.log(0.1),
        "Score": math.log(0.1),
        "5": math.log(0.05),
    }
    with StubServer([("logprobs", top)]) as stub:
        gen = make_generator(stub.url, tmp_path, max_in_flight=2)
        probs = gen.digit_probabilities([conv("judge a"), conv("judge b")])
        body = stub.posts[0]["body"]
        assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
        assert body["temperature"] == 0.0
        # Softmax over the digit tokens = their probabilities renormalised; "1"/"2" not listed count 0,
        # " 4" (another token) and "Score" are not digits.
        expected = [0.0, 0.0, 0.2 / 0.75, 0.5 / 0.75, 0.05 / 0.75]
        assert probs == [pytest.approx(expected)] * 2
        assert gen.last_stats["scored"] == 2 and gen.last_stats["failed_prompts"] == 0
        assert cached_rows(gen) == []  # distributions are not replies: never in the response cache


def test_no_logprobs_server_is_a_clear_error_naming_generate_mode(tmp_path):
    with StubServer([("ok",)]) as stub:  # a server that ignores logprobs=true
        gen = make_generator(stub.url, tmp_path, max_in_flight=1, max_retries=1)
        with pytest.raises(LogprobsUnsupported, match=r"judge_scoring='generate'") as err:
            gen.digit_probabilities([conv(f"j{i}") for i in range(5)])
        assert "'stub'" in str(err.value) and stub.url in str(err.value)
        assert stub.completions == 2  # the first prompt's two attempts, not five prompts' worth


def test_missing_logprobs_or_digits_after_a_good_reply_are_counted_per_prompt(tmp_path):
    import math

    good = ("logprobs", {"2": math.log(0.6), "1": math.log(0.2)})
    words = ("logprobs", {"The": math.log(0.9), "I": math.log(0.05)})
    script = [good, ("ok",), ("ok",), words, ("raw", b'{"choices": []}'), ("raw", b'{"choices": []}'), good]
    with StubServer(script) as stub:
        gen = make_generator(stub.url, tmp_path, max_in_flight=1, max_retries=1)
        probs = gen.digit_probabilities([conv(f"j{i}") for i in range(5)])
        assert probs[0] == pytest.approx([0.25, 0.75, 0, 0, 0]) and probs[4] == probs[0]
        assert probs[1:4] == [None, None, None]
        # No logprobs: asked twice; no digit among them: not asked again (greedy gives the same); no choices: twice.
        assert [(e.index, e.kind) for e in gen.last_errors] == [
            (1, "no_logprobs"),
            (2, "no_digit"),
            (3, "no_choices"),
        ]
        assert stub.completions == 1 + 2 + 1 + 2 + 1
        assert gen.last_stats["failed_prompts"] == 3 and gen.last_stats["scored"] == 2


# --------------------------------------------------------------------------------- fatal, at once


def test_auth_failure_is_not_retried_and_says_what_to_check(tmp_path):
    body = b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}'
    with StubServer([("status", 401, body)]) as stub:
        gen = make_generator(stub.url, tmp_path, api_key="wrong")
        with pytest.raises(AuthenticationFailed) as err:
            gen.generate([conv(f"e{i}") for i in range(4)], SETTINGS)
        assert stub.completions <= 2  # the requests already in flight, no retries
        msg = str(err.value)
        assert "HTTP 401" in msg and "Incorrect API key" in msg and "API key" in msg and stub.url in msg
        assert cached_rows(gen) == []


def test_model_not_listed_fails_before_generating(tmp_path):
    with StubServer([("ok",)], models=("smollm2", "other")) as stub:
        gen = make_generator(stub.url, tmp_path, model="smolm2-typo")
        with pytest.raises(ModelNotFound) as err:
            gen.generate([conv("f")], SETTINGS)
        assert stub.completions == 0
        msg = str(err.value)
        assert "smolm2-typo" in msg and "smollm2" in msg and "--served-model-name" in msg


def test_404_model_not_found_from_completion(tmp_path):
    body = b'{"error": {"message": "The model `gpt-x` does not exist.", "code": "model_not_found"}}'
    with StubServer([("status", 404, body)]) as stub:
        gen = make_generator(stub.url, tmp_path, model="gpt-x", check_model=False)
        with pytest.raises(ModelNotFound, match=r"does not serve model 'gpt-x'.*The server serves: stub"):
            gen.generate([conv("g")], SETTINGS)
        assert stub.completions == 1


def test_wrong_base_url_path(tmp_path):
    with StubServer([("ok",)]) as stub:
        gen = make_generator(stub.url.removesuffix("/v1"), tmp_path)  # forgot /v1
        with pytest.raises(EndpointNotFound, match="ending in /v1"):
            gen.generate([conv("h")], SETTINGS)


def test_unreachable_server(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gen = make_generator(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=2)
    t0 = time.perf_counter()
    with pytest.raises(ServerUnreachable) as err:
        gen.generate([conv("i")], SETTINGS)
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "is running" in msg
    assert cached_rows(gen) == []


# --------------------------------------------------------------------------------------- helpers


def test_parsers():
    from openai.types.chat import ChatCompletion

    def parsed(raw: bytes):  # what the client hands back: a model built without validation
        return ChatCompletion.construct(**json.loads(raw))

    assert reply_from_completion(parsed(completion("x", 4))) == ("x", 4, 11)
    for bad, kind in (
        (parsed(b'{"choices": [{"message": {}}]}'), "no_content"),
        ([], "not_a_completion"),
        ("<html>", "not_a_completion"),
        (parsed(b'{"choices": null}'), "no_choices"),
    ):
        with pytest.raises(BadReply) as err:
            reply_from_completion(bad)
        assert err.value.kind == kind
    with pytest.raises(BadReply, match="no logprobs"):
        digit_probabilities_from_completion(parsed(completion("4")))


def test_resource_builds_generator_with_env_key(tmp_path, monkeypatch):
    from dagster import EnvVar

    monkeypatch.setenv("STUB_API_KEY", "sk-from-env")
    backend = OpenAICompatibleBackend(
        base_url="http://127.0.0.1:9/v1/",
        model="m",
        api_key=EnvVar("STUB_API_KEY"),
        cache_dir=str(tmp_path / "c"),
        max_in_flight=8,
    )
    # What Dagster does before handing the resource to an asset: resolve the EnvVar.
    gen = backend.process_config_and_initialize().get_generator()
    assert gen.api_key == "sk-from-env" and gen.base_url == "http://127.0.0.1:9/v1"
    assert gen.cache_id == "server:m" and gen.max_in_flight == 8 and gen.cache is not None
    lora = backend.process_config_and_initialize().get_generator(model="empathy-lora", cache_id="abc123")
    assert lora.model == "empathy-lora" and lora.cache_id == "abc123"


def test_backend_from_env(tmp_path, monkeypatch):
    from empathy_dag.defs.generate.resources import openai_backend_from_env

    monkeypatch.delenv("EMPATHY_DAG_OPENAI_BASE_URL", raising=False)
    assert openai_backend_from_env() is None
    monkeypatch.setenv("EMPATHY_DAG_OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("EMPATHY_DAG_OPENAI_MODEL", "served-name")
    monkeypatch.setenv("EMPATHY_DAG_OPENAI_KEY_VAR", "MY_KEY")
    monkeypatch.setenv("MY_KEY", "sk-env")
    monkeypatch.setenv("EMPATHY_DAG_OPENAI_IN_FLIGHT", "16")
    gen = openai_backend_from_env(str(tmp_path / "c")).process_config_and_initialize().get_generator()
    assert (gen.model, gen.api_key, gen.max_in_flight) == ("served-name", "sk-env", 16)


def test_server_text_generator_is_a_drop_in(tmp_path):
    from empathy_dag.defs.generate.resources import ServerTextGenerator

    with StubServer([("ok",)]) as stub:
        configured = ServerTextGenerator(
            server=OpenAICompatibleBackend(base_url=stub.url, model="stub", cache_id="w1"),
            cache_dir=str(tmp_path / "stage_cache"),
            max_new_tokens=12,
        )
        with configured.process_config_and_initialize_cm() as resource:
            source = resource.resolve_source(model_store=None)
            assert source == f"{stub.url}#stub"
            gen = resource.load(model_store=None, source=source)
            assert gen.source == source and gen.cache.path.parent == tmp_path / "stage_cache"
            assert gen.generate([conv("x")], resource.settings()) == ["reply to x"]
            assert stub.posts[-1]["body"]["max_tokens"] == 12


# ------------------------------------------------------------------------- counts in asset metadata


def _two_test_rows_per_emotion(context):
    """A stand-in `dataset_splits` (curated dialogue columns + split): two test rows an emotion."""
    import polars as pl

    turns = {
        "anger": [
            "My neighbour parked across my driveway again.",
            "They cancelled my flight with no notice.",
        ],
        "annoyance": ["The printer jammed for the fifth time today.", "My roommate never washes the dishes."],
    }
    return {
        e: pl.DataFrame(
            {
                "dialogue_id": [f"{e}-{i}" for i in range(2)],
                "situation_id": [f"{e}-s{i}" for i in range(2)],
                "emotion": [e, e],
                "language": ["en", "en"],
                "situation": turns[e],
                "speaker_utterance": turns[e],
                "listener_reply": ["That sounds frustrating.", "I'm sorry, that is a lot."],
                "split": ["test", "test"],
            }
        )
        for e in context.partition_keys
    }


@pytest.mark.timeout(240)
def test_bad_replies_reach_test_generations_and_judge_metadata(resources, data_root):
    """test_generations and metric_judge (probabilities mode) on the stub: one prompt each gets bad
    replies; both assets succeed, and their metadata count the failed prompt and name its error."""
    import math

    import polars as pl
    from dagster import asset, instance_for_test, materialize

    from empathy_dag.defs.evaluate import assets as ev
    from empathy_dag.defs.evaluate.resources import EvaluationConfig, ExtraSystem
    from empathy_dag.defs.generate.resources import ServerTextGenerator
    from empathy_dag.defs.partitions import emotion_partitions, single_run

    splits = asset(
        name="dataset_splits",
        partitions_def=emotion_partitions,
        backfill_policy=single_run,
        io_manager_key="parquet_io_manager",
    )(_two_test_rows_per_emotion)
    cache_dir = str(data_root / "generation_cache")
    tags = {"dagster/asset_partition_range_start": "anger", "dagster/asset_partition_range_end": "annoyance"}
    with StubServer([("ok",)]) as stub, instance_for_test() as instance:
        resources["text_generator"] = ServerTextGenerator(
            server=OpenAICompatibleBackend(
                base_url=stub.url, model="stub", max_in_flight=1, max_retries=1, cache_dir=cache_dir
            ),
            cache_dir=cache_dir,
        )
        resources["evaluation"] = EvaluationConfig(
            # A hosted system and a hosted judge: nothing is loaded here.
            systems=[],
            extra_systems=[ExtraSystem(name="hosted", source="stub-weights")],
            max_new_tokens=12,
            max_items_per_emotion=2,
            min_items_per_emotion=1,
            judge_scoring="probabilities",
            judge_max_items=2,
            served_models={"hosted": "stub", "judge": "stub"},
        )
        stub.script = [("ok",), ("raw", b"{not json"), ("raw", b"{not json"), ("ok",)]  # the 2nd prompt fails
        run = materialize(
            [splits, ev.evaluation_set, ev.test_generations],
            resources=resources,
            tags=tags,
            instance=instance,
        )
        meta = run.asset_materializations_for_node("test_generations")[0].metadata
        assert meta["failed_prompts"].value == 1
        base = meta["systems"].value["hosted"]
        assert (
            base["failed_prompts"] == 1
            and base["failed_by_kind"] == {"not_json": 1}
            and base["generated"] == 3
        )
        assert "not JSON" in base["first_error"] and stub.url in base["first_error"]
        # The failed prompt has no row (not an empty prediction the metrics would score): 3 of the 4 items.
        assert meta["dagster/row_count"].value == 3 and len(base["failed_item_ids"]) == 1
        table = pl.concat(run.output_for_node("test_generations").values())
        assert (
            base["failed_item_ids"][0] not in table["item_id"].to_list()
            and table["prediction"].str.len_chars().min() > 0
        )
        assert materialize(
            [ev.external_predictions, ev.evaluation_items], resources=resources, instance=instance
        ).success

        good = ("logprobs", {"4": math.log(0.7), "5": math.log(0.2)})
        stub.script = [good, ("ok",), ("ok",), good]  # the judge's 2nd prompt: no logprobs, twice
        judged = materialize([ev.metric_judge], resources=resources, instance=instance)
    meta = judged.asset_materializations_for_node("metric_judge")[0].metadata
    assert meta["scoring"].value == "probabilities" and meta["judge_model"].value == "served:stub"
    assert meta["request_errors"].value == 1 and meta["request_errors_by_kind"].value == {"no_logprobs": 1}
    assert "no logprobs" in meta["first_request_error"].value
    rows = meta["dagster/row_count"].value
    assert rows >= 2 and meta["parse_failures"].value == 1  # the failed prompt: no score; the others 4


def test_sharded_generation_keeps_per_prompt_errors_at_their_call_positions(tmp_path):
    """Two endpoints, one answering garbage: its prompts are counted errors at their positions in the
    whole call (a duplicate of a failed prompt too), the other endpoint's replies are kept; no crash."""
    from empathy_dag.generate.sharded import ShardedGenerator

    with StubServer([("raw", b"{not json")]) as bad, StubServer([("ok",)]) as good:
        gen = OpenAICompatibleBackend(
            base_url=bad.url,
            more_base_urls=[good.url],
            model="stub",
            cache_id="w",
            cache_dir=str(tmp_path / "c"),
            chunk_size=1,
            max_in_flight=1,
            max_retries=1,
        ).get_generator()
        assert isinstance(gen, ShardedGenerator)
        texts = ["a", "b", "c", "d", "a"]
        replies = gen.generate([conv(t) for t in texts], SETTINGS)
    failed = [i for i, r in enumerate(replies) if r == ""]
    assert failed  # the bad endpoint's worker starts first and takes the first chunk
    assert [e.index for e in gen.last_errors] == failed and all(e.kind == "not_json" for e in gen.last_errors)
    assert all(replies[i] == f"reply to {t}" for i, t in enumerate(texts) if i not in failed)
    assert (0 in failed) == (4 in failed)  # the duplicate shares its first's fate
    per = gen.last_stats["per_endpoint"]
    assert gen.last_stats["failed_prompts"] == len(failed)
    assert (
        per[bad.url]["failed_prompts"] == len({texts[i] for i in failed})
        and per[good.url]["failed_prompts"] == 0
    )
    assert bad.completions == 2 * per[bad.url]["replies"]  # each of its prompts asked twice (max_retries=1)
