"""Run configuration of the demo (`python -m empathy_dag demo`) and the summary printed at its end.

Two profiles, both on the embedded models and a laptop CPU:
- `demo` (the README's command): grows the seed corpus by a couple of synthetic dialogues per emotion,
  trains SFT and DPO for a few dozen steps, evaluates base / SFT / DPO on 3 test items per emotion
  (84 items per system, every emotion), with intervals and paired tests.
- `tiny` (the end-to-end test): the same graph with the smallest sizes that still exercise every step.

Assets that need the public research data (GoEmotions for the emotion-consistency classifier,
Epitome for the empathy-level classifiers) are left out of the selection when that data is absent;
the steps that use them then skip, and say so in their metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from empathy_dag.evaluate.report import leaderboard_text


@dataclass(frozen=True)
class DemoProfile:
    synthetic_per_emotion: int
    classifier_rows: int
    sft_steps: int
    dpo_steps: int
    pair_draws: int
    eval_items_per_emotion: int
    judge_items: int
    alignment_items: int
    epitome_rows: int
    max_new_tokens: int
    max_length: int
    # DPO sees dpo_steps x batch 8 pairs; a cap spares the reference log-probs of pairs it never reaches.
    dpo_max_pairs: int = 0
    # Test dialogues every emotion must have (dataset_splits tops up, evaluation_set checks): the
    # scorecard's n per emotion. Items per system = 28 x this.
    min_test_per_emotion: int = 2
    # Validation dialogues (and pairs) SFT and DPO evaluate, each of evals_per_run times: a stable sample.
    # The seed corpus's validation split is 50 dialogues (23 en + 27 ja) since the Japanese seeds grew to
    # 10 per emotion (26 before); the cap keeps the profiles' validation passes the size they were.
    max_eval_items: int = 256
    # Evaluations of the validation split during SFT / DPO (the loss curve's eval points). The held-out
    # before / after measurement (n, interval) is separate and always runs; the trainer's eval at the last
    # step repeats it. 0 = before and after only.
    sft_evals_per_run: int = 4
    dpo_evals_per_run: int = 4


PROFILES = {
    # dpo_max_pairs = dpo_steps x batch 8: the reference log-probs of the pairs DPO reaches, not of all ~300.
    # Training budget (issue 23, BENCHMARKS.md "Demo time per step"): SFT 16 steps x 8 dialogues x 96 tokens
    # (its held-out loss had fallen most of the way by step 12 of 24), DPO 8 steps x 8 pairs (after 8 steps the
    # held-out reward accuracy was 0.58, Wilson [0.39, 0.75], on 26 pairs: fewer steps would not show it). The
    # held-out before / after measurement on the validation sample is what shows the learning (n, interval), so
    # the trainers' own evaluations are cut to one mid-run point for SFT and none for DPO: each was a pass over
    # the validation sample (DPO's also a reference pass when trl built its eval set).
    "demo": DemoProfile(
        synthetic_per_emotion=2,
        classifier_rows=6000,
        sft_steps=16,
        dpo_steps=8,
        pair_draws=1,
        eval_items_per_emotion=3,
        judge_items=84,
        alignment_items=84,
        epitome_rows=1500,
        max_new_tokens=48,
        max_length=96,
        dpo_max_pairs=64,
        min_test_per_emotion=3,
        max_eval_items=32,
        sft_evals_per_run=2,
        dpo_evals_per_run=0,
    ),
    "tiny": DemoProfile(
        synthetic_per_emotion=1,
        classifier_rows=1500,
        sft_steps=3,
        dpo_steps=2,
        pair_draws=1,
        eval_items_per_emotion=1,
        judge_items=8,
        alignment_items=4,
        epitome_rows=400,
        max_new_tokens=24,
        max_length=64,
        dpo_max_pairs=16,
        min_test_per_emotion=1,
        max_eval_items=24,
    ),
}


def demo_run_config(profile: str = "demo") -> dict:
    p = PROFILES[profile]
    lora = {
        "max_length": p.max_length,
        "save_steps": max(2, p.sft_steps // 2),
        "max_eval_items": p.max_eval_items,
    }
    return {
        "ops": {
            "brainstormed_situations": {
                "config": {"per_emotion": p.synthetic_per_emotion, "max_new_tokens": p.max_new_tokens}
            },
            "speaker_explanations": {"config": {"max_new_tokens": p.max_new_tokens}},
            "synthetic_dialogues": {"config": {"max_new_tokens": p.max_new_tokens}},
            # the linear metric models: the fine-tuned ones (the defaults) take hours on a laptop CPU
            "emotion_classifier": {"config": {"max_train_rows": p.classifier_rows, "model": "linear"}},
            "dataset_splits": {"config": {"min_test_dialogues_per_emotion": p.min_test_per_emotion}},
            "preference_pairs": {"config": {"k": p.pair_draws}},
            "sft_checkpoint": {
                "config": {**lora, "max_steps": p.sft_steps, "evals_per_run": p.sft_evals_per_run}
            },
            "reference_logprobs": {
                "config": {"max_length": p.max_length, "max_train_pairs": p.dpo_max_pairs}
            },
            "dpo_checkpoint": {
                "config": {
                    **lora,
                    "max_steps": p.dpo_steps,
                    "max_train_pairs": p.dpo_max_pairs,
                    "evals_per_run": p.dpo_evals_per_run,
                }
            },
        },
        "resources": {
            "evaluation": {
                "config": {
                    "max_items_per_emotion": p.eval_items_per_emotion,
                    "min_items_per_emotion": p.min_test_per_emotion,
                    "max_new_tokens": p.max_new_tokens,
                    "judge_max_items": p.judge_items,
                    "alignment_max_items": p.alignment_items,
                    "epitome_max_rows": p.epitome_rows,
                    "epitome_model": "linear",
                    "agreement_bootstrap": 200,
                }
            },
        },
        # The demo's terminal shows progress lines, not every engine event.
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }


def demo_selection(job, shared_data: Path) -> list | None:
    """The main job's assets, less those whose public training data is absent on this machine."""
    from dagster import AssetKey

    leave_out: set[str] = set()
    if not (shared_data / "goemotions" / "train.tsv").is_file():
        leave_out |= {"goemotions_examples", "emotion_classifier"}
    if not (shared_data / "epitome" / "emotional-reactions-reddit.csv").is_file():
        leave_out |= {"epitome_er_classifier", "epitome_ip_classifier", "epitome_ex_classifier"}
    if not leave_out:
        return None
    keys = job.asset_layer.executable_asset_keys if hasattr(job, "asset_layer") else set()
    return [k for k in keys if k.to_user_string() not in leave_out] or [AssetKey("emotion_taxonomy")]


def print_summary(result, instance, elapsed: float, warehouse_path: str | None = None) -> None:
    from collections import Counter

    mats = result.get_asset_materialization_events()
    per_asset = Counter(m.asset_key.to_user_string() for m in mats)
    status = "succeeded" if result.success else "FAILED"
    print(f"\nmain_job {status} in {elapsed:.0f} s (run {result.run_id})")
    for key, n in sorted(per_asset.items()):
        print(f"  {key:<32} {n:>3} materialization{'s' if n != 1 else ''}")
    checks = result.get_asset_check_evaluations()
    failed = [c for c in checks if not c.passed]
    print(f"  asset checks: {len(checks) - len(failed)} passed, {len(failed)} failed")
    for c in failed:
        print(f"    FAILED {c.asset_key.to_user_string()}:{c.check_name}")
    if warehouse_path and Path(warehouse_path).is_file():
        print()
        print(leaderboard_text(warehouse_path))
    print(f"\nDagster instance: {instance.root_directory}  (open it with `make dev`)")
