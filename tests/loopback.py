"""Servers on 127.0.0.1 for tests: a free port, and waiting until a started server answers."""

from __future__ import annotations

import socket
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout_s: float = 180.0) -> bool:
    """Poll `url` once a second until it answers (any HTTP reply) or `timeout_s` passes; True if it answered.
    A started `dagster dev` takes tens of seconds on a 2-core machine before its webserver listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5)
            return True
        except OSError:
            time.sleep(1)
    return False
