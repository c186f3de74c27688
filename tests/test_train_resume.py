"""A training run killed mid-way resumes from its last complete trainer checkpoint instead of starting over;
a kill during a checkpoint save leaves no half-written `checkpoint-N` that a resume would pick."""

from __future__ import annotations

import json

import pytest
from transformers import Trainer

from empathy_dag.train.config import SFTTrainingConfig
from empathy_dag.train.data import sft_records
from empathy_dag.train.trainers import CHECKPOINT_STAGING, last_checkpoint, prepare_work_dir, run_sft
from tests.test_train_checkpoints import _tiny_data


class Killed(RuntimeError):
    pass


@pytest.mark.slow
def test_run_killed_while_saving_resumes_from_last_complete_checkpoint(tmp_path, base_model_dir, monkeypatch):
    records = sft_records(_tiny_data(per_emotion=3))
    cfg = SFTTrainingConfig(max_steps=4, save_steps=2, per_device_train_batch_size=2, max_length=64)
    out_dir = tmp_path / "sft"
    work = prepare_work_dir(tmp_path / "work", "inputs-a")

    # The process dies in the middle of saving checkpoint-4: weights written, optimizer state not yet.
    real_save = Trainer._save_optimizer_and_scheduler

    def dies_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise Killed("killed while saving checkpoint-4")
        return real_save(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", dies_at_step_4)
    with pytest.raises(Killed):
        run_sft(base_model_dir, records, cfg, out_dir=out_dir, work_dir=work)
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", real_save)
    assert not (work / "checkpoint-4").exists()  # the half-written save stayed in the staging folder
    assert (work / CHECKPOINT_STAGING / "checkpoint-4" / "adapter_model.safetensors").is_file()
    assert last_checkpoint(work).name == "checkpoint-2" and not out_dir.exists()

    lines: list[str] = []
    result = run_sft(base_model_dir, records, cfg, out_dir=out_dir, work_dir=work, log=lines.append)
    assert result.resumed_from_step == 2
    assert result.steps_this_run == 2 and result.global_step == 4
    assert any("resuming at step 2" in line for line in lines)
    # the loss history before the kill survives the restart
    assert [s for s, _ in result.losses()] == [1, 2, 3, 4]
    assert (out_dir / "adapter_model.safetensors").is_file() and not work.exists()

    # other inputs: a stale work folder is dropped, the run starts fresh
    stale = prepare_work_dir(tmp_path / "work", "inputs-a")
    (stale / "checkpoint-2").mkdir()
    fresh = prepare_work_dir(tmp_path / "work", "inputs-b")
    assert not stale.exists() and last_checkpoint(fresh) is None


def test_incomplete_checkpoint_folders_are_skipped_and_removed(tmp_path):
    """What an older, unstaged save (or a full disk) left behind: an empty `checkpoint-6` and one whose
    trainer state is cut short. Resume takes the newest complete one; the broken ones go."""
    work = tmp_path / "work"
    good = work / "checkpoint-4"
    good.mkdir(parents=True)
    (good / "adapter_model.safetensors").write_bytes(b"weights")
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (work / "checkpoint-6").mkdir()
    truncated = work / "checkpoint-8"
    truncated.mkdir()
    (truncated / "adapter_model.safetensors").write_bytes(b"weights")
    (truncated / "trainer_state.json").write_text('{"global_st')
    (work / CHECKPOINT_STAGING).mkdir()  # not a checkpoint name: ignored
    lines: list[str] = []
    assert last_checkpoint(work, log=lines.append) == good
    assert not (work / "checkpoint-6").exists() and not truncated.exists()
    assert len(lines) == 2 and all("incomplete trainer checkpoint" in line for line in lines)
    assert last_checkpoint(tmp_path / "missing") is None
