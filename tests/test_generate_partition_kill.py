"""A real SIGKILL of the process generating one emotion partition (brainstormed_situations through an
OpenAI-compatible stub server on loopback): no partial partition is visible, the replies finished
before the kill stay in the response cache, and the re-run asks the server only for the rest and
writes the same partition as a clean run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from tests.test_generate_openai_faults import StubServer

pytestmark = pytest.mark.timeout(240)

ITEMS = 6  # prompts of the partition
FINISHED_BEFORE_KILL = 3  # the stub answers these, then every later request hangs

CHILD = textwrap.dedent("""
    import sys
    from dagster import DagsterInstance, materialize
    from empathy_dag.defs.profiles import local_resources
    from empathy_dag.defs.generate.assets import brainstormed_situations
    from empathy_dag.defs.generate.resources import OpenAICompatibleBackend, ServerTextGenerator
    from empathy_dag.defs.ingest.assets import emotion_taxonomy, ingest_corpus, situations

    root, url, items = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache_dir = root + "/generation_cache"
    server = OpenAICompatibleBackend(base_url=url, model="stub", cache_id="stub-weights", max_in_flight=2,
                                     timeout_s=60, max_retries=0, cache_dir=cache_dir)
    resources = {**local_resources(root), "text_generator": ServerTextGenerator(server=server, cache_dir=cache_dir)}
    result = materialize(
        [emotion_taxonomy, ingest_corpus, situations, brainstormed_situations],
        selection=[brainstormed_situations], partition_key="joy", resources=resources,
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"brainstormed_situations": {"config": {"per_emotion": items}}}},
    )
    print("DONE" if result.success else "FAILED", flush=True)
""")


def _start(root: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), url, str(ITEMS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def _cached(root: Path) -> dict[str, str]:
    path = root / "generation_cache" / "responses.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        try:
            return dict(db.execute("SELECT key, response FROM responses"))
        except sqlite3.OperationalError:  # the child is still creating the table
            return {}


def _prepare(root: Path) -> None:
    """Ingest and the `joy` situations the brainstorm prompts are seeded with (in this process)."""
    from dagster import DagsterInstance, materialize

    from empathy_dag.defs.ingest.assets import emotion_taxonomy, ingest_corpus, situations
    from empathy_dag.defs.profiles import local_resources

    resources = local_resources(root)
    instance = DagsterInstance.ephemeral()
    assert materialize([emotion_taxonomy, ingest_corpus], resources=resources, instance=instance).success
    assert materialize(
        [emotion_taxonomy, ingest_corpus, situations],
        selection=[situations],
        partition_key="joy",
        resources=resources,
        instance=instance,
    ).success


def _partition(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "parquet" / "brainstormed_situations" / "joy.parquet").sort("item_index")


def test_sigkill_during_a_generation_partition_then_rerun_resumes_from_the_cache(tmp_path):
    root = tmp_path / "killed"
    _prepare(root)
    folder = root / "parquet" / "brainstormed_situations"

    # 1. The stub answers FINISHED_BEFORE_KILL requests and then hangs: kill once those are cached.
    with StubServer([("ok",)] * FINISHED_BEFORE_KILL + [("hang", 30)]) as stub:
        proc = _start(root, stub.url)
        deadline = time.monotonic() + 150
        while len(_cached(root)) < FINISHED_BEFORE_KILL:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the finished replies never reached the cache"
            time.sleep(0.2)
        assert (
            stub.completions > FINISHED_BEFORE_KILL
        )  # requests were still in flight: a real mid-partition kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finished_at_kill = _cached(root)
    assert len(finished_at_kill) == FINISHED_BEFORE_KILL
    assert not (folder / "joy.parquet").exists() and not list(folder.glob("*.parquet"))

    # 2. The re-run asks only for the replies that were not finished, and completes the partition.
    with StubServer([("ok",)]) as stub:
        proc = _start(root, stub.url)
        out, err = proc.communicate(timeout=180)
        assert "DONE" in out, err[-3000:]
        assert stub.completions == ITEMS - FINISHED_BEFORE_KILL
    after = _cached(root)
    assert all(after[k] == v for k, v in finished_at_kill.items()) and len(after) == ITEMS
    killed_then_resumed = _partition(root)
    # (The stub echoes the prompt, so several replies can reduce to one situation: ids dedupe them.)
    assert killed_then_resumed.height >= 1 and set(killed_then_resumed["emotion"]) == {"joy"}

    # 3. Exactly what a clean run writes (fresh root, fresh cache, same stub replies).
    clean = tmp_path / "clean"
    _prepare(clean)
    with StubServer([("ok",)]) as stub:
        proc = _start(clean, stub.url)
        out, err = proc.communicate(timeout=180)
        assert "DONE" in out, err[-3000:]
        assert stub.completions == ITEMS
    # (generator_source names the stub's port, which differs between the two servers.)
    assert killed_then_resumed.drop("generator_source").equals(_partition(clean).drop("generator_source"))
