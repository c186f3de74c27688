"""LoRA SFT and DPO with trl, resumable, writing PEFT adapter folders.

Pure functions of (base model folder, records, hyperparameters, folders): no Dagster here. Trainer
checkpoints go to a work folder keyed by a fingerprint of the inputs; a run that dies is resumed from
its last complete checkpoint by re-running with the same inputs, and a finished run removes its work
folder, so a later run with other inputs starts fresh. Checkpoints are written into a staging folder and
renamed into place, so a kill during a save leaves no half-written `checkpoint-N` behind.

Both trainers get the validation records as `eval_dataset` (eval loss / eval reward accuracy in the log
history, hence in the loss curve) and measure the held-out items before and after training
(`train.heldout`), per item, so the checkpoint's metadata carries n and intervals."""

from __future__ import annotations

import importlib.util
import json
import math
import os
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
from empathy_dag.train.heldout import completion_losses, dpo_heldout_summary, sft_heldout_summary
from empathy_dag.train.progress import progress_callback
from empathy_dag.train.refcache import compute_reference_logprobs


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
    heldout: dict = field(default_factory=dict)
    eval_records: int = 0

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

    def eval_losses(self) -> list[tuple[int, float]]:
        return [
            (int(h["step"]), float(h["eval_loss"]))
            for h in self.log_history
            if "eval_loss" in h and "step" in h
        ]


CHECKPOINT_STAGING = ".checkpoint-staging"
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")


def checkpoint_is_complete(folder: Path) -> bool:
    """A checkpoint a resume can load: weights and a readable trainer state. A process killed while saving
    (before checkpoints were staged, or by a full disk) leaves a folder without them."""
    state = folder / "trainer_state.json"
    if not any((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in WEIGHT_FILES):
        return False
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(work_dir: Path, log=None) -> Path | None:
    """The newest complete `checkpoint-N` in `work_dir`; incomplete ones are removed (with a log line), so
    neither this resume nor the trainer's checkpoint rotation trips over them."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not work_dir.is_dir():
        return None
    found = []
    for folder in work_dir.iterdir():
        prefix, _, number = folder.name.rpartition("-")
        if folder.is_dir() and prefix == PREFIX_CHECKPOINT_DIR and number.isdigit():
            found.append((int(number), folder))
    for _, folder in sorted(found, reverse=True):
        if checkpoint_is_complete(folder):
            return folder
        if log:
            log(
                f"removing incomplete trainer checkpoint {folder} (no weights or trainer state: killed while saving?)"
            )
        shutil.rmtree(folder, ignore_errors=True)
    return None


def atomic_checkpoints(trainer_cls):
    """`trainer_cls` whose checkpoints are written to `<output_dir>/.checkpoint-staging/checkpoint-N` and then
    renamed to `<output_dir>/checkpoint-N` (one rename on one filesystem: a kill leaves either the previous
    checkpoints or the new one complete, never a half-written folder that a resume would pick)."""
    from transformers.trainer_utils import rotate_checkpoints

    class AtomicCheckpoints(trainer_cls):
        def _save_checkpoint(self, model, trial):
            final_root = Path(self.args.output_dir)
            staging = final_root / CHECKPOINT_STAGING
            shutil.rmtree(staging, ignore_errors=True)
            name = f"checkpoint-{self.state.global_step}"
            self.args.output_dir = str(staging)
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.output_dir = str(final_root)
            if self.args.should_save:
                target = final_root / name
                if target.exists():  # an earlier incomplete save of the same step
                    shutil.rmtree(target)
                os.replace(staging / name, target)
                shutil.rmtree(staging, ignore_errors=True)
                rotate_checkpoints(
                    output_dir=str(final_root), save_total_limit=self.args.save_total_limit, use_mtime=True
                )

    AtomicCheckpoints.__name__ = AtomicCheckpoints.__qualname__ = f"Atomic{trainer_cls.__name__}"
    return AtomicCheckpoints


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


def total_steps(cfg, n_records: int) -> int:
    """Optimizer steps the run will take: `max_steps` when set, else the epochs' worth of batches."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = max(
        1, math.ceil(math.ceil(n_records / cfg.per_device_train_batch_size) / cfg.gradient_accumulation_steps)
    )
    return max(1, math.ceil(per_epoch * cfg.num_train_epochs))


def warmup_steps(cfg, n_records: int) -> int:
    """`warmup_ratio` of the run as a whole number of steps. TrainingArguments' `warmup_steps` is an int on
    transformers 4.x (a ratio passed there was a fraction of one step, i.e. no warmup) and a ratio only
    below 1 on 5.x; an int means the same on both."""
    return math.ceil(total_steps(cfg, n_records) * cfg.warmup_ratio) if cfg.warmup_ratio > 0 else 0


def eval_steps(cfg, n_records: int) -> int:
    """Evaluate `evals_per_run` times during the run (at least every step of a very short one)."""
    return max(1, total_steps(cfg, n_records) // max(1, cfg.evals_per_run))


TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}


def check_trackers(report_to: Sequence[str]) -> list[str]:
    """`report_to` without "none"; a clear error for a tracker that is unknown here or not installed (instead
    of the trainer's failure at its first log)."""
    wanted = [r for r in report_to if r and r != "none"]
    for name in wanted:
        if name not in TRACKERS:
            raise ValueError(f"report_to={list(report_to)}: {name!r} is not one of {sorted(TRACKERS)}")
        if not any(importlib.util.find_spec(module) for module in TRACKERS[name]):
            raise ValueError(
                f"report_to={list(report_to)} needs the {name} package, which is not installed: "
                f"pip install {TRACKERS[name][0]} (or leave report_to empty)"
            )
    return wanted


def tracking_setup(cfg, out_dir: Path) -> None:
    """Where optional experiment tracking writes. transformers reads TensorBoard's folder from
    $TENSORBOARD_LOGGING_DIR (its default is inside the trainer's work folder, which a finished run deletes):
    `cfg.logging_dir`, else `<adapter folder>_tensorboard/` beside the adapter. MLflow reads its own
    $MLFLOW_TRACKING_URI / $MLFLOW_EXPERIMENT_NAME."""
    if "tensorboard" in cfg.report_to and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(
            cfg.logging_dir or out_dir.with_name(f"{out_dir.name}_tensorboard")
        )


def trainer_args(cfg, work_dir: Path, device: str, *, n_records: int, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments shared by SFT and DPO."""
    report_to = check_trackers(cfg.report_to)
    return {
        "output_dir": str(work_dir),
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": warmup_steps(cfg, n_records),
        "weight_decay": cfg.weight_decay,
        "eval_strategy": "steps" if has_eval and cfg.evals_per_run > 0 else "no",
        "eval_steps": eval_steps(cfg, n_records),
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
        # Off by default; "tensorboard" / "mlflow" when that package is installed (see `tracking_setup`).
        "report_to": report_to or "none",
        # Progress goes to the Dagster log through `train.progress`, not a tqdm bar on stdout.
        "disable_tqdm": True,
        "include_num_input_tokens_seen": True,
        "dataloader_pin_memory": device == "cuda",
    }


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def quantization_4bit(device: str, bf16: bool = True):
    """The bitsandbytes 4-bit (NF4, double quantization) config of QLoRA, or a clear error where it
    cannot run: bitsandbytes' 4-bit kernels need a CUDA GPU."""
    if not device.startswith("cuda"):
        raise ValueError(
            f"load_in_4bit (QLoRA) needs a CUDA GPU, and this training runs on {device!r}: set "
            "load_in_4bit=False, or train where a CUDA device is visible (the aws profile's GPU task)"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModuleNotFoundError("load_in_4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes")
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16,
    )


def load_base(base_dir: Path, dtype: str = "float32", *, load_in_4bit: bool = False, device: str = "cpu"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantization = quantization_4bit(device, _use_bf16(device, None)) if load_in_4bit else None
    hub_offline_by_default()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantization is None:
        model = AutoModelForCausalLM.from_pretrained(
            str(base_dir), dtype=torch_dtype(dtype), use_safetensors=True
        )
        return model, tokenizer
    from peft import prepare_model_for_kbit_training

    model = AutoModelForCausalLM.from_pretrained(
        str(base_dir), quantization_config=quantization, use_safetensors=True, device_map={"": device}
    )
    return prepare_model_for_kbit_training(model), tokenizer


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


def _train(
    trainer,
    work_dir: Path,
    out_dir: Path,
    records: int,
    device: str,
    start: float,
    *,
    measure_before=None,
    measure_after=None,
    eval_records: int = 0,
    log=None,
) -> TrainingResult:
    """Train (resuming from the last complete checkpoint), save the adapter. `measure_before()` runs on the
    initial model, before `train()` loads any checkpoint; `measure_after(before)` returns the held-out summary."""
    counter = _StepCounter()
    trainer.add_callback(counter)
    resume = last_checkpoint(work_dir, log=log)
    resumed_from = int(resume.name.rsplit("-", 1)[-1]) if resume else 0
    before = measure_before() if measure_before else None
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    heldout = measure_after(before) if measure_after else {}
    # Only the trained adapter ("default"), as a plain PEFT folder.
    with folder_written_aside(out_dir) as tmp:
        trainer.model.save_pretrained(str(tmp), selected_adapters=["default"], safe_serialization=True)
    result = TrainingResult(
        adapter_dir=out_dir,
        sha256=sha256_tree(out_dir),
        log_history=list(trainer.state.log_history),
        global_step=int(trainer.state.global_step),
        resumed_from_step=resumed_from,
        steps_this_run=counter.steps,
        seconds=round(time.perf_counter() - start, 2),
        train_records=records,
        device=device,
        metrics={k: float(v) for k, v in (output.metrics or {}).items() if isinstance(v, (int, float))},
        heldout=heldout,
        eval_records=eval_records,
    )
    shutil.rmtree(work_dir, ignore_errors=True)  # done: nothing to resume
    return result


def _progress_callbacks(log, kind: str) -> list:
    return [progress_callback(log, kind)] if log else []


def run_sft(
    base_dir: Path,
    records: Sequence[dict],
    cfg,
    *,
    out_dir: Path,
    work_dir: Path,
    eval_records: Sequence[dict] = (),
    callbacks: Sequence = (),
    log=None,
) -> TrainingResult:
    """LoRA SFT on prompt-completion records (loss on the completion = the listener's turn only).
    `eval_records` (the validation split, same format) are the trainer's `eval_dataset`, and their per-item
    loss is measured before and after training. `log(str)` receives progress lines."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    start = time.perf_counter()
    if not records:
        raise ValueError("no training dialogues (is there a train split?)")
    device = pick_device(cfg.device)
    model, tokenizer = load_base(base_dir, load_in_4bit=cfg.load_in_4bit, device=device)
    eval_records = list(eval_records)
    tracking_setup(cfg, out_dir)
    args = SFTConfig(
        **trainer_args(cfg, work_dir, device, n_records=len(records), has_eval=bool(eval_records)),
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )
    trainer = atomic_checkpoints(SFTTrainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(list(records)),
        eval_dataset=Dataset.from_list(eval_records) if eval_records else None,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=[*callbacks, *_progress_callbacks(log, "sft")],
    )

    def losses():
        return completion_losses(trainer.model, trainer.get_eval_dataloader(), device=device)

    def after(before):
        summary = sft_heldout_summary(before, losses())
        # trl drops examples whose completion the truncation to max_length removed entirely.
        summary["n_eval_items_dropped_by_truncation"] = len(eval_records) - len(trainer.eval_dataset)
        if log:
            b, a, d = summary["eval_loss_before"], summary["eval_loss_after"], summary["eval_loss_change"]
            log(
                f"sft held-out loss on {b['n']} validation dialogues: {b['mean']:.4f} -> {a['mean']:.4f} "
                f"(change {d['mean']:+.4f}, 95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], "
                f"Wilcoxon p={d['wilcoxon_p']})"
            )
        return summary

    return _train(
        trainer,
        work_dir,
        out_dir,
        len(records),
        device,
        start,
        log=log,
        measure_before=losses if eval_records else None,
        measure_after=after if eval_records else None,
        eval_records=len(eval_records),
    )


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


def run_dpo(
    base_dir: Path,
    sft_dir: Path,
    records: Sequence[dict],
    cfg,
    *,
    out_dir: Path,
    work_dir: Path,
    eval_records: Sequence[dict] = (),
    callbacks: Sequence = (),
    log=None,
) -> TrainingResult:
    """DPO continuing the SFT adapter. Records carry `ref_chosen_logps`/`ref_rejected_logps` of the SFT
    policy (the reference); without them trl computes them with the frozen SFT adapter ("ref").
    `eval_records` (validation pairs, without reference columns) are the trainer's `eval_dataset` (trl computes
    their reference log-probs with the "ref" adapter); after training their implicit rewards give the
    held-out reward accuracy and margin."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig

    start = time.perf_counter()
    if not records:
        raise ValueError("no training pairs (is there a train split?)")
    device = pick_device(cfg.device)
    base, tokenizer = load_base(base_dir, load_in_4bit=cfg.load_in_4bit, device=device)
    model = PeftModel.from_pretrained(base, str(sft_dir), is_trainable=True)
    # Without cached log-probs trl copies the SFT adapter into a frozen "ref" adapter as the reference.
    has_ref = "ref_chosen_logps" in records[0]
    eval_records = [
        {k: v for k, v in r.items() if k in ("prompt", "chosen", "rejected")} for r in eval_records
    ]
    tracking_setup(cfg, out_dir)
    # trl precomputes the reference log-probs of its eval dataset when it is built (a pass over every validation
    # pair): give it one only when it will evaluate during the run. The held-out before / after below measure
    # `eval_records` themselves either way.
    evaluates = bool(eval_records) and cfg.evals_per_run > 0
    args = DPOConfig(
        **trainer_args(cfg, work_dir, device, n_records=len(records), has_eval=evaluates),
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        precompute_ref_log_probs=has_ref,
    )
    trainer_cls = atomic_checkpoints(cached_reference_dpo_trainer_class())
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(list(records)),
        eval_dataset=Dataset.from_list(eval_records) if evaluates else None,
        processing_class=tokenizer,
        callbacks=[*callbacks, *_progress_callbacks(log, "dpo")],
    )

    def reference():
        # The reference is the SFT adapter as it is before training, measured on exactly `eval_records`
        # (trl's own eval dataset may drop rows, so its precomputed columns need not line up with them).
        trainer.model.eval()
        return compute_reference_logprobs(
            trainer.model, tokenizer, eval_records, max_length=cfg.max_length, device=device
        )

    def after(before):
        ref_chosen, ref_rejected = before
        trainer.model.eval()
        chosen, rejected = compute_reference_logprobs(
            trainer.model, tokenizer, eval_records, max_length=cfg.max_length, device=device
        )
        summary = dpo_heldout_summary(chosen, rejected, list(ref_chosen), list(ref_rejected), cfg.beta)
        if log:
            acc, margin = summary["reward_accuracy_after"], summary["reward_margin_after"]
            log(
                f"dpo held-out reward accuracy on {acc['n']} validation pairs: {acc['mean']:.3f} "
                f"(95% Wilson CI [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]; 0 before training, policy = "
                f"reference), margin {margin['mean']:+.4f} [{margin['ci_low']:+.4f}, {margin['ci_high']:+.4f}]"
            )
        return summary

    return _train(
        trainer,
        work_dir,
        out_dir,
        len(records),
        device,
        start,
        log=log,
        measure_before=reference if eval_records else None,
        measure_after=after if eval_records else None,
        eval_records=len(eval_records),
    )


class _adapter:
    """Context: `adapter` active in a PeftModel, the previous one restored after."""

    def __init__(self, model, adapter: str):
        self.model, self.adapter = model, adapter

    def __enter__(self):
        self.previous = self.model.active_adapter
        self.model.set_adapter(self.adapter)

    def __exit__(self, *exc):
        self.model.set_adapter(self.previous)
