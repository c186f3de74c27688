"""Training measurably learns: a few SFT steps on a fixed tiny dataset lower the loss on held-out dialogues
(other situations), measured per item before and after; progress lines reach the log function."""

from __future__ import annotations

import polars as pl
import pytest

from empathy_dag.train.config import SFTTrainingConfig
from empathy_dag.train.data import sft_records, stable_sample
from empathy_dag.train.trainers import prepare_work_dir, run_sft
from tests.test_pairs_splits import seed_dialogues


def _fixed_split(n_train: int, n_val: int) -> tuple[list[dict], list[dict]]:
    """English seed dialogues, split by situation (pairs.splits), a stable sample of each split."""
    from empathy_dag.pairs.splits import assign_splits

    df = assign_splits(seed_dialogues().filter(pl.col("language") == "en")).sort("dialogue_id")
    train = stable_sample(df.filter(pl.col("split") == "train"), "dialogue_id", n_train)
    val = stable_sample(df.filter(pl.col("split") == "validation"), "dialogue_id", n_val)
    assert not set(train["situation_id"]) & set(val["situation_id"])  # held out: other situations
    return sft_records(train), sft_records(val)


@pytest.mark.slow
def test_a_few_sft_steps_lower_held_out_loss(tmp_path, base_model_dir):
    train, val = _fixed_split(32, 12)
    cfg = SFTTrainingConfig(
        max_steps=6, per_device_train_batch_size=4, max_length=64, save_steps=100, evals_per_run=2
    )
    lines: list[str] = []
    result = run_sft(
        base_model_dir,
        train,
        cfg,
        out_dir=tmp_path / "sft",
        work_dir=prepare_work_dir(tmp_path / "work", "k"),
        eval_records=val,
        log=lines.append,
    )

    held = result.heldout
    before, after, change = held["eval_loss_before"], held["eval_loss_after"], held["eval_loss_change"]
    measured = 12 - held["n_eval_items_dropped_by_truncation"]  # prompts longer than max_length go
    assert (
        measured >= 8 and before["n"] == after["n"] == change["n"] == measured and result.eval_records == 12
    )
    assert after["mean"] < before["mean"]
    assert change["ci_high"] < 0  # the whole 95% interval of the paired change is a decrease
    assert change["items_improved"] > 6
    # the trainer evaluated the validation split during the run too (the loss curve's eval line)
    assert [s for s, _ in result.eval_losses()] == [3, 6]

    # progress where users look: one line per logging step with step/total, loss, lr, speed, ETA
    train_lines = [line for line in lines if line.startswith("sft step ") and " | loss " in line]
    eval_lines = [line for line in lines if line.startswith("sft step ") and " | eval_loss " in line]
    assert len(train_lines) == 6 and train_lines[0].startswith("sft step 1/6 (17%) | loss ")
    assert all(" | lr " in s and " tok/s" in s and " | ETA " in s for s in train_lines), train_lines
    assert [s.split(" | ")[0] for s in eval_lines] == ["sft step 3/6 (50%)", "sft step 6/6 (100%)"], (
        eval_lines
    )
    assert any(line.startswith(f"sft held-out loss on {measured} validation dialogues") for line in lines)


@pytest.mark.slow
def test_dpo_without_evals_during_the_run_still_measures_held_out_before_and_after(tmp_path, base_model_dir):
    """evals_per_run=0 (the demo's DPO): trl gets no eval dataset (so no reference pass over it and no eval
    entries in the log), and the held-out reward accuracy is still measured on every validation pair."""
    from empathy_dag.train.config import DPOTrainingConfig
    from empathy_dag.train.data import dpo_record
    from empathy_dag.train.trainers import run_dpo

    train, val = _fixed_split(8, 6)
    sft = run_sft(
        base_model_dir,
        train,
        SFTTrainingConfig(
            max_steps=1, per_device_train_batch_size=4, max_length=64, save_steps=100, evals_per_run=0
        ),
        out_dir=tmp_path / "sft",
        work_dir=prepare_work_dir(tmp_path / "sft_work", "k"),
    )

    def pairs(records):
        replies = [r["completion"][0]["content"] for r in records]
        return [
            dpo_record(
                {
                    "prompt": r["prompt"][-1]["content"],
                    "chosen": replies[i],
                    "rejected": replies[(i + 1) % len(replies)],
                }
            )
            for i, r in enumerate(records)
        ]

    cfg = DPOTrainingConfig(
        max_steps=2, per_device_train_batch_size=4, max_length=64, save_steps=100, evals_per_run=0
    )
    result = run_dpo(
        base_model_dir,
        sft.adapter_dir,
        pairs(train),
        cfg,
        out_dir=tmp_path / "dpo",
        work_dir=prepare_work_dir(tmp_path / "dpo_work", "k"),
        eval_records=pairs(val),
    )
    assert result.global_step == 2 and not any("eval_loss" in h for h in result.log_history)
    accuracy = result.heldout["reward_accuracy_after"]
    assert accuracy["n"] == len(val) == result.eval_records
    assert 0.0 <= accuracy["ci_low"] <= accuracy["mean"] <= accuracy["ci_high"] <= 1.0
