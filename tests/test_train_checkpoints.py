"""SFT -> reference log-probs -> DPO on the embedded SmolLM2 with a handful of steps: adapters change,
DPO loss goes down, checkpoints are PEFT folders with card, plot and sha256; reference log-probs are
cached and equal freshly computed ones; a killed run resumes from its last checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from empathy_dag.models import sha256_tree
from tests.test_pairs_splits import all_emotions_tags, curated_stand_in, seed_dialogues

# Two pairs of mutually opposite emotions, English only, a few dialogues each.
EMOTIONS = ["amusement", "annoyance", "approval", "disapproval"]
TINY = {"max_length": 96, "per_device_train_batch_size": 4, "save_steps": 2}


def _tiny_data(emotions=EMOTIONS, per_emotion=6) -> pl.DataFrame:
    df = seed_dialogues().filter(pl.col("emotion").is_in(emotions) & (pl.col("language") == "en"))
    return df.sort("dialogue_id").group_by("emotion", maintain_order=True).head(per_emotion)


def _run_config(sft_steps=2, dpo_steps=3):
    return {
        "ops": {
            "sft_checkpoint": {"config": {**TINY, "max_steps": sft_steps}},
            "reference_logprobs": {"config": {"max_length": 96, "batch_size": 8}},
            "dpo_checkpoint": {"config": {**TINY, "max_steps": dpo_steps, "learning_rate": 2e-4}},
        }
    }


def _materialize_data(resources, frame, instance=None):
    from empathy_dag.defs.pairs.assets import dataset_splits, preference_pairs

    result = materialize(
        [curated_stand_in(frame), dataset_splits, preference_pairs],
        resources=resources,
        tags=all_emotions_tags(),
        run_config={"ops": {"preference_pairs": {"config": {"k": 2}}}},
        instance=instance,
    )
    assert result.success
    return result


def _training_assets(frame):
    from empathy_dag.defs.pairs.assets import dataset_splits, preference_pairs
    from empathy_dag.defs.train.assets import dpo_checkpoint, reference_logprobs, sft_checkpoint

    return [
        curated_stand_in(frame),
        dataset_splits,
        preference_pairs,
        sft_checkpoint,
        reference_logprobs,
        dpo_checkpoint,
    ]


@pytest.fixture
def trained(resources, base_model_dir):
    """One tiny pipeline run; the base model folder is the session's converted SmolLM2 (linked, not copied)."""
    from empathy_dag.defs.train.assets import dpo_checkpoint, reference_logprobs, sft_checkpoint

    resources["model_store"].folder("base_model").symlink_to(base_model_dir, target_is_directory=True)
    frame = _tiny_data(per_emotion=10)  # 10: both emotions of a pair have a validation dialogue
    instance = DagsterInstance.ephemeral()
    data = _materialize_data(resources, frame, instance)  # same instance: the checkpoints' lineage reads it
    result = materialize(
        _training_assets(frame),
        selection=[sft_checkpoint, reference_logprobs, dpo_checkpoint],
        resources=resources,
        run_config=_run_config(),
        instance=instance,
    )
    assert result.success
    result.run_log_messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    result.data_run_id = data.run_id
    return result, frame


def _adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_sft_then_dpo_checkpoints(trained, resources, base_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _ = trained
    sft_md = result.asset_materializations_for_node("sft_checkpoint")[0].metadata
    dpo_md = result.asset_materializations_for_node("dpo_checkpoint")[0].metadata
    ref_md = result.asset_materializations_for_node("reference_logprobs")[0].metadata
    sft_dir, dpo_dir = Path(sft_md["path"].value), Path(dpo_md["path"].value)

    # PEFT folders that load, with card, plot, and the sha256 of the weights in the metadata
    for folder, md in ((sft_dir, sft_md), (dpo_dir, dpo_md)):
        assert md["sha256"].value == sha256_tree(folder)
        assert (folder / "loss_curve.png").stat().st_size > 1000
        card = (folder / "README.md").read_text()
        assert (
            md["base_model_sha256"].value in card and "learning_rate" in card and "final logged loss" in card
        )
        assert md["loss_curve"].value.startswith("![") and "data:image/png;base64," in md["loss_curve"].value
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(base_model_dir)), str(folder)
        )
        assert model.active_adapter == "default"
    assert set(sft_md["emotions"].value) == set(EMOTIONS)
    # The card's text is on the checkpoint's page, and the page names the exact data it was trained on.
    assert sft_md["model_card"].value == (sft_dir / "README.md").read_text()
    consumed = dpo_md["consumed_materializations_json"].value
    pairs_read = {c["partition"]: c for c in consumed if c["asset"] == "preference_pairs"}
    # Every partition the data run wrote (the four emotions with data and the empty others), all from it.
    assert set(EMOTIONS) <= set(pairs_read) and {c["run_id"] for c in pairs_read.values()} == {
        result.data_run_id
    }
    assert all(pairs_read[e]["content_hash"] and pairs_read[e]["data_version"] for e in EMOTIONS)
    assert {c["asset"] for c in consumed} >= {"preference_pairs", "reference_logprobs", "sft_checkpoint"}
    assert dpo_md["input_run_preference_pairs"].run_id == result.data_run_id
    assert f"/runs/{result.data_run_id}" in dpo_md["consumed_materializations"].value
    assert {c["asset"] for c in sft_md["consumed_materializations_json"].value} == {"dataset_splits"}

    # held-out numbers before and after training, each with its n (validation split)
    assert (
        0
        < sft_md["eval_loss_before_n"].value
        == sft_md["eval_loss_after_n"].value
        <= sft_md["eval_records"].value
    )
    assert sft_md["eval_loss_after"].value != sft_md["eval_loss_before"].value
    assert "eval_loss_change" in sft_md["heldout"].value and "[" in sft_md["eval_loss_change_ci95"].value
    assert dpo_md["reward_accuracy_before"].value == 0.0  # policy == reference before DPO
    assert dpo_md["reward_accuracy_after_n"].value == dpo_md["eval_records"].value > 0
    assert 0.0 <= dpo_md["reward_accuracy_after"].value <= 1.0 and "reward_margin_after" in dpo_md
    assert "Held-out (validation split)" in (sft_dir / "README.md").read_text()
    # training progress reaches the run's log from the Pipes subprocess
    logged = result.run_log_messages
    assert any("sft step 2/2 (100%) | loss " in m and "ETA" in m for m in logged)
    assert any(m.startswith("dpo step 3/3 (100%)") for m in logged)
    assert any("dpo held-out reward accuracy on" in m for m in logged)

    # SFT moved the adapter away from its init (LoRA B starts at zero); DPO moved it further
    sft_w, dpo_w = _adapter_tensors(sft_dir), _adapter_tensors(dpo_dir)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in sft_w.items())
    assert sft_w.keys() == dpo_w.keys()
    assert any(not torch.equal(sft_w[k], dpo_w[k]) for k in sft_w)

    # DPO starts at log(2) (policy == cached reference: the cache matches trl's own log-probs) ...
    assert dpo_md["first_loss"].value == pytest.approx(math.log(2), abs=2e-3)
    assert dpo_md["steps"].value == 3 and ref_md["computed"].value == ref_md["pairs"].value > 0
    # ... and the DPO loss over all training pairs is lower with the trained adapter than at the start (log 2)
    from empathy_dag.train.data import dpo_record
    from empathy_dag.train.refcache import compute_reference_logprobs, load_reference_model

    parquet = Path(resources["parquet_io_manager"].base_dir)
    ref = pl.read_parquet(parquet / "reference_logprobs.parquet")
    pairs = pl.concat([pl.read_parquet(parquet / "preference_pairs" / f"{e}.parquet") for e in EMOTIONS])
    by_id = {r["pair_id"]: r for r in pairs.iter_rows(named=True)}
    policy, tok = load_reference_model(base_model_dir, dpo_dir)
    chosen, rejected = compute_reference_logprobs(
        policy, tok, [dpo_record(by_id[p]) for p in ref["pair_id"]], max_length=96
    )
    margin = (torch.tensor(chosen) - torch.tensor(ref["ref_chosen_logps"].to_list())) - (
        torch.tensor(rejected) - torch.tensor(ref["ref_rejected_logps"].to_list())
    )
    beta = dpo_md["hyperparameters"].value["beta"]
    dpo_loss = float(-torch.nn.functional.logsigmoid(beta * margin).mean())
    assert dpo_loss < math.log(2) - 1e-4
    # finished runs leave no trainer checkpoints behind
    work = Path(resources["model_store"].root) / "work"
    assert not any(work.rglob("checkpoint-*"))


@pytest.mark.slow
def test_reference_logprobs_cache(trained, resources, base_model_dir):
    from empathy_dag.defs.train.assets import reference_logprobs
    from empathy_dag.train.data import dpo_record
    from empathy_dag.train.refcache import compute_reference_logprobs, load_reference_model

    _, frame = trained
    store = resources["model_store"]
    parquet = Path(resources["parquet_io_manager"].base_dir)
    first = pl.read_parquet(parquet / "reference_logprobs.parquet")

    # cached values equal freshly computed ones (other batch size, so other padding)
    pairs = pl.concat([pl.read_parquet(parquet / "preference_pairs" / f"{e}.parquet") for e in EMOTIONS])
    pairs = pairs.filter(pl.col("split") == "train")
    by_id = {r["pair_id"]: r for r in pairs.iter_rows(named=True)}
    model, tok = load_reference_model(base_model_dir, store.folder("sft_checkpoint"))
    sample = first.head(6)
    chosen, rejected = compute_reference_logprobs(
        model, tok, [dpo_record(by_id[p]) for p in sample["pair_id"]], max_length=96, batch_size=1
    )
    assert sample["ref_chosen_logps"].to_list() == pytest.approx(chosen, abs=1e-3)
    assert sample["ref_rejected_logps"].to_list() == pytest.approx(rejected, abs=1e-3)

    # new data: only the new pairs are computed, the old ones come from the cache unchanged
    # enough per emotion that train rows remain after the per-emotion test minimum (2) is topped up
    bigger = pl.concat([frame, _tiny_data(["optimism", "disappointment"], per_emotion=8)])
    _materialize_data(resources, bigger)
    again = materialize(
        _training_assets(bigger),
        selection=[reference_logprobs],
        resources=resources,
        run_config={"ops": {"reference_logprobs": {"config": {"max_length": 96}}}},
    )
    assert again.success
    md = again.asset_materializations_for_node("reference_logprobs")[0].metadata
    second = pl.read_parquet(parquet / "reference_logprobs.parquet")
    assert md["cached"].value == first.height
    assert md["computed"].value == second.height - first.height > 0
    joined = first.join(second, on="pair_key", suffix="_again")
    assert joined.height == first.height
    assert (joined["ref_chosen_logps"] == joined["ref_chosen_logps_again"]).all()
