"""Scoring someone else's predictions without converting them: a `~`-separated file with its own column
names, one system per file, its own item ids and a multi-turn history, joined with human ratings whose
dimension names differ from the judge's; and the bad-input paths (a mapped column missing, ratings of
items nobody predicted) that must fail naming the file and leave nothing half-written."""

import csv
import json

import duckdb
import numpy as np
import polars as pl
import pytest
from dagster import materialize

from empathy_dag.defs.evaluate import assets as ev
from empathy_dag.defs.evaluate.resources import EvaluationConfig, ExternalPredictionFile
from empathy_dag.evaluate.items import (
    ExternalPredictionSpec,
    dialogue_text,
    item_id,
    read_external_predictions,
    read_human_ratings,
)
from empathy_dag.evaluate.metrics.agreement import rater_alpha
from empathy_dag.evaluate.metrics.epitome import seeker_side
from empathy_dag.evaluate.metrics.judge import load_rubric
from empathy_dag.taxonomy import default_taxonomy
from tests.conftest import shared_file

# the file's own names, as in EmPO's released prediction files: nothing here is this project's schema
COLUMNS = {
    "item_id": "dialog_id",
    "emotion": "emotion_label",
    "history": "past_turns",
    "speaker_utterance": "speaker",
    "reference": "gold",
    "prediction": "generated",
}
N_ITEMS = 4


def _conversations(n: int) -> list[dict]:
    """Real EmpatheticDialogues conversations with at least four turns: earlier turns, the speaker's
    last turn, the listener's reply (the reference)."""
    path = shared_file("empathetic_dialogues", "utterance_pairs_valid.csv")
    df = pl.read_csv(path, infer_schema_length=0).with_columns(
        pl.col(c).str.replace_all("_comma_", ",") for c in ("sp1", "sp2", "prompt")
    )
    out = []
    for (conv,), turns in df.sort("conv_id", pl.col("utterance_idx").cast(pl.Int64)).group_by(
        "conv_id", maintain_order=True
    ):
        utterances = [turns["sp1"][0], *turns["sp2"].to_list()]
        if len(utterances) < 4:
            continue
        out.append(
            {
                "dialog_id": f"ed-{conv}",
                "emotion_label": turns["context"][0],
                "prompt": turns["prompt"][0],
                "turns": utterances[:4],
            }
        )
        if len(out) == n:
            break
    return out


@pytest.fixture
def empo_file(tmp_path):
    convs = _conversations(N_ITEMS)
    path = tmp_path / "empo_predictions.txt"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="~")
        w.writerow(["dialog_id", "emotion_label", "situation", "past_turns", "speaker", "gold", "generated"])
        for k, c in enumerate(convs):
            t = c["turns"]  # speaker, listener, speaker, listener: the last listener turn is the reference
            w.writerow(
                [
                    c["dialog_id"],
                    c["emotion_label"],
                    c["prompt"],
                    " __eou__ ".join(t[:2]),
                    t[2],
                    t[3],
                    t[3] if k % 2 == 0 else "ok.",
                ]
            )
    return path, convs


def _spec(path, **extra) -> ExternalPredictionFile:
    options = {"separator": "~", "columns": COLUMNS, "system": "empo-ft", "history_separator": "__eou__"}
    return ExternalPredictionFile(path=str(path), **{**options, **extra})


def test_file_is_read_as_it_is_with_history_and_its_own_ids(empo_file):
    path, convs = empo_file
    frame, info = read_external_predictions(
        ExternalPredictionSpec(**_spec(path).model_dump()), default_taxonomy()
    )
    assert frame.height == N_ITEMS and set(frame["system"]) == {"empo-ft"}
    assert frame["item_id"].to_list() == [c["dialog_id"] for c in convs]
    first = frame.row(0, named=True)
    assert first["history"].split("\n") == convs[0]["turns"][:2]
    assert first["speaker_utterance"] == convs[0]["turns"][2] and first["reference"] == convs[0]["turns"][3]
    assert info["multi_turn_rows"] == N_ITEMS and info["columns"]["prediction"] == "generated"
    # the history reaches the judge's prompt and the Epitome seeker side
    rubric = load_rubric()
    conv = rubric.conversation(
        "general_empathy",
        emotion=first["emotion"],
        situation=first["situation"],
        speaker_utterance=dialogue_text(first["speaker_utterance"], first["history"]),
        response=first["prediction"],
    )
    prompt = conv[-1]["content"]
    assert (
        convs[0]["turns"][0] in prompt and convs[0]["turns"][1] in prompt and convs[0]["turns"][2] in prompt
    )
    assert seeker_side([first["speaker_utterance"]], [first["history"]])[0].startswith(convs[0]["turns"][0])


def test_default_item_id_rule_is_the_documented_hash(tmp_path):
    """Without an id column, the id is item_id(emotion, speaker, reference[, history]): a user can compute it."""
    path = tmp_path / "p.jsonl"
    rows = [
        {
            "system": "x",
            "emotion": "sad",
            "context": "I lost my dog.",
            "reference": "So sorry.",
            "prediction": "Oh no.",
        },
        {
            "system": "x",
            "emotion": "sad",
            "context": "It hurts.",
            "reference": "I see.",
            "prediction": "Hm.",
            "history": ["My dog died.", "That is awful."],
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    frame, _ = read_external_predictions(path, default_taxonomy())
    assert frame["item_id"][0] == item_id("sadness", "I lost my dog.", "So sorry.")
    assert frame["item_id"][1] == item_id("sadness", "It hurts.", "I see.", "My dog died.\nThat is awful.")


def test_missing_mapped_column_names_the_file_and_the_columns(empo_file):
    path, _ = empo_file
    spec = ExternalPredictionSpec(
        **_spec(path, columns={**COLUMNS, "prediction": "model_output"}).model_dump()
    )
    with pytest.raises(ValueError) as err:
        read_external_predictions(spec, default_taxonomy())
    assert str(path) in str(err.value) and "prediction -> 'model_output'" in str(err.value)
    assert "'generated'" in str(err.value)  # the columns the file has, to fix the mapping
    no_system = ExternalPredictionSpec(str(path), separator="~", columns=COLUMNS)
    with pytest.raises(ValueError, match=r"missing fields \['system'\]"):
        read_external_predictions(no_system, default_taxonomy())


def test_rater_alpha_matches_krippendorff_and_is_one_for_identical_raters():
    import krippendorff

    scores = {"r1": [1, 2, 3, 4, 5, 3], "r2": [1, 3, 3, 4, 4, 2], "r3": [2, 2, 3, 5, 5, None]}
    rows = [
        {"item_id": str(i), "system": "s", "dimension": "d", "rater": r, "score": v}
        for r, vs in scores.items()
        for i, v in enumerate(vs)
    ]
    got = rater_alpha(rows, "d", n_resamples=100)
    data = np.array([[np.nan if v is None else v for v in vs] for vs in scores.values()], dtype=float)
    assert got["rater_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal")
    )
    assert got["rater_alpha_ci_low"] <= got["rater_alpha"] <= got["rater_alpha_ci_high"]
    same = [{**r, "rater": "copy"} for r in rows if r["rater"] == "r1"] + [
        r for r in rows if r["rater"] == "r1"
    ]
    assert rater_alpha(same, "d", n_resamples=10)["rater_alpha"] == pytest.approx(1.0)
    assert np.isnan(rater_alpha([r for r in rows if r["rater"] == "r1"], "d")["rater_alpha"])  # one rater


def _ratings(path, convs, item_ids=None):
    """Two raters, the file's own names: dialog_id, aspect (Empathy / Fluency), annotator, rating."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dialog_id", "aspect", "annotator", "rating"])
        for k, c in enumerate(convs):
            iid = (item_ids or {}).get(c["dialog_id"], c["dialog_id"])
            for aspect in ("Empathy", "Fluency"):
                w.writerow([iid, aspect, "ann1", 1 + (k * 2) % 5])
                w.writerow([iid, aspect, "ann2", 1 + (k * 2 + k % 2) % 5])
    return path


@pytest.mark.slow
@pytest.mark.shared_data
def test_empo_file_scored_end_to_end_and_joined_with_mapped_ratings(
    resources, data_root, base_model_dir, empo_file, tmp_path
):
    path, convs = empo_file
    ratings = _ratings(tmp_path / "ratings.csv", convs)
    model_dir = resources["model_store"].folder("base_model")
    model_dir.symlink_to(base_model_dir, target_is_directory=True)
    config = {
        "systems": [],
        "baseline_system": "empo-ft",
        "external_predictions": [_spec(path)],
        "judge_max_items": N_ITEMS,
        "human_ratings_path": str(ratings),
        "human_ratings_system": "empo-ft",
        "human_ratings_columns": {
            "item_id": "dialog_id",
            "dimension": "aspect",
            "rater": "annotator",
            "score": "rating",
        },
        "human_ratings_dimension_map": {"Empathy": "general_empathy", "Fluency": "fluency"},
        "agreement_bootstrap": 100,
    }
    resources["evaluation"] = EvaluationConfig(**config)
    assets = [
        ev.external_predictions,
        ev.evaluation_items,
        ev.metric_diversity,
        ev.metric_judge,
        ev.judge_human_agreement,
    ]
    assert materialize(assets, resources=resources).success

    db = duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True)
    items = db.execute("SELECT * FROM evaluation_items ORDER BY item_id").pl()
    assert items["item_id"].to_list() == sorted(c["dialog_id"] for c in convs)
    assert (items["history"].str.count_matches("\n") == 1).all()  # two earlier turns each
    judged = db.execute(
        "SELECT * FROM metric_judge WHERE score IS NOT NULL AND dimension IN ('fluency', 'general_empathy')"
    ).pl()
    agree = db.execute("SELECT * FROM judge_human_agreement ORDER BY dimension").pl()
    db.close()
    assert agree["dimension"].to_list() == ["fluency", "general_empathy"]  # Fluency / Empathy, mapped
    assert agree["pairs"].sum() == judged.height and set(agree["raters"]) == {2}
    assert agree["units_rated_twice"].to_list() == [N_ITEMS, N_ITEMS]
    assert {"rater_alpha", "rater_alpha_ci_low", "spearman"} <= set(agree.columns)
    expected = read_human_ratings(
        ratings,
        columns=config["human_ratings_columns"],
        system="empo-ft",
        dimension_map=config["human_ratings_dimension_map"],
    )
    assert agree["rater_alpha"][0] == pytest.approx(
        rater_alpha(expected.to_dicts(), "fluency", n_resamples=10)["rater_alpha"], nan_ok=True
    )

    # ratings of an item nobody predicted: a clear error naming the file and the item, the table untouched
    bad = _ratings(tmp_path / "bad_ratings.csv", convs, item_ids={convs[0]["dialog_id"]: "ed-typo"})
    resources["evaluation"] = EvaluationConfig(**{**config, "human_ratings_path": str(bad)})
    result = materialize([ev.judge_human_agreement], resources=resources, raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert str(bad) in message and "ed-typo (empo-ft)" in message and "match no prediction" in message
    db = duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True)
    assert db.execute("SELECT * FROM judge_human_agreement ORDER BY dimension").pl().equals(agree)

    # a prediction file missing a mapped column: the run fails naming it, evaluation_items keeps its rows
    db.close()
    resources["evaluation"] = EvaluationConfig(
        **{**config, "external_predictions": [_spec(path, columns={**COLUMNS, "reference": "target"})]}
    )
    result = materialize(
        [ev.external_predictions, ev.evaluation_items], resources=resources, raise_on_error=False
    )
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert str(path) in message and "reference -> 'target'" in message
    assert not result.asset_materializations_for_node("external_predictions")
    db = duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True)
    assert db.execute("SELECT count(*) FROM evaluation_items").fetchone()[0] == N_ITEMS
