"""Shareable models: a LoRA adapter merged into full weights loads with plain transformers and
generates what base + adapter generate; the cards parse with `ModelCard.load` and name the hub base
model; nothing is pushed to the hub unless asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny_adapter(base_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with random (non-zero) weights on two projections, with the card training writes:
    merging it must change the model, and the merged model must equal base + adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from empathy_dag.models import sha256_tree
    from empathy_dag.train.card import model_card
    from empathy_dag.train.trainers import TrainingResult

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    out = tmp_path_factory.mktemp("adapter") / "dpo_checkpoint"
    peft_model.save_pretrained(out)
    result = TrainingResult(
        adapter_dir=out,
        sha256=sha256_tree(out),
        log_history=[{"step": 1, "loss": 0.69}],
        global_step=1,
        resumed_from_step=0,
        steps_this_run=1,
        seconds=1.0,
        train_records=4,
        device="cpu",
        heldout={"reward_accuracy_after": {"n": 10, "mean": 0.6, "ci_low": 0.31, "ci_high": 0.83}},
    )
    card = model_card(
        title="Empathy LoRA DPO (EmPO)",
        kind="dpo",
        base_model={"path": str(base_model_dir), "sha256": sha256_tree(base_model_dir)},
        inputs={"train_pairs": 4},
        hyperparameters={"beta": 0.05},
        result=result,
        extra={"input_fingerprint": "f" * 64, "languages": ["en", "ja"]},
    )
    (out / "README.md").write_text(card)
    return out


def test_adapter_card_parses_and_names_the_hub_base_model(tiny_adapter):
    from huggingface_hub import ModelCard

    card = ModelCard.load(tiny_adapter / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data["license"] == "apache-2.0" and data["language"] == ["en", "ja"]
    assert data["library_name"] == "peft" and data["datasets"] == ["empathy_dag_dialogues"]
    assert data["training_data_fingerprint"] == "f" * 64
    (result,) = card.data.eval_results
    assert result.metric_type == "reward_accuracy_after" and result.metric_value == 0.6
    assert result.metric_args == {"n": 10, "ci_low": 0.31, "ci_high": 0.83}
    assert "de-quantized" in card.text and "Held-out (validation split)" in card.text


def test_merged_model_loads_with_transformers_and_equals_base_plus_adapter(
    base_model_dir, tiny_adapter, tmp_path, monkeypatch
):
    import torch
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from empathy_dag.train import merge

    pushed = []
    monkeypatch.setattr(merge, "push_folder_to_hub", lambda *a, **k: pushed.append(a) or "url")
    rows = [
        {"metric": "judge_score", "value": 3.2, "n": 40, "ci_low": 2.9, "ci_high": 3.5, "verdict": "better"}
    ]
    out = tmp_path / "merged_model"
    info = merge.export_merged(
        base_model_dir,
        tiny_adapter,
        out,
        title="Empathy DPO merged",
        leaderboard_rows=rows,
        log=lambda m: None,
    )
    assert pushed == [] and info["pushed_to"] == ""  # push_to_hub is opt-in
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    assert info["dtype"] == "float32"  # the base's saved dtype, no cast

    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "I lost my keys today."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        generated = merged.generate(**prompt, max_new_tokens=4, do_sample=False)
        reference = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(base_model_dir)), str(tiny_adapter)
        ).eval()
        plain = AutoModelForCausalLM.from_pretrained(str(base_model_dir)).eval()
        ids = prompt["input_ids"]
        merged_logits, ref_logits, base_logits = (m(ids).logits[0, -1] for m in (merged, reference, plain))
    assert generated.shape[1] > ids.shape[1]  # it generates
    assert torch.allclose(merged_logits, ref_logits, atol=1e-3)  # merged == base + adapter
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)  # and the adapter mattered

    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert (
        data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and data["library_name"] == "transformers"
    )
    assert data["training_data_fingerprint"] == "f" * 64 and data["language"] == ["en", "ja"]
    (metric,) = card.data.eval_results
    assert metric.metric_type == "judge_score" and metric.metric_args["ci_low"] == 2.9
    assert json.loads((out / "merge.json").read_text())["adapter_sha256"] == info["adapter_sha256"]


def test_push_refuses_offline_and_bad_repo_ids(tmp_path, monkeypatch):
    from empathy_dag.train.merge import push_folder_to_hub

    with pytest.raises(ValueError, match="owner/name"):
        push_folder_to_hub(tmp_path, "no-owner")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=0"):
        push_folder_to_hub(tmp_path, "someone/model")


def test_merge_refuses_a_folder_without_adapter(base_model_dir, tmp_path):
    from empathy_dag.train.merge import merge_adapter

    with pytest.raises(FileNotFoundError, match="no PEFT adapter"):
        merge_adapter(base_model_dir, tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _link_model(src: Path, dst: Path) -> None:
    """A model-store folder made of links to a model's files: no copy of the weights per test."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)


def test_merged_model_asset_merges_the_store_adapter_without_pushing(
    resources, data_root, base_model_dir, tiny_adapter
):
    import duckdb
    from dagster import materialize

    from empathy_dag.definitions import defs
    from empathy_dag.defs.train.assets import leaderboard_rows_for, merged_model
    from empathy_dag.models import sha256_tree

    models = data_root / "models"
    _link_model(base_model_dir, models / "base_model")
    _link_model(tiny_adapter, models / "dpo_checkpoint")
    assert "merged_model" not in {
        k.to_user_string() for k in defs.resolve_job_def("main_job").asset_layer.executable_asset_keys
    }  # sharing is a step of its own
    # A leaderboard with one row for this adapter's weights and one for another model's.
    sha = sha256_tree(tiny_adapter)
    with duckdb.connect(str(data_root / "warehouse.duckdb")) as conn:
        conn.execute(
            "CREATE TABLE main.leaderboard (system TEXT, model_sha256 TEXT, emotion TEXT, metric TEXT, "
            "value DOUBLE, n INT, ci_low DOUBLE, ci_high DOUBLE, verdict TEXT, delta DOUBLE, "
            "delta_ci_low DOUBLE, delta_ci_high DOUBLE, p_adjusted DOUBLE)"
        )
        conn.execute(
            "INSERT INTO main.leaderboard VALUES ('dpo', ?, 'all', 'judge_score', 3.1, 40, 2.8, 3.4, "
            "'inconclusive', 0.1, -0.2, 0.4, 0.5), ('sft', 'other', 'all', 'judge_score', 2.0, 40, 1.7, "
            "2.3, NULL, NULL, NULL, NULL, NULL)",
            [sha],
        )
    assert [r["value"] for r in leaderboard_rows_for(resources["warehouse"], sha)] == [3.1]

    result = materialize([merged_model], resources=resources)
    meta = result.asset_materializations_for_node("merged_model")[0].metadata
    assert meta["pushed_to"].value == "" and meta["adapter_sha256"].value == sha
    assert meta["leaderboard_metrics"].value == 1
    out = Path(meta["path"].value)
    assert meta["sha256"].value == sha256_tree(out) and (out / "README.md").is_file()
    assert "| judge_score | 3.1 | 40 | [2.8, 3.4] | inconclusive |" in (out / "README.md").read_text()


def test_training_step_card_keeps_the_dpo_extras_out_of_the_header(base_model_dir, tmp_path):
    """What `train.steps` writes after a DPO run: typed metadata extras (md dicts, lists) go into the
    materialization, the card header only takes the fingerprint and languages from them."""
    from huggingface_hub import ModelCard

    from empathy_dag.train.steps import checkpoint_metadata, md
    from empathy_dag.train.trainers import TrainingResult

    result = TrainingResult(
        adapter_dir=tmp_path,
        sha256="s" * 64,
        log_history=[{"step": 1, "loss": 0.7}],
        global_step=1,
        resumed_from_step=0,
        steps_this_run=1,
        seconds=0.5,
        train_records=2,
        device="cpu",
    )
    extra = {
        "emotions": ["joy"],
        "input_fingerprint": "abc",
        "languages": ["ja"],
        "metrics": md({"reward_accuracy": 0.5}, "json"),
        "final_reward_margin": md(0.1, "float"),
    }
    meta = checkpoint_metadata(
        out_dir=tmp_path,
        result=result,
        base={"path": str(base_model_dir), "sha256": "b" * 64},
        inputs={},
        hyperparameters={"beta": 0.05},
        title="DPO",
        kind="dpo",
        extra=extra,
        published="",
    )
    assert meta["final_reward_margin"] == md(0.1, "float") and meta["emotions"] == ["joy"]
    data = ModelCard.load(tmp_path / "README.md").data.to_dict()
    assert data["training_data_fingerprint"] == "abc" and data["language"] == ["ja"]
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "dpo" in data["tags"]
