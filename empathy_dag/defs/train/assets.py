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
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from empathy_dag.defs.metadata import column_schema_metadata, consumed_materializations, lineage_metadata
from empathy_dag.defs.pipes import run_heavy_step, store_params
from empathy_dag.defs.warehouse.resource import WAREHOUSE_SCHEMA, Warehouse
from empathy_dag.models import pick_device, sha256_tree
from empathy_dag.resources import ModelStore
from empathy_dag.safe_paths import single_component
from empathy_dag.train.config import DPOTrainingConfig, SFTTrainingConfig
from empathy_dag.train.data import (
    capped_pairs,
    check_training_data,
    dpo_record,
    fingerprint,
    frame_fingerprint,
    pair_key,
    partition_fingerprints,
    sft_records,
    split_counts,
    stable_sample,
    train_dialogues,
    train_pairs,
)
from empathy_dag.train.refcache import (
    CACHE_SCHEMA,
    ReferenceLogprobCache,
    cached_reference_logprobs,
    compute_reference_logprobs,
    load_reference_model,
)
from empathy_dag.train.retraining import train_pairs_fingerprint
from empathy_dag.train.steps import write_records
from empathy_dag.train.trainers import prepare_work_dir

# v2: validation split as eval_dataset, held-out before/after, warmup in whole steps, all-linear LoRA.
TRAIN_CODE_VERSION = "train-v2"
TRAINING_POOL = "training"
ALL_EXISTING_PARTITIONS = {"allow_missing_partitions": True}


def _frames(value) -> dict[str, pl.DataFrame]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"expected one frame per emotion partition, got {type(value).__name__}")


def _base_model(model_store: ModelStore) -> dict:
    path = model_store.fetch("base_model")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no model: materialize `base_model` first")
    return {"path": str(path), "sha256": sha256_tree(path)}


def languages_of(frame: pl.DataFrame) -> list[str]:
    """The languages a model was trained on (the card's `language`); English when the data says none."""
    if "language" not in frame.columns or not frame.height:
        return ["en"]
    return sorted(str(v) for v in frame["language"].drop_nulls().unique()) or ["en"]


def _hyperparameters(cfg) -> dict:
    return json.loads(cfg.model_dump_json()) if hasattr(cfg, "model_dump_json") else dict(cfg)


def _per_emotion(frame: pl.DataFrame, emotions) -> dict[str, int]:
    counts = dict(frame.group_by("emotion").len().iter_rows()) if frame.height else {}
    return {e: int(counts.get(e, 0)) for e in sorted(emotions)}


def _consumed(
    context: AssetExecutionContext, partitioned: Mapping[str, list[str]], whole: list[str]
) -> list[dict]:
    """The exact upstream materializations this step is reading: each consumed partition of the
    partitioned inputs, and the latest materialization of each unpartitioned one. Read before training,
    right after the IO manager loaded the inputs, so a later materialization cannot slip in."""
    out = []
    for asset_name, partitions in partitioned.items():
        out += consumed_materializations(context.instance, asset_name, partitions)
    for asset_name in whole:
        out += consumed_materializations(context.instance, asset_name)
    return out


def _with_lineage(result: MaterializeResult, consumed: list[dict]) -> MaterializeResult:
    return MaterializeResult(
        asset_key=result.asset_key,
        metadata={**(result.metadata or {}), **lineage_metadata(consumed)},
        check_results=result.check_results,
        data_version=result.data_version,
        tags=result.tags,
    )


def _launch_training(
    context: AssetExecutionContext,
    model_store: ModelStore,
    *,
    kind: str,
    key: str,
    records: list[dict],
    eval_records: list[dict],
    hyperparameters: dict,
    card: dict,
    consumed: list[dict],
    sft_name: str | None = None,
):
    """Persist the records, then run `train.steps.train_<kind>` through Dagster Pipes (a subprocess here,
    a GPU task on ECS in the aws profile): the run's log shows the step's log lines and the returned
    materialization carries the step's metadata."""

    name = f"{kind}_checkpoint"
    inputs_name = f"work/{name}_records"
    write_records(model_store.folder(inputs_name), records, eval_records)
    model_store.persist(inputs_name)
    prepare_work_dir(model_store.folder(f"work/{name}"), key)  # drops work folders of other inputs
    params = {
        "store": store_params(model_store),
        "inputs_name": inputs_name,
        "work_name": f"work/{name}/{key}",
        "out_name": name,
        "sft_name": sft_name,
        "config": hyperparameters,
        "card": card,
    }
    result = run_heavy_step(context, f"empathy_dag.train.steps:train_{kind}", params)
    model_store.fetch(name)  # the run's copy, equal to what the step persisted (no-op on one disk)
    return _with_lineage(result, consumed)


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
def sft_checkpoint(
    context: AssetExecutionContext, config: SFTTrainingConfig, model_store: ModelStore, dataset_splits
):
    frames = _frames(dataset_splits)
    dialogues = train_dialogues(frames)
    validation = stable_sample(train_dialogues(frames, "validation"), "dialogue_id", config.max_eval_items)
    # Before any model is loaded: too little data for the steps, or no validation split, is a clear error.
    check_training_data(
        "sft_checkpoint",
        "dialogues",
        split_counts(frames, "train"),
        split_counts(frames, "validation"),
        config,
    )
    base = _base_model(model_store)
    text_cols = ["situation_id", "speaker_utterance", "listener_reply", "split"]
    inputs = {
        "dataset_splits": partition_fingerprints(
            {e: df.filter(pl.col("split") == "train") for e, df in frames.items()}, "dialogue_id", text_cols
        ),
        "train_dialogues": dialogues.height,
        "validation_dialogues": validation.height,
    }
    hyper = _hyperparameters(config)
    key = fingerprint(
        TRAIN_CODE_VERSION, base["sha256"], frame_fingerprint(dialogues, "dialogue_id", text_cols), hyper
    )
    emotions = sorted(e for e, df in frames.items() if df.height)
    card = {
        "title": "Empathy LoRA SFT",
        "kind": "sft",
        "base_model_sha256": base["sha256"],
        "inputs": inputs,
        "extra": {"emotions": emotions, "input_fingerprint": key, "languages": languages_of(dialogues)},
    }
    consumed = _consumed(context, {"dataset_splits": sorted(frames)}, ["base_model"])
    return _launch_training(
        context,
        model_store,
        kind="sft",
        key=key,
        consumed=consumed,
        records=sft_records(dialogues, config.system_prompt),
        eval_records=sft_records(validation, config.system_prompt),
        hyperparameters=hyper,
        card=card,
    )


class ReferenceLogprobConfig(Config):
    max_length: int = Field(default=128, description="Must equal dpo_checkpoint's max_length.")
    max_train_pairs: int = Field(
        default=0, description="Must equal dpo_checkpoint's max_train_pairs (0 = all)."
    )
    batch_size: int = 16
    device: str = "auto"


# What reference_logprobs writes: the cache's columns, keyed by the pair they belong to.
REFERENCE_LOGPROBS_SCHEMA = {"pair_id": pl.String, **CACHE_SCHEMA}


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
    kinds={"parquet", "polars"},
    metadata=column_schema_metadata(REFERENCE_LOGPROBS_SCHEMA),
    pool=TRAINING_POOL,
    required_resource_keys={"model_store"},
    ins={"preference_pairs": AssetIn(metadata=ALL_EXISTING_PARTITIONS)},
    deps=["base_model", "sft_checkpoint"],
    description="Reference log-probs (SFT policy, frozen) of every train pair, from a cache keyed by "
    "(reference sha256, pair): computed once, only new pairs are computed on retraining.",
)
def reference_logprobs(context: AssetExecutionContext, config: ReferenceLogprobConfig, preference_pairs):
    model_store: ModelStore = context.resources.model_store
    pairs = capped_pairs(train_pairs(_frames(preference_pairs)), config.max_train_pairs)
    base = _base_model(model_store)
    sft_dir = model_store.fetch("sft_checkpoint")
    ref_sha = reference_sha256(base["sha256"], sft_dir)
    keys, records = _pair_records(pairs, config.max_length)
    device = pick_device(config.device)

    def compute(missing):
        model, tokenizer = load_reference_model(Path(base["path"]), sft_dir, device=device)
        return compute_reference_logprobs(
            model,
            tokenizer,
            missing,
            max_length=config.max_length,
            batch_size=config.batch_size,
            device=device,
        )

    # The cache is a model-store folder: in the aws profile a fresh task starts from the published copy.
    cache = ReferenceLogprobCache(model_store.fetch("reference_logprobs", missing_ok=True) / "cache.parquet")
    frame, stats = cached_reference_logprobs(cache, ref_sha, keys, records, compute)
    if cache.path.is_file():
        model_store.persist("reference_logprobs")
    frame = frame.with_columns(
        pl.Series("pair_id", pairs["pair_id"] if pairs.height else [], dtype=pl.String)
    )
    context.log.info(f"reference log-probs: {stats}")
    return Output(
        frame.select(list(REFERENCE_LOGPROBS_SCHEMA)),
        metadata={
            "dagster/row_count": frame.height,
            **stats,
            "reference_sha256": ref_sha,
            "cache_path": MetadataValue.path(str(cache.path)),
            "max_length": config.max_length,
            "max_train_pairs": config.max_train_pairs,
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
def dpo_checkpoint(
    context: AssetExecutionContext,
    config: DPOTrainingConfig,
    model_store: ModelStore,
    preference_pairs,
    reference_logprobs: pl.DataFrame,
):
    frames = _frames(preference_pairs)
    available = train_pairs(frames)
    pairs = capped_pairs(available, config.max_train_pairs)
    validation = stable_sample(train_pairs(frames, "validation"), "pair_id", config.max_eval_items)
    check_training_data(
        "dpo_checkpoint", "pairs", _per_emotion(pairs, frames), split_counts(frames, "validation"), config
    )
    base = _base_model(model_store)
    sft_dir = model_store.fetch("sft_checkpoint")
    ref_sha = reference_sha256(base["sha256"], sft_dir)
    keys, records = _pair_records(pairs, config.max_length)
    ref = reference_logprobs.filter(pl.col("ref_sha256") == ref_sha)
    by_key = {r["pair_key"]: r for r in ref.iter_rows(named=True)}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(keys)} train pairs have no reference log-probs for the current SFT "
            "adapter, max_length and max_train_pairs: re-materialize reference_logprobs (with the same "
            "max_length and max_train_pairs) first"
        )
    records = [
        {
            **rec,
            "ref_chosen_logps": by_key[k]["ref_chosen_logps"],
            "ref_rejected_logps": by_key[k]["ref_rejected_logps"],
        }
        for k, rec in zip(keys, records)
    ]
    text_cols = ["split", "system_prompt", "prompt", "chosen", "rejected"]
    inputs = {
        "preference_pairs": partition_fingerprints(
            {e: df.filter(pl.col("split") == "train") for e, df in frames.items()}, "pair_id", text_cols
        ),
        "train_pairs": pairs.height,
        "available_train_pairs": available.height,
        "validation_pairs": validation.height,
        "sft_checkpoint_sha256": sha256_tree(sft_dir),
        "reference_sha256": ref_sha,
    }
    hyper = _hyperparameters(config)
    key = fingerprint(
        TRAIN_CODE_VERSION,
        base["sha256"],
        inputs["sft_checkpoint_sha256"],
        frame_fingerprint(pairs, "pair_id", text_cols),
        hyper,
    )
    emotions = sorted(e for e, df in frames.items() if df.height)
    card = {
        "title": "Empathy LoRA DPO (EmPO)",
        "kind": "dpo",
        "base_model_sha256": base["sha256"],
        "inputs": inputs,
        "extra": {
            "emotions": emotions,
            "input_fingerprint": key,
            "languages": languages_of(pairs),
            # What the retraining sensor compares against the current pairs, and what the
            # blocking promotion check compares against the promoted checkpoint: the train pairs
            # this run was given (a capped run trained on a sample of them; it is not stale).
            "n_train_pairs": available.height,
            "pairs_fingerprint": train_pairs_fingerprint(available["pair_id"].to_list()),
        },
    }
    eval_records = [dpo_record(r) for r in validation.iter_rows(named=True)]
    consumed = _consumed(
        context, {"preference_pairs": sorted(frames)}, ["reference_logprobs", "sft_checkpoint", "base_model"]
    )
    return _launch_training(
        context,
        model_store,
        kind="dpo",
        key=key,
        consumed=consumed,
        records=records,
        eval_records=eval_records,
        hyperparameters=hyper,
        card=card,
        sft_name="sft_checkpoint",
    )


# ------------------------------------------------------------------------------ models users can share

# Not in `main_job`: merging writes a second full copy of the base weights (twice its disk for a large
# model), which only someone sharing a model wants; materialize it on its own.
MERGED_MODEL = "merged_model"


class MergedModelConfig(Config):
    adapter: str = Field(
        default="dpo_checkpoint",
        description="Model-store adapter folder to merge (dpo_checkpoint or sft_checkpoint).",
    )
    dtype: str = Field(
        default="auto",
        description="Dtype of the merged weights; auto = the base model's saved dtype (no up-cast).",
    )
    push_to_hub: bool = Field(
        default=False,
        description="Upload the merged folder to the Hugging Face hub "
        "(needs repo_id, a token and HF_HUB_OFFLINE=0). Off by default.",
    )
    repo_id: str = Field(default="", description="Hub repository `owner/name` for push_to_hub.")
    private: bool = Field(default=True, description="Create the hub repository private.")


def leaderboard_rows_for(warehouse: Warehouse, model_sha256: str) -> list[dict]:
    """The leaderboard rows (all emotions) of the evaluated system whose weights have this sha256;
    empty when there is no leaderboard yet or the model was not evaluated."""
    import duckdb

    columns = [
        "metric",
        "value",
        "n",
        "ci_low",
        "ci_high",
        "verdict",
        "delta",
        "delta_ci_low",
        "delta_ci_high",
        "p_adjusted",
    ]
    if not warehouse.s3_uri and not Path(warehouse.database).is_file():
        return []  # (a read-only connect to a missing file would wait out the lock retries first)
    try:
        with warehouse.connect(read_only=True) as conn:
            rows = conn.execute(
                f"SELECT {', '.join(columns)} FROM {WAREHOUSE_SCHEMA}.leaderboard "
                "WHERE emotion = 'all' AND model_sha256 = ? ORDER BY metric",
                [model_sha256],
            ).fetchall()
    except (duckdb.CatalogException, duckdb.IOException):  # no leaderboard (or no warehouse file) yet
        return []
    return [{c: (v.item() if hasattr(v, "item") else v) for c, v in zip(columns, row)} for row in rows]


@asset(
    name=MERGED_MODEL,
    group_name="train",
    code_version="merged-v1",
    kinds={"pytorch", "safetensors", "huggingface"},
    pool=TRAINING_POOL,
    deps=["base_model", "dpo_checkpoint", "leaderboard"],
    description="The adapter merged into the base model (peft merge_and_unload) as full safetensors weights "
    "with tokenizer, chat template and a hub model card (base model id, licence, datasets, language, "
    "leaderboard metrics with intervals): loads with AutoModelForCausalLM and vLLM, no peft. push_to_hub "
    "is opt-in.",
)
def merged_model(
    context: AssetExecutionContext, config: MergedModelConfig, model_store: ModelStore, warehouse: Warehouse
) -> MaterializeResult:

    single_component(config.adapter, "MergedModelConfig.adapter")
    if config.push_to_hub and config.repo_id.count("/") != 1:
        raise ValueError(f"push_to_hub needs repo_id as 'owner/name', got {config.repo_id!r}")
    adapter_dir = model_store.fetch(config.adapter, missing_ok=True)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} has no PEFT adapter: materialize {config.adapter} first")
    _base_model(model_store)  # a clear error before a subprocess starts
    rows = leaderboard_rows_for(warehouse, sha256_tree(adapter_dir))
    context.log.info(f"{len(rows)} leaderboard metrics for {config.adapter} go into the card")
    params = {
        "store": store_params(model_store),
        "adapter_name": config.adapter,
        "out_name": MERGED_MODEL,
        "title": f"Empathy {config.adapter.removesuffix('_checkpoint').upper()} (merged)",
        "dtype": config.dtype,
        "leaderboard_rows": rows,
        "push_to_hub": config.push_to_hub,
        "repo_id": config.repo_id,
        "private": config.private,
    }
    # The subprocess is offline like every step unless an upload was asked for.
    env = {"HF_HUB_OFFLINE": "0"} if config.push_to_hub else None
    return run_heavy_step(context, "empathy_dag.train.steps:merge_checkpoint", params, env=env)
