"""Pure helpers that decide what a training run sees (no model, no Dagster)."""

import polars as pl

from empathy_dag.train.data import capped_pairs, train_pairs


def _pairs(ids):
    return pl.DataFrame({"pair_id": ids, "split": ["train"] * len(ids), "prompt": [f"p{i}" for i in ids]})


def test_capped_pairs_is_a_stable_sample_in_the_original_order():
    ids = [f"pair-{i:03d}" for i in range(50)]
    frame = train_pairs({"joy": _pairs(ids[:25]), "anger": _pairs(ids[25:])})
    assert capped_pairs(frame, 0).equals(frame) and capped_pairs(frame, 50).equals(frame)
    sample = capped_pairs(frame, 10)
    assert sample.height == 10
    assert sample["pair_id"].to_list() == sorted(sample["pair_id"].to_list())  # train_pairs' order kept
    assert sample.equals(capped_pairs(frame.reverse(), 10).sort("pair_id"))  # input order does not matter
    assert set(sample["pair_id"]) != set(ids[:10])  # a hash sample, not the first rows
    # New pairs displace only members that rank after them: most of the sample survives growth.
    grown = capped_pairs(train_pairs({"joy": _pairs(ids + [f"new-{i}" for i in range(10)])}), 10)
    kept = set(sample["pair_id"]) & set(grown["pair_id"])
    assert len(kept) + sum(i.startswith("new-") for i in grown["pair_id"]) == 10


def _split_frames(train: dict[str, int], validation: dict[str, int]) -> dict[str, pl.DataFrame]:
    out = {}
    for e in sorted(set(train) | set(validation)):
        splits = ["train"] * train.get(e, 0) + ["validation"] * validation.get(e, 0)
        out[e] = pl.DataFrame(
            {"dialogue_id": [f"{e}-{i}" for i in range(len(splits))], "split": splits},
            schema={"dialogue_id": pl.String, "split": pl.String},
        )
    return out


def test_too_little_data_or_no_validation_is_a_clear_error_naming_partitions_and_counts():
    import pytest

    from empathy_dag.train.config import SFTTrainingConfig
    from empathy_dag.train.data import TrainingDataError, check_training_data, split_counts

    cfg = SFTTrainingConfig(max_steps=24, per_device_train_batch_size=8, max_epochs=20)
    frames = _split_frames({"grief": 3, "joy": 2, "anger": 0}, {"grief": 1})
    train, val = split_counts(frames, "train"), split_counts(frames, "validation")
    assert train == {"anger": 0, "grief": 3, "joy": 2} and val == {"anger": 0, "grief": 1, "joy": 0}

    with pytest.raises(TrainingDataError) as small:  # fewer items than one batch
        check_training_data("sft_checkpoint", "dialogues", train, val, cfg)
    msg = str(small.value)
    assert "5 train dialogues in 2 of 3 emotion partitions" in msg and "grief 3, joy 2" in msg
    assert "1 partition with none" in msg and "batch" in msg

    many = split_counts(_split_frames({"grief": 6, "joy": 4}, {"joy": 2}), "train")
    with pytest.raises(TrainingDataError) as steps:  # 24 x 8 = 192 examples from 10 items: 19.2 > 5 passes
        check_training_data(
            "sft_checkpoint", "dialogues", many, {"joy": 2}, cfg.model_copy(update={"max_epochs": 5})
        )
    assert "max_steps=24 x batch 8 = 192 examples (19.2 passes" in str(
        steps.value
    ) and "grief 6, joy 4" in str(steps.value)

    with pytest.raises(TrainingDataError) as empty_val:
        check_training_data("dpo_checkpoint", "pairs", many, {"grief": 0, "joy": 0}, cfg)
    assert "validation split is empty in all 2 emotion partitions" in str(empty_val.value)
    assert "grief 6, joy 4" in str(empty_val.value)

    with pytest.raises(TrainingDataError, match="no train pairs in any of the 2 emotion partitions"):
        check_training_data("dpo_checkpoint", "pairs", {"grief": 0, "joy": 0}, {"joy": 1}, cfg)
    # enough data: no error
    check_training_data("sft_checkpoint", "dialogues", {"grief": 100, "joy": 100}, {"joy": 3}, cfg)


def test_warmup_is_whole_steps_of_the_run():
    from empathy_dag.train.config import SFTTrainingConfig
    from empathy_dag.train.trainers import eval_steps, total_steps, warmup_steps

    cfg = SFTTrainingConfig(max_steps=24, warmup_ratio=0.1, evals_per_run=4)
    assert total_steps(cfg, 10) == 24 and warmup_steps(cfg, 10) == 3 and eval_steps(cfg, 10) == 6
    by_epochs = SFTTrainingConfig(
        max_steps=-1, num_train_epochs=2, per_device_train_batch_size=8, warmup_ratio=0.1
    )
    assert total_steps(by_epochs, 100) == 26 and warmup_steps(by_epochs, 100) == 3  # ceil(100/8)=13 x 2
    assert warmup_steps(cfg.model_copy(update={"warmup_ratio": 0.0}), 10) == 0
    assert isinstance(warmup_steps(cfg, 10), int)  # an int means the same on transformers 4.x and 5.x


def test_progress_line_says_step_loss_lr_eval_speed_and_eta():
    from empathy_dag.train.progress import format_duration, progress_line

    line = progress_line(
        "sft",
        {"loss": 2.91234, "learning_rate": 4.2e-4, "eval_loss": 2.8711},
        step=8,
        max_steps=24,
        elapsed=40.0,
        steps_done=8,
        tokens_done=40_000,
    )
    assert line == (
        "sft step 8/24 (33%) | loss 2.9123 | lr 4.20e-04 | eval_loss 2.8711 | 1,000 tok/s | ETA 1m20s"
    )
    # a resumed run: speed and ETA from this process's steps only
    resumed = progress_line(
        "dpo",
        {"loss": 0.69, "rewards/accuracies": 0.75},
        step=12,
        max_steps=16,
        elapsed=10.0,
        steps_done=2,
        tokens_done=None,
    )
    assert resumed == "dpo step 12/16 (75%) | loss 0.6900 | reward_acc 0.750 | ETA 20s"
    assert format_duration(3725) == "1h02m" and format_duration(0.2) == "0s"


def test_experiment_tracking_is_off_by_default_and_checked_when_asked_for(tmp_path):
    import importlib.util

    import pytest

    from empathy_dag.train.config import SFTTrainingConfig
    from empathy_dag.train.trainers import check_trackers, trainer_args

    args = trainer_args(SFTTrainingConfig(), tmp_path, "cpu", n_records=100, has_eval=True)
    assert args["report_to"] == "none" and args["eval_strategy"] == "steps" and args["disable_tqdm"]
    assert check_trackers(["none"]) == []
    with pytest.raises(ValueError, match="not one of"):
        check_trackers(["wandb"])
    if not importlib.util.find_spec("mlflow"):
        with pytest.raises(ValueError, match="needs the mlflow package"):
            check_trackers(["mlflow"])


def test_qlora_without_cuda_is_a_clear_error_before_any_model_loads(tmp_path):
    import pytest

    from empathy_dag.train.config import SFTTrainingConfig
    from empathy_dag.train.trainers import load_base, run_sft

    with pytest.raises(ValueError, match=r"load_in_4bit \(QLoRA\) needs a CUDA GPU.*'cpu'"):
        load_base(tmp_path / "no_model_here", load_in_4bit=True, device="cpu")
    cfg = SFTTrainingConfig(load_in_4bit=True, device="cpu")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        run_sft(
            tmp_path / "no_model_here",
            [{"prompt": [], "completion": []}],
            cfg,
            out_dir=tmp_path / "out",
            work_dir=tmp_path / "work",
        )
    assert not (tmp_path / "out").exists()
