"""An S3 endpoint on loopback for tests and benchmarks: moto in server mode (`moto_server`) on a free
port of 127.0.0.1, with throwaway credentials in the environment (boto3, s3fs and Polars all read them
from there, exactly as they read real ones in production)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.loopback import free_port  # re-exported: tests and benches import it from here

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "moto-testing",
    "AWS_SECRET_ACCESS_KEY": "moto-testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def moto_server_command() -> list[str] | None:
    """The moto_server of this interpreter's environment, else one on PATH, else None."""
    beside = Path(sys.executable).with_name("moto_server")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("moto_server")
    return [found] if found else None


@contextmanager
def moto_endpoint(log_path: Path | None = None) -> Iterator[str]:
    """Start moto_server, yield its endpoint URL, stop it. Sets the fake credentials in os.environ for
    the duration (restored afterwards)."""
    command = moto_server_command()
    if command is None:
        raise FileNotFoundError("moto_server not found: pip install 'moto[server]'")
    port = free_port()
    saved = {k: os.environ.get(k) for k in FAKE_CREDENTIALS}
    os.environ.update(FAKE_CREDENTIALS)
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
