"""`python -m llama_cpp.server`, with llama.cpp's extra weight buffers (AMX / repacked layouts) off
unless asked for:

    python -m empathy_dag.generate.llama_server --model <file.gguf> --model_alias smollm2 \\
        --host 127.0.0.1 --port 8000 [--extra-bufts] [any other llama_cpp.server option]

Why: a llama-cpp-python built with GGML_NATIVE on a CPU that advertises AMX (Sapphire Rapids and
later) runs its AMX matmul for Q4/Q8 weights, and on VMs that list amx_tile in /proc/cpuinfo without
really enabling the tile state (e.g. Firecracker guests) the first `ldtilecfg` dies with a general
protection fault: the server accepts requests, then the process vanishes on the first completion.
Turning `use_extra_bufts` off keeps every matmul on the plain AVX2/AVX-512 kernels. On bare metal,
pass --extra-bufts (or run `python -m llama_cpp.server` directly).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def disable_extra_buffers() -> None:
    """Make every Llama() load its weights without extra buffer types (llama_model_params)."""
    import llama_cpp.llama_cpp as lib

    default_params = lib.llama_model_default_params
    if getattr(default_params, "_empathy_dag_patched", False):
        return

    def params():
        p = default_params()
        p.use_extra_bufts = False
        return p

    params._empathy_dag_patched = True  # type: ignore[attr-defined]
    lib.llama_model_default_params = params


def start_llama_server(
    gguf: str | Path,
    port: int,
    *,
    alias: str = "smollm2",
    n_ctx: int = 2048,
    n_threads: int = 2,
    ready_timeout_s: float = 120.0,
) -> subprocess.Popen:
    """This launcher in a subprocess on 127.0.0.1:port, returned once the server lists its models
    (`models.list()`, GET /v1/models, through the same `openai` client the backend uses; the tests and
    bench/bench_backends.py use it; stop it with `proc.terminate()`)."""
    import openai

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "empathy_dag.generate.llama_server",
            "--model",
            str(gguf),
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(n_threads),
            "--verbose",
            "False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # No retries inside a probe: this loop is the retry, and it watches the process between tries.
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="no-key",
        max_retries=0,
        timeout=2.0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )
    deadline = time.monotonic() + ready_timeout_s
    with client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                client.models.list()
                return proc
            except openai.APIError:
                pass
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server not ready on port {port} after {ready_timeout_s}s")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--extra-bufts" in argv:
        argv.remove("--extra-bufts")
    else:
        disable_extra_buffers()
    from llama_cpp.server.__main__ import main as server_main

    sys.argv = ["llama_cpp.server", *argv]
    server_main()


if __name__ == "__main__":
    main()
