"""Does the demo's training learn? The train assets only (`sft_checkpoint`, `reference_logprobs`,
`dpo_checkpoint`), materialized with the demo profile's run config on the demo's data less its synthetic
dialogues (the seed corpus through the real `dataset_splits` and `preference_pairs`), then the checkpoints'
held-out metadata: SFT eval loss before / after on the validation dialogues, DPO reward accuracy and margin
on the validation pairs, each with n and a 95% interval.

    python bench/bench_training.py            # the demo profile's sizes and the current defaults
    python bench/bench_training.py --legacy   # the hyperparameters before issue 16 (q/v LoRA, 2e-4, linear,
                                              # no warmup), same sizes: what the demo used to do

Prints a Markdown block for BENCHMARKS.md ("Training that learns"), with the CPU and the load average."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LEGACY = {
    "learning_rate": 2e-4,
    "target_modules": ["q_proj", "v_proj"],
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0,
}
LEGACY_DPO = {"learning_rate": 5e-5, "lr_scheduler_type": "linear", "warmup_ratio": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--base-model", help="a converted base model folder (default: convert the GGUF once)")
    args = parser.parse_args()

    from dagster import materialize

    from bench.bench_replication import cpu_name
    from empathy_dag.defs.pairs.assets import dataset_splits, preference_pairs
    from empathy_dag.defs.profiles import local_resources
    from empathy_dag.defs.train.assets import dpo_checkpoint, reference_logprobs, sft_checkpoint
    from empathy_dag.demo import demo_run_config
    from empathy_dag.models import convert_gguf_to_safetensors, embedded_smollm2_gguf
    from tests.test_pairs_splits import all_emotions_tags, curated_stand_in, seed_dialogues

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    resources = local_resources(work / "data")
    base = resources["model_store"].folder("base_model")
    if args.base_model:
        base.parent.mkdir(parents=True, exist_ok=True)
        base.symlink_to(Path(args.base_model).resolve(), target_is_directory=True)
    else:
        convert_gguf_to_safetensors(embedded_smollm2_gguf(), base)
    frame = seed_dialogues()
    ops = demo_run_config(args.profile)["ops"]
    run_config = {
        "ops": {
            k: ops[k] for k in ("preference_pairs", "sft_checkpoint", "reference_logprobs", "dpo_checkpoint")
        }
    }
    if args.legacy:
        run_config["ops"]["sft_checkpoint"]["config"].update(LEGACY)
        run_config["ops"]["dpo_checkpoint"]["config"].update(LEGACY_DPO)
    data = [curated_stand_in(frame), dataset_splits, preference_pairs]
    assert materialize(
        data,
        resources=resources,
        tags=all_emotions_tags(),
        run_config={"ops": {"preference_pairs": run_config["ops"]["preference_pairs"]}},
    ).success
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = materialize(
        [*data, sft_checkpoint, reference_logprobs, dpo_checkpoint],
        selection=[sft_checkpoint, reference_logprobs, dpo_checkpoint],
        resources=resources,
        run_config={"ops": {k: v for k, v in run_config["ops"].items() if k != "preference_pairs"}},
    )
    seconds = time.perf_counter() - start
    assert result.success
    out = {
        "profile": args.profile,
        "legacy": args.legacy,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "seconds": round(seconds, 1),
        "sft_config": run_config["ops"]["sft_checkpoint"]["config"],
        "dpo_config": run_config["ops"]["dpo_checkpoint"]["config"],
    }
    for name in ("sft_checkpoint", "dpo_checkpoint"):
        md = result.asset_materializations_for_node(name)[0].metadata
        out[name] = {
            "heldout": md["heldout"].value,
            "train_seconds": md["train_seconds"].value,
            "first_loss": md["first_loss"].value,
            "final_loss": md["final_loss"].value,
            "train_records": md["train_records"].value,
            "eval_records": md["eval_records"].value,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
