"""The Epitome classifiers trained and scored on the real Epitome files (a subsample, for time): every
mechanism must beat the majority-class macro-F1 on held-out rows, and reload from its folder to the
same predictions."""

import numpy as np
import polars as pl
import pytest

from empathy_dag.evaluate.metrics.epitome import EpitomeClassifier, read_epitome, train_epitome_classifier
from tests.conftest import shared_file

ROWS = 750


@pytest.fixture(scope="module")
def encoder():
    from empathy_dag.evaluate.metrics.encoder import SentenceEncoder

    return SentenceEncoder("embedded:minilm", max_length=64)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("mechanism", ["er", "ip", "ex"])
def test_classifier_beats_majority_on_real_epitome(mechanism, encoder, tmp_path):
    folder = shared_file("epitome")
    data = read_epitome(folder, mechanism, max_rows=ROWS, seed=0)
    assert data.height == ROWS and set(data["level"].unique()) == {0, 1, 2}
    clf, metrics = train_epitome_classifier(
        mechanism,
        data["seeker_post"].to_list(),
        data["response_post"].to_list(),
        data["level"].to_list(),
        encoder,
    )
    assert metrics["heldout_rows"] == ROWS // 5
    assert metrics["heldout_macro_f1"] > metrics["majority_baseline_macro_f1"] + 0.1, metrics
    clf.save(tmp_path / mechanism, metrics)
    loaded = EpitomeClassifier.load(tmp_path / mechanism)
    sample = data.head(16)
    seekers, responses = sample["seeker_post"].to_list(), sample["response_post"].to_list()
    np.testing.assert_array_equal(
        loaded.predict(encoder, seekers, responses), clf.predict(encoder, seekers, responses)
    )
    assert set(np.unique(loaded.predict(encoder, seekers, responses))) <= {0, 1, 2}


# ------------------------------------------------------------------ fine-tuned cross-encoders


@pytest.mark.shared_data
def test_grouped_split_keeps_every_seeker_post_on_one_side():
    """On the whole ER file: no seeker post (nor pair id) is in both train and test, levels are
    stratified roughly (each level in the test set), and the split is reproducible."""
    from empathy_dag.evaluate.metrics.epitome import grouped_split

    data = read_epitome(shared_file("epitome"), "er")
    seekers, levels, ids = data["seeker_post"].to_list(), data["level"].to_list(), data["pair_id"].to_list()
    train, test, info = grouped_split(seekers, levels, ids, test_size=0.2, seed=0)
    assert set(train).isdisjoint(test) and len(train) + len(test) == data.height
    assert not {seekers[i] for i in train} & {seekers[i] for i in test}
    assert info["train_test_overlap_seeker_posts"] == 0 and info["train_test_overlap_ids"] == 0
    assert 0.15 < len(test) / data.height < 0.25
    assert {levels[i] for i in test} == {0, 1, 2}
    again, _, _ = grouped_split(seekers, levels, ids, test_size=0.2, seed=0)
    np.testing.assert_array_equal(train, again)


@pytest.mark.shared_data
def test_holdout_ids_are_the_test_set_and_their_seeker_posts_stay_out_of_training(tmp_path):
    from empathy_dag.evaluate.metrics.epitome import grouped_split
    from empathy_dag.text_classifier import read_id_file

    data = read_epitome(shared_file("epitome"), "ip")
    # a seeker post with several responses: one listed, its siblings must not train either
    multi = (
        data.group_by("seeker_post")
        .agg(pl.col("pair_id").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
        .sort("seeker_post")["seeker_post"][0]
    )
    listed = [*data.filter(pl.col("seeker_post") == multi)["pair_id"][:1], *data["pair_id"][100:130]]
    (tmp_path / "holdout.txt").write_text("# ids kept out\n" + "\n".join(listed) + "\nnot:an-id\n")
    ids = read_id_file(tmp_path / "holdout.txt")
    train, test, info = grouped_split(
        data["seeker_post"].to_list(), data["level"].to_list(), data["pair_id"].to_list(), holdout_ids=ids
    )
    pair = data["pair_id"].to_list()
    assert {pair[i] for i in test} == set(listed)
    assert not {pair[i] for i in train} & set(listed)
    assert info["holdout_ids_not_in_data"] == 1 and info["left_out_same_seeker_post"] >= 1
    assert info["train_test_overlap_seeker_posts"] == 0
    with pytest.raises(ValueError, match="none of the 1 holdout ids"):
        grouped_split(data["seeker_post"].to_list(), data["level"].to_list(), pair, holdout_ids={"x:y"})


@pytest.mark.slow
@pytest.mark.shared_data
def test_cross_encoder_trains_with_trainer_and_reports_f1_on_the_excluded_pairs(tmp_path):
    """A few Trainer steps on real rows (quality is the bench's job): the reported held-out set is
    exactly the listed pairs, none of them (nor their seeker posts) trained, and the reported macro-F1
    is what the saved folder predicts on them."""
    from sklearn.metrics import f1_score

    from empathy_dag.evaluate.metrics.epitome import (
        load_epitome_classifier,
        save_epitome,
        train_epitome_from_options,
    )

    options = {
        "dir": str(shared_file("epitome")),
        "model": "cross_encoder",
        "encoder": "embedded:minilm",
        "max_length": 64,
        "max_rows": 160,
        "max_steps": 2,
        "batch_size": 8,
        "learning_rate": 5e-5,
    }
    # the same rows as the options path reads (its sample is seeded 0)
    options_rows = read_epitome(options["dir"], "ex", max_rows=160)
    listed = options_rows["pair_id"][:40].to_list()
    clf, metrics = train_epitome_from_options("ex", options, tmp_path / "work", holdout_ids=set(listed))
    assert metrics["heldout_rows"] == 40 and metrics["steps"] == 2
    assert metrics["train_test_overlap_ids"] == 0 and metrics["train_test_overlap_seeker_posts"] == 0
    assert metrics["train_rows"] + metrics["heldout_rows"] + metrics["left_out_same_seeker_post"] == 160
    assert (
        set(metrics["heldout_f1_per_level"]) == {"0", "1", "2"} and np.array(metrics["confusion"]).sum() == 40
    )
    low, high = metrics["heldout_macro_f1_ci95"]
    assert low <= metrics["heldout_macro_f1"] <= high
    assert metrics["published_roberta_macro_f1"] == 0.85

    save_epitome(clf, tmp_path / "ex", metrics)
    loaded = load_epitome_classifier(tmp_path / "ex")
    assert not loaded.needs_sentence_encoder
    held = options_rows.filter(pl.col("pair_id").is_in(listed))
    pred = loaded.predict(None, held["seeker_post"].to_list(), held["response_post"].to_list())
    assert f1_score(
        held["level"].to_list(), pred, average="macro", labels=[0, 1, 2], zero_division=0
    ) == pytest.approx(metrics["heldout_macro_f1"])
