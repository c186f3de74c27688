"""The replication profile is run config for the pipeline's own `main_job` (no other code path): every size
validates against the job's config schema and reads the EmpatheticDialogues file from the shared data."""

from __future__ import annotations

import pytest

from tests.conftest import shared_file


@pytest.mark.parametrize("size", ["quick", "full", "gpu"])
def test_replication_profile_is_valid_main_job_run_config(size):
    from dagster import validate_run_config

    from empathy_dag.definitions import defs
    from empathy_dag.train.replication import SIZES, replication_run_config

    ed_file = shared_file("empathetic_dialogues", "utterance_pairs_valid.csv")
    run_config = replication_run_config(size)
    validate_run_config(defs.resolve_job_def("main_job"), run_config)
    assert run_config["resources"]["corpus_sources"]["config"]["extra_files"] == [str(ed_file)]
    s = SIZES[size]
    sft, dpo = run_config["ops"]["sft_checkpoint"]["config"], run_config["ops"]["dpo_checkpoint"]["config"]
    assert sft["max_steps"] == s.sft_steps and dpo["max_steps"] == s.dpo_steps
    # DPO and its reference log-probs see the same stable sample of pairs (dpo_checkpoint refuses otherwise)
    assert dpo["max_train_pairs"] == run_config["ops"]["reference_logprobs"]["config"]["max_train_pairs"]
    assert (
        run_config["resources"]["evaluation"]["config"]["max_items_per_emotion"] == s.eval_items_per_emotion
    )
    if size == "gpu":
        assert run_config["resources"]["base_model_config"]["config"]["source"].startswith("HuggingFaceTB/")


def test_replication_profile_without_the_shared_data_says_where_it_looks(tmp_path):
    from empathy_dag.train.replication import replication_run_config

    with pytest.raises(FileNotFoundError, match="utterance_pairs_valid.csv"):
        replication_run_config("quick", shared_data=tmp_path)
