"""LoRA SFT and DPO with trl, resumable, writing PEFT adapter folders.

Pure functions of (base model folder, records, hyperparameters, folders): no Dagster here. Trainer
checkpoints go to a work folder keyed by a fingerprint of the inputs; a run that dies is resumed from
its last checkpoint by re-running with the same inputs, and a finished run removes its work folder,
so a later run with other inputs starts fresh."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from empathy_dag.models import (
    folder_written_aside,
    hub_offline_by_default,
    pick_device,
    sha256_tree,
    torch_dtype,
)


@dataclass
class TrainingResult:
    adapter_dir: Path
    sha256: str
    log_history: list[dict]
    global_step: int
    resumed_from_step: int
    steps_this_run: int
    seconds: float
    train_records: int
    device: str
    metrics: dict[str, float] = field(default_factory=dict)

    def losses(self) -> list[tuple[int, float]]:
        return [(int(h["step"]), float(h["loss"])) for h in self.log_history if "loss" in h and "step" in h]

    @property
    def first_loss(self) -> float | None:
        losses = self.losses()
        return losses[0][1] if losses else None

    @property
    def final_loss(self) -> float | None:
        losses = self.losses()
        return losses[-1][1] if losses else None


def last_checkpoint(work_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(found) if work_dir.is_dir() and (found := get_last_checkpoint(str(work_dir))) else None


def prepare_work_dir(root: Path, key: str) -> Path:
    """`root/key`; folders of other keys are stale runs (other inputs) and are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for other in root.iterdir():
        if other.is_dir() and other.name != key:
            shutil.rmtree(other, ignore_errors=True)
    work = root / key
    work.mkdir(exist_ok=True)
    return work


def _use_bf16(device: str, bf16: bool | None) -> bool:
    import torch

    if bf16 is not None:
        return bf16
    return device == "cuda" and torch.cuda.is_bf16_supported()


def trainer_args(cfg, work_dir: Path, device: str) -> dict[str, Any]:
    """TrainingArguments shared by SFT and DPO."""
    return {
        "output_dir": str(work_dir),
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "learning_rate": cfg.learning_rate,
        "warmup_steps": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "max_length": cfg.max_length,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "bf16": _use_bf16(device, cfg.bf16),
        "use_cpu": device == "cpu",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_pin_memory": device == "cuda",
    }


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")


def load_base(base_dir: Path, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub_offline_by_default()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch_dtype(dtype), use_safetensors=True)
    return model, tokenizer


class _StepCounter:
    """Counts optimizer steps run by this process (a resumed run starts from the checkpoint's step)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Counter(TrainerCallback):
            def __init__(self):
                self.steps = 0

            def on_step_end(self, args, state, control, **kwargs):
                self.steps += 1

        return Counter()


def _train(trainer, work_dir: Path, out_dir: Path, records: int, device: str, start: float) -> TrainingResult:
    counter = _StepCounter()
    trainer.add_callback(counter)
    resume = last_checkpoint(work_dir)
    resumed_from = int(resume.name.rsplit("-", 1)[-1]) if resume else 0
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    # Only the trained adapter ("default"), as a plain PEFT folder.
    with folder_written_aside(out_dir) as tmp:
        trainer.model.save_pretrained(str(tmp), selected_adapters=["default"], safe_serialization=True)
    result = TrainingResult(
        adapter_dir=out_dir, sha256=sha256_tree(out_dir), log_history=list(trainer.state.log_history),
        global_step=int(trainer.state.global_step), resumed_from_step=resumed_from, steps_this_run=counter.steps,
        seconds=round(time.perf_counter() - start, 2), train_records=records, device=device,
        metrics={k: float(v) for k, v in (output.metrics or {}).items() if isinstance(v, (int, float))},
    )
    shutil.rmtree(work_dir, ignore_errors=True)  # done: nothing to resume
    return result


def run_sft(base_dir: Path, records: Sequence[dict], cfg, *, out_dir: Path, work_dir: Path,
            callbacks: Sequence = ()) -> TrainingResult:
    """LoRA SFT on prompt-completion records (loss on the completion = the listener's turn only)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    start = time.perf_counter()
    if not records:
        raise ValueError("no training dialogues (is there a train split?)")
    device = pick_device(cfg.device)
    model, tokenizer = load_base(base_dir)
    args = SFTConfig(**trainer_args(cfg, work_dir, device), completion_only_loss=True, packing=False,
                     dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(list(records)),
                         processing_class=tokenizer, peft_config=lora_config(cfg), callbacks=list(callbacks))
    return _train(trainer, work_dir, out_dir, len(records), device, start)


def cached_reference_dpo_trainer_class():
    """trl's DPOTrainer that takes reference log-probs already in the dataset (columns
    `ref_chosen_logps` / `ref_rejected_logps`, from the `reference_logprobs` cache) instead of
    recomputing them: with `precompute_ref_log_probs=True` the loss reads them from each batch, and this
    subclass skips only the precompute pass when the columns are there."""
    from trl import DPOTrainer

    class CachedReferenceDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset, name, batch_size):
            if {"ref_chosen_logps", "ref_rejected_logps"} <= set(dataset.column_names):
                return dataset
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return CachedReferenceDPOTrainer


def run_dpo(base_dir: Path, sft_dir: Path, records: Sequence[dict], cfg, *, out_dir: Path, work_dir: Path,
            callbacks: Sequence = ()) -> TrainingResult:
    """DPO continuing the SFT adapter. Records carry `ref_chosen_logps`/`ref_rejected_logps` of the SFT
    policy (the reference); without them trl computes them with the frozen SFT adapter ("ref")."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig

    start = time.perf_counter()
    if not records:
        raise ValueError("no training pairs (is there a train split?)")
    device = pick_device(cfg.device)
    base, tokenizer = load_base(base_dir)
    model = PeftModel.from_pretrained(base, str(sft_dir), is_trainable=True)
    # Without cached log-probs trl copies the SFT adapter into a frozen "ref" adapter as the reference.
    has_ref = "ref_chosen_logps" in records[0]
    args = DPOConfig(**trainer_args(cfg, work_dir, device), beta=cfg.beta, loss_type=[cfg.loss_type],
                     precompute_ref_log_probs=has_ref)
    trainer_cls = cached_reference_dpo_trainer_class()
    trainer = trainer_cls(model=model, args=args, train_dataset=Dataset.from_list(list(records)),
                          processing_class=tokenizer, callbacks=list(callbacks))
    return _train(trainer, work_dir, out_dir, len(records), device, start)
