"""Generation throughput: llama.cpp single stream, llama.cpp with N parallel sequences (its batched C API,
what `llama-server --parallel N` does) and the pipeline's batched transformers engine, and the response
cache, side by side in one run on the same GGUF model, the same prompts, greedy decoding, at most 64 new
tokens.

    .venv/bin/python bench/bench_generation.py [--prompts 64] [--parallels 8,16,32] [--batch-sizes 8,32,64]
        [--threads 2] [--dtype auto]

llama.cpp is the Makefile's portable build (AVX2/FMA/F16C, no AVX512, no AMX). To compare on an AVX2-only
machine's terms on a CPU with more, limit torch too: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2 (dtype auto then measures bf16 slower and picks float32).

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
    llm = Llama(
        model_path=str(embedded_smollm2_gguf()),
        n_ctx=1024,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_batch=512,
        verbose=False,
        seed=0,
    )
    llm.create_completion(prompts[0], max_tokens=4, temperature=0.0)  # warm-up
    tokens, start = 0, time.perf_counter()
    for p in prompts:
        out = llm.create_completion(p, max_tokens=MAX_NEW_TOKENS, temperature=0.0, top_k=1)
        tokens += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - start
    return {
        "backend": "llama.cpp single stream",
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def phase_llama_batched(args) -> dict:
    """llama.cpp decoding `args.parallel` sequences at once through its C API (llama_batch with one seq_id
    per sequence, as llama.cpp's `batched` example and `llama-server --parallel N` do): a free slot takes
    the next prompt (prefill in the same decode call as the other slots' next tokens), a sequence ends at
    an end-of-generation token or MAX_NEW_TOKENS, greedy (argmax of the logits) like the other phases."""
    import llama_cpp as lc
    import numpy as np

    from empathy_dag.models import embedded_smollm2_gguf

    prompts = json.loads((Path(args.work) / "prompts.json").read_text())
    n_par = args.parallel
    lc.llama_backend_init()
    model = lc.llama_model_load_from_file(
        str(embedded_smollm2_gguf()).encode(), lc.llama_model_default_params()
    )
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)

    def tokenize(text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (lc.llama_token * (len(raw) + 8))()
        n = lc.llama_tokenize(
            vocab, raw, len(raw), buf, len(buf), False, True
        )  # no BOS added, parse specials
        return list(buf[:n])

    tokenized = [tokenize(p) for p in prompts]
    per_seq_ctx = max(len(t) for t in tokenized) + MAX_NEW_TOKENS + 8
    params = lc.llama_context_default_params()
    params.n_ctx = per_seq_ctx * n_par
    params.n_batch = max(512, sum(sorted(len(t) for t in tokenized)[-n_par:]) + n_par)
    params.n_ubatch = 512
    params.n_seq_max = n_par
    params.n_threads = params.n_threads_batch = args.threads
    params.kv_unified = True
    params.no_perf = True
    ctx = lc.llama_init_from_model(model, params)
    memory = lc.llama_get_memory(ctx)
    batch = lc.llama_batch_init(params.n_batch, 0, 1)

    def add(token: int, pos: int, seq: int, logits: bool) -> int:
        i = batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens = i + 1
        return i

    def run(todo: list[list[int]]) -> int:
        queue, slots, tokens = list(todo), [None] * n_par, 0
        while queue or any(slots):
            batch.n_tokens = 0
            rows = {}
            for s in range(n_par):
                if slots[s] is None and queue:
                    prompt = queue.pop(0)
                    lc.llama_memory_seq_rm(memory, s, -1, -1)
                    for j, t in enumerate(prompt):
                        idx = add(t, j, s, j == len(prompt) - 1)
                    slots[s] = {"pos": len(prompt), "n": 0}
                    rows[s] = idx
                elif slots[s] is not None:
                    rows[s] = add(slots[s]["next"], slots[s]["pos"], s, True)
                    slots[s]["pos"] += 1
            if lc.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed (KV cache full?)")
            for s, idx in rows.items():
                logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, idx), shape=(n_vocab,))
                token = int(logits.argmax())
                if lc.llama_vocab_is_eog(vocab, token):
                    slots[s] = None
                    continue
                tokens += 1
                slots[s]["n"] += 1
                slots[s]["next"] = token
                if slots[s]["n"] >= MAX_NEW_TOKENS:
                    slots[s] = None
        return tokens

    run(tokenized[:2])  # warm-up
    start = time.perf_counter()
    tokens = run(tokenized)
    seconds = time.perf_counter() - start
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return {
        "backend": f"llama.cpp batched, {n_par} parallel sequences",
        "parallel": n_par,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def phase_engine(args) -> dict:
    from empathy_dag.generate.engine import GenerationSettings, load_generator

    convs = conversations(args.prompts)
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    gen = load_generator(
        base_model_dir(Path(args.work)),
        device="cpu",
        batch_size=args.batch_size,
        threads=args.threads,
        cache_dir=args.cache_dir or None,
        dtype=args.dtype,
    )
    gen.generate(convs[:2], settings, batch_size=2) if not args.cache_dir else None  # warm-up, uncached
    start = time.perf_counter()
    gen.generate(convs, settings)
    cold = time.perf_counter() - start
    stats = dict(gen.last_stats)
    result = {
        "backend": f"engine {stats['dtype']} batch {args.batch_size}",
        "batch_size": args.batch_size,
        "dtype": stats["dtype"],
        "tokens": stats["new_tokens"],
        "seconds": cold,
        "tokens_per_s": stats["new_tokens"] / cold,
        "peak_rss_mib": peak_rss_mib(),
    }
    if args.cache_dir:
        start = time.perf_counter()
        gen.generate(convs, settings)
        warm = time.perf_counter() - start
        assert gen.last_stats["generated"] == 0, gen.last_stats
        result.update(
            backend=f"engine {stats['dtype']} batch {args.batch_size}, cache cold then warm",
            warm_seconds=warm,
            warm_speedup=cold / warm,
            peak_rss_mib=peak_rss_mib(),
        )
    return result


def run_phase(phase: str, args, **extra) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--prompts",
        str(args.prompts),
        "--threads",
        str(args.threads),
        "--work",
        args.work,
    ]
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
    parser.add_argument("--parallels", default="8,16,32", help="llama.cpp batched: parallel sequences to try")
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--no-cache-row", action="store_true", help="skip the response-cache row")
    parser.add_argument("--cache-dir", default="")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="The engine's dtype (auto = what the pipeline picks "
        "on this machine); the largest batch also runs in float32 for comparison.",
    )
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.phase:
        phases = {"llama": phase_llama_cpp, "llama-batched": phase_llama_batched, "engine": phase_engine}
        print(json.dumps(phases[args.phase](args)))
        return

    model_dir = base_model_dir(Path(args.work))  # convert once, outside the timed phases
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [
        tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        for c in conversations(args.prompts)
    ]
    (Path(args.work) / "prompts.json").write_text(json.dumps(prompts))
    rows = [run_phase("llama", args)]
    for n in [int(x) for x in args.parallels.split(",") if x]:
        rows.append(run_phase("llama-batched", args, parallel=n))
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    for b in sizes:
        rows.append(run_phase("engine", args, batch_size=b, dtype=args.dtype))
    engine_rows = [r for r in rows if r["backend"].startswith("engine")]
    if args.dtype != "float32" and all(r["dtype"] != "float32" for r in engine_rows):
        rows.append(run_phase("engine", args, batch_size=max(sizes), dtype="float32"))
    engine_rows = [r for r in rows if r["backend"].startswith("engine")]
    best = max(engine_rows, key=lambda r: r["tokens_per_s"])
    if not args.no_cache_row:
        with tempfile.TemporaryDirectory() as cache:
            rows.append(
                run_phase("engine", args, batch_size=best["batch_size"], cache_dir=cache, dtype=best["dtype"])
            )
    ref = rows[0]["tokens_per_s"]
    batched = [r for r in rows if r["backend"].startswith("llama.cpp batched")]
    best_llama = max(batched, key=lambda r: r["tokens_per_s"])["tokens_per_s"] if batched else ref
    from _hardware import cpu_info

    hw = cpu_info()
    print(
        f"\n{args.prompts} prompts, greedy, max {MAX_NEW_TOKENS} new tokens, {args.threads} threads; CPU "
        f"{hw['cpu']} ({hw['cores']} cores, flags {', '.join(hw['flags'])}); torch ISA env: "
        f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '-')} "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}; load average {hw['load_average']}\n"
    )
    print(
        "| backend | tokens | seconds | tokens/s | x llama.cpp single | x best llama.cpp batched | peak RSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} | "
            f"{r['tokens_per_s'] / ref:.2f} | {r['tokens_per_s'] / best_llama:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    if not args.no_cache_row:
        cached = rows[-1]
        print(
            f"\nwarm cache: {cached['warm_seconds'] * 1000:.1f} ms for {args.prompts} prompts vs "
            f"{cached['seconds']:.1f} s generating: {cached['warm_speedup']:.0f}x faster"
        )
    print(json.dumps({"rows": rows, "hardware": hw}))


if __name__ == "__main__":
    main()
