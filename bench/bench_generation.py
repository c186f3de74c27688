"""Generation throughput: llama.cpp single stream vs the pipeline's batched transformers engine, and
the response cache, side by side in one run on the same GGUF model, the same prompts, greedy decoding,
at most 64 new tokens.

    .venv/bin/python bench/bench_generation.py [--prompts 64] [--batch-sizes 8,32,64] [--threads 2] [--dtype auto]

Each backend runs in its own subprocess so that its peak RSS (resource.getrusage) is its own. Tokens/s
counts generated tokens up to EOS (what the pipeline keeps), over wall time including tokenization.
Needs llama-cpp-python (the `bench` extra). Prints a markdown table for BENCHMARKS.md and a JSON line."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MAX_NEW_TOKENS = 64


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def conversations(n: int) -> list[list[dict]]:
    """Listener-reply prompts of the pipeline over the shipped seed dialogues (cycled to n)."""
    from empathy_dag.generate.prompts import load_template

    template = load_template("listener_reply")
    utterances = []
    for f in sorted((ROOT / "assets" / "seed").glob("situations_en_*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("speaker_utterance"):
                utterances.append((row["emotion"], row["speaker_utterance"]))
    return [template.render(emotion=e, utterance=u) for e, u in (utterances * (n // len(utterances) + 1))[:n]]


def base_model_dir(work: Path) -> Path:
    from empathy_dag.models import convert_gguf_to_safetensors, embedded_smollm2_gguf

    out = work / "base_model"
    if not (out / "config.json").is_file():
        convert_gguf_to_safetensors(embedded_smollm2_gguf(), out)
    return out


def phase_llama_cpp(args) -> dict:
    # No torch/transformers in this process: their OpenMP runtime and llama.cpp's segfault together.
    # The prompts were rendered by the parent with the engine's chat template (identical text).
    from llama_cpp import Llama

    from empathy_dag.models import embedded_smollm2_gguf

    prompts = json.loads((Path(args.work) / "prompts.json").read_text())
    llm = Llama(model_path=str(embedded_smollm2_gguf()), n_ctx=1024, n_threads=args.threads,
                n_threads_batch=args.threads, n_batch=512, verbose=False, seed=0)
    llm.create_completion(prompts[0], max_tokens=4, temperature=0.0)  # warm-up
    tokens, start = 0, time.perf_counter()
    for p in prompts:
        out = llm.create_completion(p, max_tokens=MAX_NEW_TOKENS, temperature=0.0, top_k=1)
        tokens += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - start
    return {"backend": "llama.cpp single stream", "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "peak_rss_mib": peak_rss_mib()}


def phase_engine(args) -> dict:
    from empathy_dag.generate.engine import GenerationSettings, load_generator

    convs = conversations(args.prompts)
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    gen = load_generator(base_model_dir(Path(args.work)), device="cpu", batch_size=args.batch_size,
                         threads=args.threads, cache_dir=args.cache_dir or None, dtype=args.dtype)
    gen.generate(convs[:2], settings, batch_size=2) if not args.cache_dir else None  # warm-up, uncached
    start = time.perf_counter()
    gen.generate(convs, settings)
    cold = time.perf_counter() - start
    stats = dict(gen.last_stats)
    result = {"backend": f"engine {stats['dtype']} batch {args.batch_size}", "batch_size": args.batch_size,
              "dtype": stats["dtype"], "tokens": stats["new_tokens"], "seconds": cold,
              "tokens_per_s": stats["new_tokens"] / cold, "peak_rss_mib": peak_rss_mib()}
    if args.cache_dir:
        start = time.perf_counter()
        gen.generate(convs, settings)
        warm = time.perf_counter() - start
        assert gen.last_stats["generated"] == 0, gen.last_stats
        result.update(backend=f"engine {stats['dtype']} batch {args.batch_size}, cache cold then warm",
                      warm_seconds=warm,
                      warm_speedup=cold / warm, peak_rss_mib=peak_rss_mib())
    return result


def run_phase(phase: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--prompts", str(args.prompts), "--threads",
           str(args.threads), "--work", args.work]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-sizes", default="8,32,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "empathy_dag_bench"))
    parser.add_argument("--phase", default="")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--dtype", default="auto", help="The engine's dtype (auto = what the pipeline picks "
                        "on this machine); the largest batch also runs in float32 for comparison.")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.phase:
        print(json.dumps(phase_llama_cpp(args) if args.phase == "llama" else phase_engine(args)))
        return

    model_dir = base_model_dir(Path(args.work))  # convert once, outside the timed phases
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
               for c in conversations(args.prompts)]
    (Path(args.work) / "prompts.json").write_text(json.dumps(prompts))
    rows = [run_phase("llama", args)]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    for b in sizes:
        rows.append(run_phase("engine", args, batch_size=b, dtype=args.dtype))
    if args.dtype != "float32":
        rows.append(run_phase("engine", args, batch_size=max(sizes), dtype="float32"))
    best = max(rows[1:], key=lambda r: r["tokens_per_s"])
    with tempfile.TemporaryDirectory() as cache:
        rows.append(run_phase("engine", args, batch_size=best["batch_size"], cache_dir=cache, dtype=best["dtype"]))
    ref = rows[0]["tokens_per_s"]
    print(f"\n{args.prompts} prompts, greedy, max {MAX_NEW_TOKENS} new tokens, {args.threads} threads, "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}\n")
    print("| backend | tokens | seconds | tokens/s | x llama.cpp | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} | "
              f"{r['tokens_per_s'] / ref:.2f} | {r['peak_rss_mib']:.0f} |")
    cached = rows[-1]
    print(f"\nwarm cache: {cached['warm_seconds'] * 1000:.1f} ms for {args.prompts} prompts vs "
          f"{cached['seconds']:.1f} s generating: {cached['warm_speedup']:.0f}x faster")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
