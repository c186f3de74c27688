"""The embedded defaults are real models: SmolLM2 converted from GGUF, MiniLM from its package."""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from empathy_dag import models
from empathy_dag.models import (
    convert_gguf_to_safetensors,
    embedded_minilm_dir,
    embedded_smollm2_gguf,
    load_causal_lm,
    sha256_tree,
)


def test_converted_base_model_is_plain_safetensors_and_generates(base_model_dir):
    files = {p.name for p in base_model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    config = json.loads((base_model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # trainable: transformers refuses GGUF-quantized models
    start = time.perf_counter()
    model, tokenizer = load_causal_lm(str(base_model_dir), device="cpu")
    load_seconds = time.perf_counter() - start
    assert load_seconds < 5  # vs ~15 s de-quantizing the GGUF file each time
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    msgs = [{"role": "user", "content": "My blood test results were normal today."}]
    inputs = tokenizer.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_conversion_is_reused_when_the_gguf_is_unchanged(base_model_dir):
    before = sha256_tree(base_model_dir)
    info = convert_gguf_to_safetensors(embedded_smollm2_gguf(), base_model_dir)
    assert info["reused"] is True and info["sha256"] == before


def test_embedded_minilm_folder():
    folder = embedded_minilm_dir()
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 6


def test_auto_dtype_is_bfloat16_only_where_the_hardware_has_it(monkeypatch, base_model_dir):
    from empathy_dag.generate.engine import forget_loaded_models, load_generator
    from empathy_dag.models import pick_dtype

    assert pick_dtype("float16", "cpu") == "float16"  # an explicit choice is kept
    assert pick_dtype("auto", "mps") == "float32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert pick_dtype("auto", "cpu") == "float32"  # emulated bf16 would be slower than float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    # The flags alone are not enough: the measured matmul has to agree (kernels limited to AVX2 do not).
    monkeypatch.setattr(models, "cpu_bf16_is_faster", lambda: False)
    assert pick_dtype("auto", "cpu") == "float32"
    monkeypatch.setattr(models, "cpu_bf16_is_faster", lambda: True)
    assert pick_dtype("auto", "cpu") == "bfloat16"
    # The engine loads the weights in the dtype auto picks, and says which in its stats.
    forget_loaded_models()
    generator = load_generator(base_model_dir, device="cpu", cache_dir=None)
    assert next(generator.model.parameters()).dtype == torch.bfloat16
    from empathy_dag.generate.engine import GenerationSettings

    replies = generator.generate(
        [[{"role": "user", "content": "I finally got my diagnosis."}]],
        GenerationSettings(max_new_tokens=8, do_sample=False),
    )
    assert replies[0].strip() and generator.last_stats["dtype"] == "bfloat16"
    forget_loaded_models()


def test_bf16_probe_says_no_when_onednn_is_limited_to_avx2():
    """On a CPU with AVX512-BF16, oneDNN limited to AVX2 (what an AVX2-only machine runs) emulates bfloat16:
    the measured probe must then prefer float32, although the CPU flags still say bf16."""
    import subprocess
    import sys

    if not torch.cpu._is_avx512_bf16_supported():
        pytest.skip("this CPU has no AVX512-BF16: nothing to limit")
    probe = "from empathy_dag.models import cpu_bf16_is_faster as f; print(f())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    limited = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert limited.stdout.strip() == "False"


def test_weight_hash_is_read_once_and_redone_when_a_file_changes(tmp_path, monkeypatch):
    import builtins
    import hashlib

    from empathy_dag import models

    monkeypatch.setenv(models.HASH_CACHE_ENV, str(tmp_path / "cache" / "hashes.json"))
    monkeypatch.setattr(models, "_TREE_HASHES", {})
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    expected = hashlib.sha256(b"model.safetensors" + b"a" * 4096).hexdigest()  # names and bytes, as before

    reads = []

    def counting_open(path, *args, **kwargs):
        reads.append(os.path.basename(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(models, "open", counting_open, raising=False)
    assert sha256_tree(folder) == expected and reads == ["model.safetensors"]
    monkeypatch.setattr(models, "_TREE_HASHES", {})  # a new process: only the cache file is left
    assert sha256_tree(folder) == expected and reads == ["model.safetensors"]  # not read again

    # Same size, same mtime, other bytes: the ctime (and inode of a replaced file) tell it changed.
    stat = weights.stat()
    replacement = folder / "new.tmp"
    replacement.write_bytes(b"b" * 4096)
    os.replace(replacement, weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sha256_tree(folder) == hashlib.sha256(b"model.safetensors" + b"b" * 4096).hexdigest()
    assert reads == ["model.safetensors", "model.safetensors"]

    # A garbled cache file is a cache miss, not an error.
    (tmp_path / "cache" / "hashes.json").write_text("{not json")
    monkeypatch.setattr(models, "_TREE_HASHES", {})
    assert sha256_tree(folder) == hashlib.sha256(b"model.safetensors" + b"b" * 4096).hexdigest()


def test_allow_hub_wins_over_an_inherited_offline_setting_and_is_undone_after(monkeypatch):
    import huggingface_hub.constants as hub_constants

    from empathy_dag import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what `make`, a shell profile or a Pipes step exports
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(models, "_ENV_BEFORE_ALLOW_HUB", None)
    models.hub_offline_by_default(allow_hub=True)
    assert not hub_constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "0"
    models.hub_offline_by_default(allow_hub=False)  # the next load that did not ask: offline again
    assert hub_constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"
    assert "TRANSFORMERS_OFFLINE" in os.environ


def test_makefile_leaves_the_hub_switch_to_the_config():
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    exported = [line for line in makefile.splitlines() if line.startswith("export ")]
    assert not [line for line in exported if "HF_HUB_OFFLINE" in line or "TRANSFORMERS_OFFLINE" in line]


def test_device_map_auto_only_with_several_gpus():
    from empathy_dag.models import device_placement

    assert device_placement("cuda", gpu_count=2) == {"device_map": "auto"}
    assert device_placement("cuda", gpu_count=1) == {} and device_placement("cpu", gpu_count=4) == {}
    assert device_placement("cuda:1", gpu_count=2) == {}  # a pinned GPU stays pinned


def test_base_model_keeps_a_bf16_checkpoint_in_bf16(base_model_dir, tmp_path):
    """A folder (or hub id) saved in bfloat16 is saved again in bfloat16 by `base_model`, not up-cast."""
    from dagster import materialize
    from safetensors import safe_open
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from empathy_dag.defs.generate.assets import base_model
    from empathy_dag.defs.profiles import local_resources
    from empathy_dag.resources import BaseModelConfig

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    tiny = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    source = tmp_path / "tiny_bf16"
    tiny.to(torch.bfloat16).save_pretrained(source, safe_serialization=True)
    tokenizer.save_pretrained(source)

    resources = {
        **local_resources(tmp_path / "data"),
        "base_model_config": BaseModelConfig(source=str(source)),
    }
    result = materialize([base_model], resources=resources)
    meta = result.asset_materializations_for_node("base_model")[0].metadata
    assert meta["dtype"].value == "bfloat16"
    with safe_open(str(Path(meta["path"].value) / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in list(f.keys())} == {"BF16"}
    assert json.loads((Path(meta["path"].value) / "source.json").read_text()) == {"source": str(source)}
