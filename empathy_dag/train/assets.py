"""Train stage assets: LoRA SFT, cached reference log-probs, DPO (EmPO).

All three read every emotion partition of their inputs (the partitions that exist), write model
folders under the model store (never through an IO manager) and run in the `training` pool, so at
most one training runs at a time. Device is automatic: a GPU when present, the CPU otherwise."""

import json
from collections.abc import Mapping
from pathlib import Path

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from empathy_dag.automation.retraining import train_pairs_fingerprint
from empathy_dag.models import pick_device, sha256_tree
from empathy_dag.resources import ModelStore
from empathy_dag.plots import png_markdown
from empathy_dag.train.card import loss_curve_png, model_card
from empathy_dag.train.config import DPOTrainingConfig, SFTTrainingConfig
from empathy_dag.train.data import (
    dpo_record,
    fingerprint,
    frame_fingerprint,
    pair_key,
    partition_fingerprints,
    sft_records,
    train_dialogues,
    train_pairs,
)

TRAIN_CODE_VERSION = "train-v1"
TRAINING_POOL = "training"
ALL_EXISTING_PARTITIONS = {"allow_missing_partitions": True}


def _frames(value) -> dict[str, pl.DataFrame]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"expected one frame per emotion partition, got {type(value).__name__}")


def _base_model(model_store: ModelStore) -> dict:
    path = model_store.folder("base_model")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no model: materialize `base_model` first")
    return {"path": str(path), "sha256": sha256_tree(path)}


def _hyperparameters(cfg) -> dict:
    return json.loads(cfg.model_dump_json()) if hasattr(cfg, "model_dump_json") else dict(cfg)


def _checkpoint_result(context, *, kind: str, title: str, out_dir: Path, result, base: dict, inputs: dict,
                       hyperparameters: dict, extra: dict) -> MaterializeResult:
    plot = loss_curve_png(result.log_history, out_dir / "loss_curve.png", title=f"{title}: training loss")
    card = model_card(title=title, kind=kind, base_model=base, inputs=inputs, hyperparameters=hyperparameters,
                      result=result)
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    (out_dir / "training_log.json").write_text(json.dumps(result.log_history, indent=1), encoding="utf-8")
    context.log.info(
        f"{kind}: {result.global_step} steps on {result.device} in {result.seconds}s, loss "
        f"{result.first_loss} -> {result.final_loss}, resumed from step {result.resumed_from_step}"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "sha256": result.sha256,
            "base_model_sha256": base["sha256"],
            "first_loss": result.first_loss,
            "final_loss": result.final_loss,
            "steps": result.global_step,
            "resumed_from_step": result.resumed_from_step,
            "steps_this_run": result.steps_this_run,
            "train_seconds": result.seconds,
            "train_records": result.train_records,
            "device": result.device,
            "hyperparameters": MetadataValue.json(hyperparameters),
            "input_versions": MetadataValue.json(inputs),
            "loss_curve": png_markdown(Path(plot).read_bytes(), f"{kind} loss curve"),
            "model_card": MetadataValue.path(str(out_dir / "README.md")),
            **extra,
        },
        data_version=DataVersion(result.sha256),
    )


@asset(
    group_name="train",
    code_version=TRAIN_CODE_VERSION,
    kinds={"pytorch", "peft"},
    pool=TRAINING_POOL,
    ins={"dataset_splits": AssetIn(metadata=ALL_EXISTING_PARTITIONS)},
    deps=["base_model"],
    description="LoRA SFT (trl SFTTrainer) on the train-split dialogues of every emotion, loss on the "
    "listener's turn only. A PEFT adapter folder with model card and loss curve.",
)
def sft_checkpoint(context: AssetExecutionContext, config: SFTTrainingConfig, model_store: ModelStore,
                   dataset_splits):
    from empathy_dag.train.trainers import prepare_work_dir, run_sft

    frames = _frames(dataset_splits)
    dialogues = train_dialogues(frames)
    base = _base_model(model_store)
    text_cols = ["situation_id", "speaker_utterance", "listener_reply", "split"]
    inputs = {
        "dataset_splits": partition_fingerprints(
            {e: df.filter(pl.col("split") == "train") for e, df in frames.items()}, "dialogue_id", text_cols
        ),
        "train_dialogues": dialogues.height,
    }
    hyper = _hyperparameters(config)
    key = fingerprint(TRAIN_CODE_VERSION, base["sha256"], frame_fingerprint(dialogues, "dialogue_id", text_cols),
                      hyper)
    work_dir = prepare_work_dir(model_store.folder("work/sft_checkpoint"), key)
    out_dir = model_store.folder("sft_checkpoint")
    result = run_sft(Path(base["path"]), sft_records(dialogues, config.system_prompt), config,
                     out_dir=out_dir, work_dir=work_dir)
    emotions = sorted(e for e, df in frames.items() if df.height)
    return _checkpoint_result(
        context, kind="sft", title="Empathy LoRA SFT", out_dir=out_dir, result=result, base=base, inputs=inputs,
        hyperparameters=hyper, extra={"emotions": MetadataValue.json(emotions), "input_fingerprint": key},
    )


class ReferenceLogprobConfig(Config):
    max_length: int = Field(default=128, description="Must equal dpo_checkpoint's max_length.")
    batch_size: int = 16
    device: str = "auto"


def reference_sha256(base_sha: str, adapter_dir: Path) -> str:
    """The reference policy's identity: base weights + SFT adapter weights."""
    import hashlib

    return hashlib.sha256(f"{base_sha}\x1f{sha256_tree(adapter_dir)}".encode()).hexdigest()


def _pair_records(pairs: pl.DataFrame, max_length: int) -> tuple[list[str], list[dict]]:
    rows = list(pairs.iter_rows(named=True))
    return [pair_key(r, max_length) for r in rows], [dpo_record(r) for r in rows]


@asset(
    group_name="train",
    code_version=TRAIN_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    pool=TRAINING_POOL,
    required_resource_keys={"model_store"},
    ins={"preference_pairs": AssetIn(metadata=ALL_EXISTING_PARTITIONS)},
    deps=["base_model", "sft_checkpoint"],
    description="Reference log-probs (SFT policy, frozen) of every train pair, from a cache keyed by "
    "(reference sha256, pair): computed once, only new pairs are computed on retraining.",
)
def reference_logprobs(context: AssetExecutionContext, config: ReferenceLogprobConfig, preference_pairs):
    from empathy_dag.train.refcache import (
        ReferenceLogprobCache,
        cached_reference_logprobs,
        compute_reference_logprobs,
        load_reference_model,
    )

    model_store: ModelStore = context.resources.model_store
    pairs = train_pairs(_frames(preference_pairs))
    base = _base_model(model_store)
    sft_dir = model_store.folder("sft_checkpoint")
    ref_sha = reference_sha256(base["sha256"], sft_dir)
    keys, records = _pair_records(pairs, config.max_length)
    device = pick_device(config.device)

    def compute(missing):
        model, tokenizer = load_reference_model(Path(base["path"]), sft_dir, device=device)
        return compute_reference_logprobs(model, tokenizer, missing, max_length=config.max_length,
                                          batch_size=config.batch_size, device=device)

    cache = ReferenceLogprobCache(model_store.folder("reference_logprobs") / "cache.parquet")
    frame, stats = cached_reference_logprobs(cache, ref_sha, keys, records, compute)
    frame = frame.with_columns(pl.Series("pair_id", pairs["pair_id"] if pairs.height else [], dtype=pl.String))
    context.log.info(f"reference log-probs: {stats}")
    return Output(
        frame.select("pair_id", "pair_key", "ref_sha256", "ref_chosen_logps", "ref_rejected_logps"),
        metadata={
            "dagster/row_count": frame.height, **stats, "reference_sha256": ref_sha,
            "cache_path": MetadataValue.path(str(cache.path)), "max_length": config.max_length,
        },
    )


@asset(
    group_name="train",
    code_version=TRAIN_CODE_VERSION,
    kinds={"pytorch", "peft"},
    pool=TRAINING_POOL,
    ins={"preference_pairs": AssetIn(metadata=ALL_EXISTING_PARTITIONS), "reference_logprobs": AssetIn()},
    deps=["base_model", "sft_checkpoint"],
    description="DPO (trl DPOTrainer, EmPO pairs) continuing the SFT adapter, reference = the frozen SFT "
    "policy through cached log-probs. A PEFT adapter folder with model card and loss curve.",
)
def dpo_checkpoint(context: AssetExecutionContext, config: DPOTrainingConfig, model_store: ModelStore,
                   preference_pairs, reference_logprobs: pl.DataFrame):
    from empathy_dag.train.trainers import prepare_work_dir, run_dpo

    frames = _frames(preference_pairs)
    pairs = train_pairs(frames)
    base = _base_model(model_store)
    sft_dir = model_store.folder("sft_checkpoint")
    ref_sha = reference_sha256(base["sha256"], sft_dir)
    keys, records = _pair_records(pairs, config.max_length)
    ref = reference_logprobs.filter(pl.col("ref_sha256") == ref_sha)
    by_key = {r["pair_key"]: r for r in ref.iter_rows(named=True)}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(keys)} train pairs have no reference log-probs for the current SFT "
            "adapter and max_length: re-materialize reference_logprobs (with the same max_length) first"
        )
    records = [{**rec, "ref_chosen_logps": by_key[k]["ref_chosen_logps"],
                "ref_rejected_logps": by_key[k]["ref_rejected_logps"]} for k, rec in zip(keys, records)]
    text_cols = ["split", "system_prompt", "prompt", "chosen", "rejected"]
    inputs = {
        "preference_pairs": partition_fingerprints(
            {e: df.filter(pl.col("split") == "train") for e, df in frames.items()}, "pair_id", text_cols
        ),
        "train_pairs": pairs.height,
        "sft_checkpoint_sha256": sha256_tree(sft_dir),
        "reference_sha256": ref_sha,
    }
    hyper = _hyperparameters(config)
    key = fingerprint(TRAIN_CODE_VERSION, base["sha256"], inputs["sft_checkpoint_sha256"],
                      frame_fingerprint(pairs, "pair_id", text_cols), hyper)
    work_dir = prepare_work_dir(model_store.folder("work/dpo_checkpoint"), key)
    out_dir = model_store.folder("dpo_checkpoint")
    result = run_dpo(Path(base["path"]), sft_dir, records, config, out_dir=out_dir, work_dir=work_dir)
    last = next((h for h in reversed(result.log_history) if "rewards/margins" in h), {})
    emotions = sorted(e for e, df in frames.items() if df.height)
    margin = float(last.get("rewards/margins", 0.0))
    accuracy = float(last.get("rewards/accuracies", 0.0))
    return _checkpoint_result(
        context, kind="dpo", title="Empathy LoRA DPO (EmPO)", out_dir=out_dir, result=result, base=base,
        inputs=inputs, hyperparameters=hyper,
        extra={"emotions": MetadataValue.json(emotions), "input_fingerprint": key,
               "final_reward_margin": margin, "final_reward_accuracy": accuracy,
               # What the retraining sensor compares against the current pairs, and what the
               # blocking promotion check compares against the promoted checkpoint.
               "n_train_pairs": pairs.height,
               "pairs_fingerprint": train_pairs_fingerprint(pairs["pair_id"].to_list()),
               "metrics": MetadataValue.json({"reward_accuracy": accuracy, "reward_margin": margin,
                                              "final_loss": result.final_loss})},
    )
