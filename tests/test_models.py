"""The embedded defaults are real models: SmolLM2 converted from GGUF, MiniLM from its package."""

import json
import time

import torch

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
    inputs = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


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
    assert pick_dtype("auto", "cpu") == "bfloat16"
    # The engine loads the weights in the dtype auto picks, and says which in its stats.
    forget_loaded_models()
    generator = load_generator(base_model_dir, device="cpu", cache_dir=None)
    assert next(generator.model.parameters()).dtype == torch.bfloat16
    from empathy_dag.generate.engine import GenerationSettings

    replies = generator.generate([[{"role": "user", "content": "I finally got my diagnosis."}]],
                                 GenerationSettings(max_new_tokens=8, do_sample=False))
    assert replies[0].strip() and generator.last_stats["dtype"] == "bfloat16"
    forget_loaded_models()
