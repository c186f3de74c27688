"""`make dev` / `python -m empathy_dag dev`: `dagster dev` that stops cleanly on Ctrl-C and SIGTERM.

Why a supervisor. `dagster dev` starts four processes of its own (a code server that starts a gRPC
server for the code location, the webserver, the daemon) and, on SIGINT/SIGTERM, asks the webserver and
the daemon to stop through pipes, waiting up to 60 s for each. It does not signal the code server: when
only the `dagster dev` process is signalled (`kill <pid>`, or make forwarding SIGTERM to its child), the
code server and its gRPC child are orphaned and live on until their heartbeat times out (45 s, measured:
still running after `dagster dev` had exited). On an instance with runs and sensors a daemon busy in a
tick adds its own wait, which is how one Ctrl-C could leave five processes behind for over a minute.

So `dagster dev` runs here in a process group of its own; a SIGINT or SIGTERM to this process goes to
the whole group (each process then shuts itself down as it would on Ctrl-C in a terminal), and whatever
is still alive `grace_s` seconds later is killed, so nothing outlives the command."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_GRACE_S = 30.0


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (zombies excluded: an orphaned zombie waits for PID 1 to
    reap it, which in a container may never happen, and it holds nothing). Linux reads /proc; elsewhere
    the group counts as alive while signal 0 reaches it."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def run_supervised(
    command: list[str], grace_s: float = DEFAULT_GRACE_S, env: dict | None = None, cwd: str | None = None
) -> int:
    """Run `command` as the leader of a new process group and return its exit code. SIGINT or SIGTERM
    to this process is sent to the whole group as SIGTERM; `grace_s` after that (or after the command
    exits on its own), the group's survivors get SIGKILL."""
    child = subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)
    pgid = child.pid
    stopping: dict[str, float] = {}

    def forward(signum, _frame):
        if "at" not in stopping:
            stopping["at"] = time.monotonic()
            print(
                f"empathy_dag dev: signal {signal.Signals(signum).name}, stopping dagster dev "
                f"(everything still running after {grace_s:.0f} s is killed)",
                file=sys.stderr,
                flush=True,
            )
        _signal_group(pgid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while child.poll() is None:
            if "at" in stopping and time.monotonic() - stopping["at"] > grace_s:
                _signal_group(pgid, signal.SIGKILL)
            time.sleep(0.2)
        # The leader is gone; its children (the code server above all) may not be.
        deadline = time.monotonic() + (
            grace_s if "at" not in stopping else max(0.0, grace_s - (time.monotonic() - stopping["at"]))
        )
        if group_members(pgid):
            _signal_group(pgid, signal.SIGTERM)
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)
        return child.returncode
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def dagster_dev_command(workspace: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "dagster", "dev", "-w", workspace, "-h", host, "-p", str(port)]
