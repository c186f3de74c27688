"""Generation backends side by side on the same prompts, in one run:

1. in-process batched transformers (`engine.load_generator`, de-quantized SmolLM2 safetensors),
2. `python -m llama_cpp.server` (embedded Q4_1 GGUF) with several requests in flight,
3. the same server, one request at a time.

Caches are off, each configuration gets one warm-up request first, and the backends run one after the
other (never together), so they do not compete for the cores. tokens/s = completion tokens / wall time.

    .venv/bin/python bench/bench_backends.py --prompts 16 --max-new-tokens 64 --in-flight 4
    .venv/bin/python bench/bench_backends.py --json bench/results/backends.json

Needs `pip install 'llama-cpp-python[server]'` for the server rows (skipped with a note otherwise).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from empathy_dag.generate.engine import GenerationSettings, load_generator
from empathy_dag.generate.llama_server import start_llama_server
from empathy_dag.generate.openai_backend import OpenAICompatibleGenerator
from empathy_dag.models import convert_gguf_to_safetensors, embedded_smollm2_gguf
from empathy_dag.settings import assets_dir
from tests.moto_server import free_port

SYSTEM = "You are a caring listener. Reply to the speaker with empathy in two or three sentences."


def bench_conversations(n: int) -> list[list[dict[str, str]]]:
    """The first n English seed situations, one per emotion before any repeats (varied lengths)."""
    rows = []
    for path in sorted((assets_dir() / "seed").glob("situations_en_*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_emotion: dict[str, list[dict]] = {}
    for r in rows:
        by_emotion.setdefault(r["emotion"], []).append(r)
    picked: list[dict] = []
    while len(picked) < n and any(by_emotion.values()):
        for group in by_emotion.values():
            if group and len(picked) < n:
                picked.append(group.pop(0))
    return [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{r['situation']} {r['speaker_utterance']}"},
        ]
        for r in picked
    ]


def run(name: str, generate, conversations, settings, stats_of) -> dict:
    generate(conversations[:1], settings)  # warm-up: weights paged in, server caches primed
    t0 = time.perf_counter()
    replies = generate(conversations, settings)
    seconds = time.perf_counter() - t0
    stats = stats_of()
    tokens = stats["new_tokens"]
    row = {
        "backend": name,
        "prompts": len(conversations),
        "seconds": round(seconds, 2),
        "new_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "requests_per_s": round(len(conversations) / seconds, 2),
        "mean_reply_chars": round(sum(map(len, replies)) / len(replies), 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16, help="in-process engine batch size")
    ap.add_argument("--in-flight", type=int, default=4, help="concurrent requests for the server row")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp threads and torch threads"
    )
    ap.add_argument(
        "--base-model", type=Path, default=None, help="converted base_model folder (else converted now)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    conversations = bench_conversations(args.prompts)
    # Sampling with a fixed seed: realistic settings for synthetic data; greedy changes little in speed.
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9, seed=0)
    gguf = embedded_smollm2_gguf()
    rows: list[dict] = []

    with tempfile.TemporaryDirectory() as tmp:
        base = args.base_model
        if base is None:
            base = Path(tmp) / "base_model"
            convert_gguf_to_safetensors(gguf, base)
        engine = load_generator(base, device="cpu", batch_size=args.batch_size, cache_dir=None)
        rows.append(
            run(
                f"in-process transformers (batch {args.batch_size})",
                lambda c, s: engine.generate(c, s),
                conversations,
                settings,
                lambda: engine.last_stats,
            )
        )

        if all(importlib.util.find_spec(m) for m in ("llama_cpp", "fastapi", "sse_starlette")):
            port = free_port()
            proc = start_llama_server(gguf, port, n_ctx=4096, n_threads=args.threads)
            try:
                for in_flight in (args.in_flight, 1):
                    gen = OpenAICompatibleGenerator(
                        base_url=f"http://127.0.0.1:{port}/v1",
                        model="smollm2",
                        cache_id="bench",
                        max_in_flight=in_flight,
                        timeout_s=300,
                        cache=None,
                    )
                    label = (
                        f"llama_cpp.server, {in_flight} in flight"
                        if in_flight > 1
                        else "llama_cpp.server, single stream"
                    )
                    rows.append(
                        run(
                            label,
                            lambda c, s, g=gen: g.generate(c, s),
                            conversations,
                            settings,
                            lambda g=gen: g.last_stats,
                        )
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        else:
            print("llama-cpp-python[server] not installed: server rows skipped", flush=True)

    best = max(rows, key=lambda r: r["tokens_per_s"])
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.prompts} prompts, "
        f"max_new_tokens={args.max_new_tokens}, threads={args.threads}"
    )
    print("| backend | seconds | new tokens | tokens/s | requests/s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['seconds']} | {r['new_tokens']} | {r['tokens_per_s']} | {r['requests_per_s']} |"
        )
    print(f"fastest: {best['backend']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1)
        )


if __name__ == "__main__":
    main()
