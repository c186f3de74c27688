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

import sys


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
