"""A training run killed mid-way resumes from its last complete trainer checkpoint instead of starting over;
a kill during a checkpoint save leaves no half-written `checkpoint-N` that a resume would pick."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import Trainer

from empathy_dag.train.config import SFTTrainingConfig
from empathy_dag.train.data import sft_records
from empathy_dag.train.trainers import CHECKPOINT_STAGING, last_checkpoint, prepare_work_dir, run_sft
from tests.test_train_checkpoints import _tiny_data


class Killed(RuntimeError):
    pass


# A training process that stalls inside the save of checkpoint-4 (weights written to the staging folder, the
# optimizer state not yet), so the parent can SIGKILL it at exactly that write point.
TRAIN_CHILD = """
import sys, time
from pathlib import Path
from transformers import Trainer
from empathy_dag.train.config import SFTTrainingConfig
from empathy_dag.train.data import sft_records
from empathy_dag.train.trainers import run_sft
from tests.test_train_checkpoints import _tiny_data

base_dir, out_dir, work, marker = map(Path, sys.argv[1:5])
real_save = Trainer._save_optimizer_and_scheduler

def stalls_at_step_4(self, output_dir):
    if self.state.global_step == 4:
        marker.write_text(str(output_dir))
        time.sleep(600)
    return real_save(self, output_dir)

Trainer._save_optimizer_and_scheduler = stalls_at_step_4
cfg = SFTTrainingConfig(max_steps=4, save_steps=2, per_device_train_batch_size=2, max_length=64)
run_sft(base_dir, sft_records(_tiny_data(per_emotion=3)), cfg, out_dir=out_dir, work_dir=work)
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_save_resumes_from_the_last_complete_one(tmp_path, base_model_dir):
    """A real process, killed with SIGKILL in the middle of writing checkpoint-4: the next run resumes from
    checkpoint-2 and finishes, and no half-written checkpoint is ever picked."""
    records = sft_records(_tiny_data(per_emotion=3))
    cfg = SFTTrainingConfig(max_steps=4, save_steps=2, per_device_train_batch_size=2, max_length=64)
    out_dir, marker = tmp_path / "sft", tmp_path / "saving"
    work = prepare_work_dir(tmp_path / "work", "inputs-a")
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", TRAIN_CHILD, str(base_model_dir), str(out_dir), str(work), str(marker)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert child.poll() is None, f"the child exited before the save: {child.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the child never reached the save of checkpoint-4"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not (work / "checkpoint-4").exists() and last_checkpoint(work).name == "checkpoint-2"
    assert not out_dir.exists()

    result = run_sft(base_model_dir, records, cfg, out_dir=out_dir, work_dir=work)
    assert result.resumed_from_step == 2 and result.steps_this_run == 2 and result.global_step == 4
    assert (out_dir / "adapter_model.safetensors").is_file() and not work.exists()


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
