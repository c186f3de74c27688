"""`python -m empathy_dag dev` (`make dev`) stops on SIGTERM / Ctrl-C within seconds and leaves no
process behind: first with a stand-in process tree shaped like `dagster dev`'s (a leader that exits on
SIGTERM and a child that ignores it, like the orphaned code server), then the real `dagster dev` on an
empty instance."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from empathy_dag.devserver import group_members
from tests.loopback import free_port, wait_for_http

ROOT = Path(__file__).resolve().parent.parent

# A leader that stops on SIGTERM, with a child that ignores SIGTERM (as an orphaned code server outlives
# `dagster dev` until its heartbeat times out). The leader prints both pids, then waits.
STAND_IN = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    child = subprocess.Popen([sys.executable, "-c", "import os, signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(os.getpid(), flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    print(child.stdout.readline().strip(), flush=True)  # once the child ignores SIGTERM
    time.sleep(600)
""")


def _supervisor(command: list[str], grace_s: float) -> subprocess.Popen:
    code = (
        "import sys; from empathy_dag.devserver import run_supervised; "
        f"sys.exit(abs(run_supervised({command!r}, grace_s={grace_s})))"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _wait_gone(pgid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return group_members(pgid)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="process-group bookkeeping reads /proc")
def test_sigterm_stops_the_whole_tree_and_kills_what_ignores_it():
    sup = _supervisor([sys.executable, "-c", STAND_IN], grace_s=2.0)
    try:
        stubborn = int(sup.stdout.readline())
        pgid = os.getpgid(stubborn)
        assert pgid != os.getpgid(0) and len(group_members(pgid)) == 2
        start = time.monotonic()
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 0  # the leader's own exit code
        assert 1.5 < time.monotonic() - start < 6  # the stubborn child gets 2 s of grace, then SIGKILL
        assert _wait_gone(pgid, 2) == []
    finally:
        if sup.poll() is None:
            sup.kill()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="process-group bookkeeping reads /proc")
def test_children_left_by_a_leader_that_exits_on_its_own_are_stopped_too():
    leaves_child = (
        "import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', 'import time; "
        "time.sleep(600)']); print(c.pid, flush=True)"
    )
    sup = _supervisor([sys.executable, "-c", leaves_child], grace_s=5.0)
    orphan = int(sup.stdout.readline())
    pgid = os.getpgid(orphan)
    assert sup.wait(timeout=15) == 0
    assert _wait_gone(pgid, 2) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="process-group bookkeeping reads /proc")
def test_make_dev_stops_on_sigterm_without_orphans(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "resources" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    for var in (
        "EMPATHY_DAG_DATA_DIR",
        "EMPATHY_DAG_DUCKDB",
        "EMPATHY_DAG_PARQUET_DIR",
        "EMPATHY_DAG_MODEL_DIR",
    ):
        env.pop(var, None)
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen(
        [sys.executable, "-m", "empathy_dag", "dev", "--port", str(port), "--grace-s", "20"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        if not wait_for_http(f"http://127.0.0.1:{port}/server_info"):
            pytest.fail(
                "dagster dev did not answer within 180 s: " + (tmp_path / "dev.log").read_text()[-2000:]
            )
        leader = next(int(p) for p in os.popen(f"pgrep -P {dev.pid}").read().split())
        pgid = os.getpgid(leader)
        running = group_members(pgid)
        assert len(running) >= 4  # dagster dev, code server, its gRPC server, webserver, daemon
        start = time.monotonic()
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)
        seconds = time.monotonic() - start
        assert seconds < 30, seconds
        assert _wait_gone(pgid, 1) == [], "processes outlived make dev"
    finally:
        if dev.poll() is None:
            dev.kill()
        log.close()
