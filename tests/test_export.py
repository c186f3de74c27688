"""The dataset export loads with `datasets.load_dataset` and carries a card with counts and licences."""

import json

import polars as pl
from dagster import DagsterInstance, Output, asset, materialize

from empathy_dag.defs.export.assets import dataset_export
from empathy_dag.defs.partitions import emotion_partitions, single_run

EMOTIONS = ["joy", "sadness"]


def _dialogues(emotion: str) -> pl.DataFrame:
    rows = []
    for i, split in enumerate(["train", "train", "validation", "test"]):
        rows.append(
            {
                "dialogue_id": f"{emotion}-d{i}",
                "situation_id": f"{emotion}-s{i}",
                "emotion": emotion,
                "language": "en",
                "domain": "heart failure",
                "situation": f"{emotion} situation {i}",
                "speaker_utterance": f"speaker {i}",
                "listener_reply": f"reply {i}",
                "source": "seed" if i else "synthetic",
                "origin": "corpus" if i else "synthetic",
                "generator": None if i else "abc123",
                "split": split,
            }
        )
    return pl.DataFrame(rows)


def _pairs(emotion: str) -> pl.DataFrame:
    other = "sadness" if emotion == "joy" else "joy"
    return pl.DataFrame(
        [
            {
                "pair_id": f"{emotion}-p{i}",
                "emotion": emotion,
                "rejected_emotion": other,
                "split": "train",
                "language": "en",
                "draw": i,
                "prompt_dialogue_id": f"{emotion}-d0",
                "rejected_dialogue_id": f"{other}-d0",
                "negative_source": "opposite_corpus",
                "system_prompt": None,
                "prompt": "speaker 0",
                "chosen": "reply 0",
                "rejected": "other reply",
            }
            for i in range(3)
        ]
    )


def _stand_in(name, make):
    @asset(
        name=name,
        partitions_def=emotion_partitions,
        backfill_policy=single_run,
        io_manager_key="parquet_io_manager",
    )
    def _a(context):
        return Output({e: make(e) for e in context.partition_keys})

    return _a


def test_export_loads_with_datasets_and_has_a_card(resources, data_root, tmp_path):
    stand_ins = [
        _stand_in("dataset_splits", _dialogues),
        _stand_in("preference_pairs", _pairs),
        _stand_in(
            "filter_report",
            lambda e: pl.DataFrame(
                {"emotion": [e], "filter": ["near_duplicate"], "reason": ["similar"], "text": ["x"]}
            ),
        ),
    ]
    instance = DagsterInstance.ephemeral()
    for e in EMOTIONS:
        assert materialize(stand_ins, resources=resources, partition_key=e, instance=instance).success
    out = tmp_path / "export"
    result = materialize(
        [*stand_ins, dataset_export],
        selection=[dataset_export],
        resources=resources,
        instance=instance,
        run_config={"ops": {"dataset_export": {"config": {"destination": str(out)}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("dataset_export")[0].metadata
    assert meta["dialogues"].value == {"train": 4, "validation": 2, "test": 2}

    from datasets import load_dataset

    dialogues = load_dataset("parquet", data_dir=str(out / "dialogues"))
    assert dialogues["train"].num_rows == 4 and dialogues["test"].num_rows == 2
    assert set(dialogues["train"]["emotion"]) == set(EMOTIONS)
    pairs = load_dataset("parquet", data_dir=str(out / "preference_pairs"))
    assert pairs["train"].num_rows == 6
    assert {"prompt", "chosen", "rejected"} <= set(pairs["train"].column_names)

    card = (out / "README.md").read_text()
    from huggingface_hub import DatasetCard

    header = DatasetCard.load(out / "README.md").data.to_dict()
    assert [c["config_name"] for c in header["configs"]] == ["dialogues", "preference_pairs"]
    assert (
        header["license"] == ["apache-2.0"] and header["size_categories"] == "n<1K"
    )  # seed + synthetic only
    assert header["dataset_fingerprint"] == json.loads((out / "provenance.json").read_text())["fingerprint"]
    assert "source_datasets" not in header
    assert load_dataset(str(out), "preference_pairs")["train"].num_rows == 6  # the configs header works
    assert "CC BY-NC" not in card  # no EmpatheticDialogues rows in this export
    assert "| seed | 6 |" in card and "| synthetic | 2 |" in card
    assert "| near_duplicate | 2 |" in card
    assert "| joy | 4 | 3 |" in card


def test_dataset_card_header_names_the_licences_and_sources_present():
    from huggingface_hub import DatasetCard

    from empathy_dag.export.dataset import dataset_card

    counts = {"train": 1200, "validation": 0, "test": 0}
    card = dataset_card(
        "d",
        counts,
        {"train": 0, "validation": 0, "test": 0},
        pl.DataFrame({"emotion": ["joy"], "dialogues": [1], "pairs": [0]}),
        {"empathetic_dialogues": 1000, "seed": 200},
        {},
        {"fingerprint": "abc"},
        ["en", "ja"],
    )
    header = DatasetCard(card).data.to_dict()
    assert header["license"] == ["apache-2.0", "cc-by-nc-4.0"]
    assert header["source_datasets"] == ["facebook/empathetic_dialogues"]
    assert header["language"] == ["en", "ja"] and header["size_categories"] == "1K<n<10K"
    assert [c["config_name"] for c in header["configs"]] == ["dialogues"]  # no pairs: no empty config
    assert "CC BY-NC" in card
