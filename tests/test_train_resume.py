"""A training run killed mid-way resumes from its last trainer checkpoint instead of starting over."""

from __future__ import annotations

import pytest
from transformers import TrainerCallback

from empathy_dag.train.config import SFTTrainingConfig
from empathy_dag.train.data import sft_records
from empathy_dag.train.trainers import last_checkpoint, prepare_work_dir, run_sft
from tests.test_train_checkpoints import _tiny_data


class Killed(RuntimeError):
    pass


class KillAfter(TrainerCallback):
    """Simulates a killed process: dies at the start of the step after `step`, once its checkpoint exists."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise Killed(f"killed after step {state.global_step}")


@pytest.mark.slow
def test_killed_sft_run_resumes_from_last_checkpoint(tmp_path, base_model_dir):
    records = sft_records(_tiny_data(per_emotion=3))
    cfg = SFTTrainingConfig(max_steps=4, save_steps=2, per_device_train_batch_size=2, max_length=64)
    out_dir = tmp_path / "sft"
    work = prepare_work_dir(tmp_path / "work", "inputs-a")
    with pytest.raises(Killed):
        run_sft(base_model_dir, records, cfg, out_dir=out_dir, work_dir=work, callbacks=[KillAfter(2)])
    assert last_checkpoint(work).name == "checkpoint-2" and not out_dir.exists()

    result = run_sft(base_model_dir, records, cfg, out_dir=out_dir, work_dir=work)
    assert result.resumed_from_step == 2
    assert result.steps_this_run == 2 and result.global_step == 4
    # the loss history before the kill survives the restart
    assert [s for s, _ in result.losses()] == [1, 2, 3, 4]
    assert (out_dir / "adapter_model.safetensors").is_file() and not work.exists()

    # other inputs: a stale work folder is dropped, the run starts fresh
    stale = prepare_work_dir(tmp_path / "work", "inputs-a")
    (stale / "checkpoint-2").mkdir()
    fresh = prepare_work_dir(tmp_path / "work", "inputs-b")
    assert not stale.exists() and last_checkpoint(fresh) is None
