"""The training runs themselves, as heavy steps launched through Dagster Pipes (`empathy_dag.pipes`):
a subprocess on the machine of the run (local profile, or the aws profile without ECS), a task on the GPU
task definition with `PipesECSClient` in the aws profile. Logs and the materialization metadata come back
through Pipes either way.

The step shares nothing with the run but its parameters: it rebuilds the model store from them, fetches
the base model, the SFT adapter (DPO) and the training records from it (a no-op on one disk, a verified
download from S3 otherwise), trains with `train.trainers`, writes the model card, loss curve and log into
the adapter folder and persists it (uploads it in the aws profile). Trainer checkpoints are persisted
too, so a GPU task that dies resumes from its last checkpoint in the next task.

Params (JSON):
    store:       ModelStore fields (`pipes.store_params`); `root` is replaced by the step's own cache
                 ($EMPATHY_DAG_STEP_CACHE_DIR) where the step has its own disk (`pipes.step_store`)
    inputs_name: store folder holding records.jsonl and eval_records.jsonl (the validation split), written
                 and persisted by the asset
    work_name:   store folder for trainer checkpoints (keyed by the inputs' fingerprint)
    out_name:    store folder of the adapter (sft_checkpoint / dpo_checkpoint)
    sft_name:    (DPO) store folder of the SFT adapter to continue
    config:      the asset's training Config as a dict
    card:        title, kind, base model sha256, input versions, extra metadata for the card and result"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from empathy_dag.models import sha256_tree
from empathy_dag.pipes import read_jsonl, step_store, write_jsonl
from empathy_dag.train.card import loss_curve_png, model_card
from empathy_dag.train.config import DPOTrainingConfig, SFTTrainingConfig
from empathy_dag.train.merge import export_merged
from empathy_dag.train.trainers import run_dpo, run_sft

RECORDS_FILE = "records.jsonl"
EVAL_RECORDS_FILE = "eval_records.jsonl"


def write_records(folder: Path, records: list[dict], eval_records: list[dict] = ()) -> Path:
    """The training and validation records a step reads, as JSON lines (written by the asset before launching)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    write_jsonl(folder / RECORDS_FILE, records)
    write_jsonl(folder / EVAL_RECORDS_FILE, list(eval_records))
    return folder / RECORDS_FILE


def read_records(folder: Path) -> list[dict]:
    return read_jsonl(folder / RECORDS_FILE)


def read_eval_records(folder: Path) -> list[dict]:
    return read_jsonl(folder / EVAL_RECORDS_FILE) if (folder / EVAL_RECORDS_FILE).is_file() else []


def persist_checkpoints_callback(store, work_name: str):
    """A TrainerCallback that persists the trainer's work folder after every checkpoint save, so a task
    that dies on another machine can resume. Local stores need nothing (the folder is on disk)."""
    from transformers import TrainerCallback

    class PersistCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            store.persist(work_name)

    return PersistCheckpoints()


def _fetch_work(store, work_name: str) -> Path:
    """The work folder, with the checkpoints an earlier (killed) task persisted, if any."""
    if store.s3_prefix and store.published_sha256(work_name):
        return store.fetch(work_name)
    return store.folder(work_name)


def md(value: Any, kind: str) -> dict:
    """A typed Pipes metadata value (`kind` as in dagster_pipes: md, json, path, float, int, text...)."""
    return {"raw_value": value, "type": kind}


def checkpoint_metadata(
    *,
    out_dir: Path,
    result,
    base: dict,
    inputs: dict,
    hyperparameters: dict,
    title: str,
    kind: str,
    extra: dict,
    published: str,
) -> dict:
    """Write card, loss curve and log into the adapter folder; the materialization metadata."""

    plot = loss_curve_png(
        result.log_history, out_dir / "loss_curve.png", title=f"{title}: train and eval loss"
    )
    card = model_card(
        title=title,
        kind=kind,
        base_model=base,
        inputs=inputs,
        hyperparameters=hyperparameters,
        result=result,
        extra=extra,
    )
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    (out_dir / "training_log.json").write_text(json.dumps(result.log_history, indent=1), encoding="utf-8")
    png = base64.b64encode(Path(plot).read_bytes()).decode()
    return {
        "path": md(str(out_dir), "path"),
        "sha256": result.sha256,
        "published_to": published,
        "base_model_sha256": base["sha256"],
        "first_loss": md(result.first_loss, "float" if result.first_loss is not None else "null"),
        "final_loss": md(result.final_loss, "float" if result.final_loss is not None else "null"),
        "steps": md(result.global_step, "int"),
        "resumed_from_step": md(result.resumed_from_step, "int"),
        "steps_this_run": md(result.steps_this_run, "int"),
        "train_seconds": md(float(result.seconds), "float"),
        "train_records": md(result.train_records, "int"),
        "eval_records": md(result.eval_records, "int"),
        **heldout_metadata(result.heldout),
        "device": result.device,
        "hyperparameters": md(hyperparameters, "json"),
        "input_versions": md(inputs, "json"),
        "loss_curve": md(f"![{kind} loss curve](data:image/png;base64,{png})", "md"),
        # The card's text, rendered on the checkpoint's page; the file beside the adapter is the same text.
        "model_card": md(card, "md"),
        "model_card_path": md(str(out_dir / "README.md"), "path"),
        **extra,
    }


def heldout_metadata(heldout: dict) -> dict:
    """Flat, typed metadata from `train.heldout`'s summary: the headline numbers (before / after, n, 95%
    interval) as floats a UI can plot, the whole summary as JSON."""
    if not heldout:
        return {}
    out: dict = {"heldout": md(heldout, "json")}
    for name, stats in heldout.items():
        if isinstance(stats, dict) and stats.get("mean") is not None:
            out[name] = md(float(stats["mean"]), "float")
            out[f"{name}_n"] = md(int(stats["n"]), "int")
            if stats.get("ci_low") is not None:
                out[f"{name}_ci95"] = md(f"[{stats['ci_low']:.4f}, {stats['ci_high']:.4f}]", "text")
    return out


def _train(params: dict, pipes, kind: str) -> dict:
    store = step_store(params)
    card = params["card"]
    base_dir = store.fetch("base_model")
    base_sha = sha256_tree(base_dir)
    if base_sha != card["base_model_sha256"]:
        raise RuntimeError(
            f"base model {base_dir} has sha256 {base_sha}, the asset expected "
            f"{card['base_model_sha256']}: the store changed under the run"
        )
    inputs_dir = store.fetch(params["inputs_name"])
    records, eval_records = read_records(inputs_dir), read_eval_records(inputs_dir)
    work_dir = _fetch_work(store, params["work_name"])
    out_dir = store.folder(params["out_name"])
    callbacks = [persist_checkpoints_callback(store, params["work_name"])] if store.s3_prefix else []
    pipes.log.info(
        f"{kind}: {len(records)} train and {len(eval_records)} validation records, base {base_dir} "
        f"({base_sha[:12]}…), checkpoints in {work_dir}"
    )
    # Each progress line is a Pipes log message: a Dagster log event of the run, also from an ECS task.
    log = pipes.log.info
    if kind == "sft":
        cfg = SFTTrainingConfig(**params["config"])
        result = run_sft(
            base_dir,
            records,
            cfg,
            out_dir=out_dir,
            work_dir=work_dir,
            eval_records=eval_records,
            callbacks=callbacks,
            log=log,
        )
    else:
        cfg = DPOTrainingConfig(**params["config"])
        sft_dir = store.fetch(params["sft_name"])
        result = run_dpo(
            base_dir,
            sft_dir,
            records,
            cfg,
            out_dir=out_dir,
            work_dir=work_dir,
            eval_records=eval_records,
            callbacks=callbacks,
            log=log,
        )
    pipes.log.info(
        f"{kind}: {result.global_step} steps on {result.device} in {result.seconds}s, loss "
        f"{result.first_loss} -> {result.final_loss}, resumed from step {result.resumed_from_step}"
    )
    extra = dict(card.get("extra", {}))
    if kind == "dpo":
        last = next((h for h in reversed(result.log_history) if "rewards/margins" in h), {})
        margin, accuracy = float(last.get("rewards/margins", 0.0)), float(last.get("rewards/accuracies", 0.0))
        extra.update(
            {
                "final_reward_margin": md(margin, "float"),
                "final_reward_accuracy": md(accuracy, "float"),
                "metrics": md(
                    {"reward_accuracy": accuracy, "reward_margin": margin, "final_loss": result.final_loss},
                    "json",
                ),
            }
        )
    metadata = checkpoint_metadata(
        out_dir=out_dir,
        result=result,
        base={"path": str(base_dir), "sha256": base_sha},
        inputs=card["inputs"],
        hyperparameters=params["config"],
        title=card["title"],
        kind=kind,
        extra=extra,
        published="",
    )
    # README, plot and log are in the folder now: persist it whole (the weights' sha256 is unchanged).
    metadata["published_to"] = store.persist(params["out_name"])
    if store.s3_prefix:
        store.discard(params["work_name"])  # finished: nothing to resume
    return metadata


def train_sft(params: dict, pipes) -> dict:
    """LoRA SFT (trl SFTTrainer) on prompt-completion records: see `trainers.run_sft`."""
    return _train(params, pipes, "sft")


def train_dpo(params: dict, pipes) -> dict:
    """DPO (trl DPOTrainer) continuing the SFT adapter, cached reference log-probs in the records."""
    return _train(params, pipes, "dpo")


def merge_checkpoint(params: dict, pipes) -> dict:
    """Merge a store adapter into the base model (`train.merge.export_merged`) as the `merged_model`
    folder with its card; pushes to the hub only when `push_to_hub` is in params and true.

    Params: store, adapter_name, out_name, title, dtype, leaderboard_rows, push_to_hub, repo_id, private."""

    store = step_store(params)
    base_dir = store.fetch("base_model")
    adapter_dir = store.fetch(params["adapter_name"])
    out_dir = store.folder(params["out_name"])
    info = export_merged(
        base_dir,
        adapter_dir,
        out_dir,
        title=params["title"],
        leaderboard_rows=params.get("leaderboard_rows") or [],
        dtype=params.get("dtype", "auto"),
        push_to_hub=bool(params.get("push_to_hub", False)),
        repo_id=params.get("repo_id", ""),
        private=bool(params.get("private", True)),
        log=pipes.log.info,
    )
    return {
        "path": md(info["path"], "path"),
        "sha256": info["sha256"],
        "base_model_sha256": info["base_sha256"],
        "adapter_sha256": info["adapter_sha256"],
        "dtype": info["dtype"],
        "parameters": md(info["parameters"], "int"),
        "leaderboard_metrics": md(len(params.get("leaderboard_rows") or []), "int"),
        "model_card": md(str(Path(info["path"]) / "README.md"), "path"),
        "pushed_to": info["pushed_to"],
        "published_to": store.persist(params["out_name"]),
    }
