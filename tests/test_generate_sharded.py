"""Generation sharded across two real llama.cpp servers on loopback (`python -m llama_cpp.server` with
the embedded SmolLM2 GGUF): both receive work, killing one mid-run loses no finished reply, and a re-run
completes from the cache. Skipped when llama-cpp-python[server] is missing."""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest

from empathy_dag.defs.generate.resources import OpenAICompatibleBackend
from empathy_dag.generate.engine import GenerationSettings, ResponseCache
from empathy_dag.generate.openai_backend import ServerUnreachable
from empathy_dag.generate.sharded import ShardedGenerator
from tests.moto_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MISSING = [
    m
    for m in ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
    if importlib.util.find_spec(m) is None
]
if MISSING:
    pytest.skip(
        f"llama-cpp-python[server] not installed (missing {', '.join(MISSING)})", allow_module_level=True
    )

SETTINGS = GenerationSettings(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=3)
TOPICS = (
    "my dog died",
    "I got the job",
    "nobody came to my party",
    "my scan was clear",
    "I failed my exam",
    "my sister had a baby",
    "I lost my wallet",
    "my friend lied to me",
)


def _conversations(tag: str):
    return [
        [
            {"role": "system", "content": "You are a caring listener. Answer in one sentence."},
            {"role": "user", "content": f"{tag}: {t}."},
        ]
        for t in TOPICS
    ]


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=15)


@pytest.fixture
def two_servers():
    from empathy_dag.generate.llama_server import start_llama_server
    from empathy_dag.models import embedded_smollm2_gguf

    gguf = embedded_smollm2_gguf()
    procs = []
    try:
        for _ in range(2):
            port = free_port()
            procs.append(
                (
                    start_llama_server(gguf, port, alias="smollm2", n_ctx=512, n_threads=1),
                    f"http://127.0.0.1:{port}/v1",
                )
            )
        yield procs
    finally:
        for proc, _ in procs:
            _stop(proc)


def _backend(urls, cache_dir) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(
        base_url=urls[0],
        more_base_urls=urls[1:],
        model="smollm2",
        cache_id="smollm2-q8",
        cache_dir=str(cache_dir),
        chunk_size=1,
        max_in_flight=1,
        timeout_s=60,
        max_retries=1,
    )


def test_two_servers_share_the_work_and_a_lost_one_loses_no_finished_reply(two_servers, tmp_path):
    (proc_a, url_a), (proc_b, url_b) = two_servers
    cache_dir = tmp_path / "cache"
    gen = _backend([url_a, url_b], cache_dir).get_generator()
    assert isinstance(gen, ShardedGenerator)

    # 1. Both servers receive work.
    first = gen.generate(_conversations("warm-up")[:2], SETTINGS)
    assert all(r.strip() for r in first)
    per = gen.last_stats["per_endpoint"]
    assert per[url_a]["chunks"] >= 1 and per[url_b]["chunks"] >= 1
    assert per[url_a]["replies"] + per[url_b]["replies"] == 2

    # 2. Kill server B once a few replies of a new call are finished: the call still completes on A,
    # and every reply that was finished when B died is in the cache, unchanged.
    cache = ResponseCache(cache_dir)
    before = len(cache)
    conversations = _conversations("run")[:5]
    box = {}
    call = threading.Thread(target=lambda: box.update(replies=gen.generate(conversations, SETTINGS)))
    call.start()
    deadline = time.monotonic() + 120
    while len(cache) < before + 1 and time.monotonic() < deadline and call.is_alive():
        time.sleep(0.05)
    _stop(proc_b)
    with cache._connect() as db:
        finished_at_kill = dict(db.execute("SELECT key, response FROM responses"))
    call.join(timeout=240)
    assert not call.is_alive()
    replies = box["replies"]
    assert len(replies) == len(conversations) and all(r.strip() for r in replies)
    per = gen.last_stats["per_endpoint"]
    assert per[url_b]["failed"] is not None, "B was killed with chunks left: it must be reported failed"
    assert per[url_a]["replies"] + per[url_b]["replies"] == len(conversations)
    with cache._connect() as db:
        after = dict(db.execute("SELECT key, response FROM responses"))
    assert len(finished_at_kill) > before
    assert all(after.get(k) == v for k, v in finished_at_kill.items())

    # 3. Both servers gone: the same call is answered entirely from the cache, same replies.
    _stop(proc_a)
    again = _backend([url_a, url_b], cache_dir).get_generator()
    assert again.generate(conversations, SETTINGS) == replies
    assert again.last_stats["cached"] == len(conversations) and again.last_stats["chunks"] == 0

    # 4. ...and a call with uncached prompts fails with every endpoint named, keeping nothing half-done.
    with pytest.raises(ServerUnreachable, match="every endpoint failed"):
        again.generate(_conversations("new")[:2], SETTINGS)


def test_generation_backfill_policy_from_the_environment():
    from empathy_dag.defs.generate.assets import generation_backfill_policy

    assert generation_backfill_policy({}).policy_type.name == "SINGLE_RUN"
    multi = generation_backfill_policy({"EMPATHY_DAG_GENERATION_PARTITIONS_PER_RUN": "4"})
    assert multi.policy_type.name == "MULTI_RUN" and multi.max_partitions_per_run == 4
    with pytest.raises(ValueError, match="positive integer"):
        generation_backfill_policy({"EMPATHY_DAG_GENERATION_PARTITIONS_PER_RUN": "-2"})
