"""The replication profile: run config for `main_job` (the pipeline's own assets, no other code path) on
public data, sized to check the seed papers' headline directions.

Data: the seed corpus plus EmpatheticDialogues' validation conversations as EmPO's authors re-shaped them
(`empathetic_dialogues/utterance_pairs_valid.csv` in the shared data; the first exchange of each
conversation becomes a (speaker, listener) dialogue, the 32 labels mapped onto the 28), grown by
SYNTHEMPATHY-style synthetic dialogues; EmPO pairs (rejected = a reply written for the opposite emotion);
LoRA SFT then DPO; base / SFT / DPO evaluated on the held-out test split.

Sizes:
- `full`: the embedded SmolLM2-135M on CPU, sized for about 90 minutes on 2 cores (see
  `bench/bench_replication.py`, which runs it and reports through the scorecard).
- `quick`: the same graph and data with the smallest sizes, a smoke check of the profile (minutes).
- `gpu`: the same profile for one GPU and a larger model (config values only): SmolLM2-1.7B-Instruct from
  the hub, bf16 (automatic on a GPU that supports it), longer sequences, bigger batches, more steps.
  `python bench/bench_replication.py --size gpu` with hub access (HF_HUB_OFFLINE=0) runs it unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from empathy_dag.demo import demo_run_config
from empathy_dag.settings import shared_data_dir

ED_PAIRS_FILE = ("empathetic_dialogues", "utterance_pairs_valid.csv")


@dataclass(frozen=True)
class ReplicationSize:
    sft_steps: int
    dpo_steps: int
    batch: int
    max_length: int
    synthetic_per_emotion: int
    eval_items_per_emotion: int
    judge_items: int
    max_new_tokens: int
    test_fraction: float = 0.15
    validation_fraction: float = 0.1
    sft_learning_rate: float = 1e-3
    dpo_learning_rate: float = 5e-4
    lora_r: int = 8
    base_model: dict = field(default_factory=dict)
    classifier_rows: int = 6000
    epitome_rows: int = 0  # 0 = all 3,084 rows per mechanism
    max_eval_items: int = 256


SIZES = {
    # ~2,700 ED + seed dialogues; 96 x 8 = 768 SFT examples (about a third of an epoch), 32 x 8 = 256 DPO pairs.
    # Measured (BENCHMARKS.md "Replication", 2-core AMD EPYC): 79 min end to end; SFT 11.5 s and DPO ~37 s per
    # step including their held-out evaluations on 160 items. The size was cut from 160 / 64 steps on step times
    # taken under contention; at the measured rates 160 / 64 would add ~25 min (about 105 min in all).
    "full": ReplicationSize(
        sft_steps=96,
        dpo_steps=32,
        batch=8,
        max_length=128,
        synthetic_per_emotion=4,
        eval_items_per_emotion=12,
        judge_items=112,
        max_new_tokens=64,
        max_eval_items=160,
    ),
    "quick": ReplicationSize(
        sft_steps=4,
        dpo_steps=2,
        batch=4,
        max_length=64,
        synthetic_per_emotion=1,
        eval_items_per_emotion=1,
        judge_items=4,
        max_new_tokens=24,
        classifier_rows=1500,
        epitome_rows=400,
        max_eval_items=16,
    ),
    # One GPU (24 GB is plenty for 1.7B + LoRA in bf16): a larger model, longer sequences, a few epochs' worth.
    "gpu": ReplicationSize(
        sft_steps=1500,
        dpo_steps=600,
        batch=16,
        max_length=256,
        synthetic_per_emotion=16,
        eval_items_per_emotion=20,
        judge_items=560,
        max_new_tokens=96,
        sft_learning_rate=2e-4,
        dpo_learning_rate=5e-5,
        lora_r=16,
        base_model={"source": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "allow_hub": True, "dtype": "bfloat16"},
        max_eval_items=512,
    ),
}


def replication_run_config(size: str = "full", shared_data: Path | None = None) -> dict:
    """`main_job` run config of the replication profile (a `demo_run_config` with other sizes and the
    EmpatheticDialogues file as an extra corpus source)."""

    s = SIZES[size]
    ed_file = (shared_data or shared_data_dir()).joinpath(*ED_PAIRS_FILE)
    if not ed_file.is_file():
        raise FileNotFoundError(
            f"the replication profile reads {ed_file} (EmpatheticDialogues, see "
            "../shared/data/README.md); set EMPATHY_DAG_SHARED_DATA to its folder"
        )
    cfg = demo_run_config("demo")
    ops, resources = cfg["ops"], cfg["resources"]
    ops["brainstormed_situations"]["config"].update(
        per_emotion=s.synthetic_per_emotion, max_new_tokens=s.max_new_tokens
    )
    ops["speaker_explanations"]["config"].update(max_new_tokens=s.max_new_tokens)
    ops["synthetic_dialogues"]["config"].update(max_new_tokens=s.max_new_tokens)
    ops["emotion_classifier"]["config"].update(max_train_rows=s.classifier_rows)
    ops["dataset_splits"] = {
        "config": {
            "train_fraction": round(1 - s.test_fraction - s.validation_fraction, 6),
            "validation_fraction": s.validation_fraction,
            "test_fraction": s.test_fraction,
        }
    }
    ops["preference_pairs"]["config"].update(k=1)
    train = {
        "max_length": s.max_length,
        "per_device_train_batch_size": s.batch,
        "lora_r": s.lora_r,
        "lora_alpha": 2 * s.lora_r,
        "save_steps": max(2, s.sft_steps // 4),
        "max_eval_items": s.max_eval_items,
    }
    dpo_pairs = s.dpo_steps * s.batch  # the pairs DPO reaches: the reference log-probs of only those
    ops["sft_checkpoint"] = {
        "config": {**train, "max_steps": s.sft_steps, "learning_rate": s.sft_learning_rate}
    }
    ops["reference_logprobs"] = {"config": {"max_length": s.max_length, "max_train_pairs": dpo_pairs}}
    ops["dpo_checkpoint"] = {
        "config": {
            **train,
            "max_steps": s.dpo_steps,
            "learning_rate": s.dpo_learning_rate,
            "max_train_pairs": dpo_pairs,
            "save_steps": max(2, s.dpo_steps // 4),
        }
    }
    resources["evaluation"]["config"].update(
        max_items_per_emotion=s.eval_items_per_emotion,
        max_new_tokens=s.max_new_tokens,
        judge_max_items=s.judge_items,
        alignment_max_items=s.judge_items,
        epitome_max_rows=s.epitome_rows,
        agreement_bootstrap=1000,
    )
    resources["corpus_sources"] = {"config": {"extra_files": [str(ed_file)]}}
    if s.base_model:
        resources["base_model_config"] = {"config": dict(s.base_model)}
    return cfg
