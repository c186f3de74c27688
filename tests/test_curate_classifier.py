"""The emotion classifier asset on a small slice of real GoEmotions: MiniLM embeddings + logistic
regression, saved as a model folder with sha256 and held-out macro-F1; then the consistency filter
runs inside `curated_dialogues` with it."""

import numpy as np
import pytest
from dagster import DagsterInstance, materialize

from empathy_dag.curate.classifier import EmotionClassifier
from empathy_dag.defs.curate.assets import curated_dialogues, emotion_classifier
from empathy_dag.defs.ingest.assets import (
    dialogues,
    emotion_taxonomy,
    goemotions_examples,
    ingest_corpus,
    situations,
)
from empathy_dag.models import sha256_tree
from empathy_dag.resources import GoEmotionsSource
from empathy_dag.taxonomy import default_taxonomy
from tests.conftest import shared_file


def test_saved_heads_predict_exactly_what_was_trained(tmp_path):
    """sklearn's coef_ is Fortran-ordered; the folder must give back the same weights, not a scrambled
    buffer (a bug this caught: predictions changed after save/load)."""
    rng = np.random.default_rng(0)
    coef = np.asfortranarray(rng.normal(size=(4, 8)).astype(np.float32))
    group_coef = np.asfortranarray(rng.normal(size=(2, 8)).astype(np.float32))
    clf = EmotionClassifier(
        labels=["joy", "grief", "anger", "neutral"],
        coef=coef,
        intercept=rng.normal(size=4).astype(np.float32),
        groups=["negative", "positive"],
        group_coef=group_coef,
        group_intercept=np.zeros(2, np.float32),
    )
    clf.save(tmp_path / "clf")
    back = EmotionClassifier.load(tmp_path / "clf")
    x = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(
        back.predict_proba([], embeddings=x), clf.predict_proba([], embeddings=x), rtol=1e-6
    )
    tax = default_taxonomy()
    np.testing.assert_allclose(
        back.group_mass([], tax, embeddings=x)[1], clf.group_mass([], tax, embeddings=x)[1], rtol=1e-6
    )


@pytest.mark.slow
@pytest.mark.shared_data
def test_emotion_classifier_trains_above_chance_and_enables_the_filter(resources, data_root):
    folder = shared_file("goemotions")
    shared_file("goemotions", "train.tsv")
    resources = {**resources, "goemotions": GoEmotionsSource(data_dir=str(folder), max_rows_per_split=1500)}
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [emotion_taxonomy, goemotions_examples, emotion_classifier],
        resources=resources,
        instance=instance,
        run_config={"ops": {"emotion_classifier": {"config": {"max_train_rows": 1500, "model": "linear"}}}},
    )
    assert result.success
    meta = {
        k: getattr(v, "value", v)
        for k, v in result.asset_materializations_for_node("emotion_classifier")[0].metadata.items()
    }
    model_dir = data_root / "models" / "emotion_classifier"
    assert meta["sha256"] == sha256_tree(model_dir, patterns=("*.safetensors", "*.json"))
    assert meta["train_rows"] == 1500
    # 28 labels: chance macro-F1 is ~0.04; MiniLM + a linear head on 1.5k rows gets well above that.
    assert meta["macro_f1"] > 2 * meta["chance_macro_f1"], meta
    # 4 sentiment groups: chance is ~0.25.
    assert meta["sentiment_macro_f1"] > 0.33, meta

    clf = EmotionClassifier.load(model_dir)
    tax = default_taxonomy()
    texts = [
        "Thank you so much, this made my whole day wonderful!",
        "I hate this, it is disgusting and makes me furious.",
    ]
    groups, mass = clf.group_mass(texts, tax)
    assert clf.groups == sorted(groups)  # the saved group head is used
    pos, neg = groups.index("positive"), groups.index("negative")
    assert mass[0, pos] > mass[1, pos] and mass[1, neg] > mass[0, neg], (groups, mass)
    assert clf.predict_groups(texts, tax)[0][0] == "positive"

    # curated_dialogues now runs the consistency filter (no synthetic rows here: corpus kept as is).
    assert materialize([emotion_taxonomy, ingest_corpus], resources=resources, instance=instance).success
    curated = materialize(
        [
            emotion_taxonomy,
            ingest_corpus,
            situations,
            dialogues,
            curated_dialogues,
            emotion_classifier,
            goemotions_examples,
            *_generate_assets(),
        ],
        selection=[situations, dialogues, curated_dialogues],
        resources=resources,
        instance=instance,
        partition_key="gratitude",
    )
    assert curated.success
    note = (
        curated.asset_materializations_for_node("curated_dialogues")[0].metadata["emotion_consistency"].value
    )
    assert note.startswith("on"), note


def _generate_assets():
    from empathy_dag.defs.generate.assets import (
        base_model,
        brainstormed_situations,
        speaker_explanations,
        synthetic_dialogues,
    )

    return [base_model, brainstormed_situations, speaker_explanations, synthetic_dialogues]


# --------------------------------------------------------------- fine-tuned multi-label classifier


def test_thresholds_are_tuned_per_label_on_dev():
    """Label 0 is separable at 0.7, label 1 at 0.2; label 2 has no positive row: default 0.5."""
    from empathy_dag.curate.classifier import tune_thresholds

    probs = np.array([[0.9, 0.3, 0.1], [0.75, 0.25, 0.2], [0.6, 0.1, 0.3], [0.1, 0.15, 0.9]])
    y = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    t = tune_thresholds(probs, y)
    assert 0.6 < t[0] <= 0.75 and 0.15 < t[1] <= 0.25 and t[2] == 0.5


def _goemotions_examples(rows_per_split: int):
    import polars as pl

    from empathy_dag.ingest.readers import read_goemotions_tsv

    labels = default_taxonomy().labels
    rows = [
        r
        for split in ("train", "dev", "test")
        for r in read_goemotions_tsv(shared_file("goemotions", f"{split}.tsv"), labels)[:rows_per_split]
    ]
    return pl.DataFrame(
        rows, schema={"id": pl.String, "text": pl.String, "labels": pl.List(pl.String), "split": pl.String}
    )


@pytest.mark.slow
@pytest.mark.shared_data
def test_finetuned_classifier_keeps_holdout_ids_out_of_training_and_reports_f1_on_them(tmp_path):
    import polars as pl
    from sklearn.metrics import f1_score

    from empathy_dag.curate.classifier import (
        THRESHOLD_GRID,
        FineTunedEmotionClassifier,
        load_emotion_classifier,
        multi_hot,
        train_finetuned_emotion_classifier,
    )
    from empathy_dag.text_classifier import FineTuneSettings, read_id_file

    examples = _goemotions_examples(120)
    # listed: train rows (must leave training) and test rows; the reported test set is exactly them
    listed = [
        *examples.filter(pl.col("split") == "train")["id"][:20],
        *examples.filter(pl.col("split") == "test")["id"][:10],
    ]
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(listed) + "\n")
    ids = read_id_file(tmp_path / "ids.csv")
    tax = default_taxonomy()
    clf = train_finetuned_emotion_classifier(
        examples,
        tax,
        FineTuneSettings(max_steps=2, batch_size=16, max_length=48),
        tmp_path / "work",
        holdout_ids=ids,
        n_resamples=100,
    )
    m = clf.metrics
    assert m["held_out_split"] == "holdout ids" and m["held_out_rows"] == 30 and m["holdout_ids_given"] == 30
    assert m["train_rows"] == 100 and m["train_test_overlap_ids"] == 0 and m["steps"] == 2
    assert len(m["f1_per_label"]) == 28 and m["published_bert_base_macro_f1"] == 0.46
    assert m["macro_f1_ci95"][0] <= m["macro_f1"] <= m["macro_f1_ci95"][1]
    assert set(m["thresholds"].values()) <= {round(float(t), 4) for t in THRESHOLD_GRID}

    clf.save(tmp_path / "clf")
    loaded = load_emotion_classifier(tmp_path / "clf")
    assert isinstance(loaded, FineTunedEmotionClassifier)
    held = examples.filter(pl.col("id").is_in(listed))
    pred = (loaded.predict_proba(held["text"].to_list()) >= loaded.thresholds).astype(np.float32)
    assert f1_score(
        multi_hot(held["labels"].to_list(), tax.labels), pred, average="macro", zero_division=0
    ) == pytest.approx(m["macro_f1"], abs=1e-4)
    groups, mass = loaded.group_mass(held["text"].to_list()[:4], tax)
    assert groups == sorted(groups) and np.allclose(mass.sum(axis=1), 1.0)
    assert len(loaded.predict(["I am so grateful, thank you!"])) == 1


@pytest.mark.slow
@pytest.mark.shared_data
def test_finetuned_classifier_asset_is_reused_not_retrained(resources, data_root):
    """Trained once: a second materialization with the same data and config loads the saved folder."""
    folder = shared_file("goemotions")
    resources = {**resources, "goemotions": GoEmotionsSource(data_dir=str(folder), max_rows_per_split=120)}
    instance = DagsterInstance.ephemeral()
    config = {
        "ops": {
            "emotion_classifier": {
                "config": {
                    "max_train_rows": 100,
                    "max_eval_rows": 60,
                    "max_steps": 1,
                    "batch_size": 16,
                    "max_length": 48,
                }
            }
        }
    }
    metas = []
    for _ in range(2):
        result = materialize(
            [emotion_taxonomy, goemotions_examples, emotion_classifier],
            resources=resources,
            instance=instance,
            run_config=config,
        )
        assert result.success
        metas.append(
            {
                k: getattr(v, "value", v)
                for k, v in result.asset_materializations_for_node("emotion_classifier")[0].metadata.items()
            }
        )
    assert metas[0]["reused"] is False and metas[1]["reused"] is True
    assert metas[0]["sha256"] == metas[1]["sha256"] and metas[0]["macro_f1"] == metas[1]["macro_f1"]
    assert metas[0]["model"] == "finetuned" and metas[0]["train_test_overlap_ids"] == 0


# --------------------------------------------------------------- hashed n-gram classifier (scale)


@pytest.mark.shared_data
def test_ngram_classifier_reads_valence_from_real_comments_and_round_trips_its_folder(tmp_path):
    """The classifier curation uses at 100k+ rows: hashed n-grams and the same logistic heads, trained
    on 3,000 real GoEmotions comments in seconds; held-out sentiment macro-F1 above chance (4 groups,
    0.25), a folder that predicts exactly what was trained, and a folder saved with another featurizer
    refuses to predict instead of reading features it was not trained on."""
    import json

    from empathy_dag.curate.classifier import (
        CONFIG_FILE,
        NGRAM_ENCODER,
        load_emotion_classifier,
        ngram_features,
        train_emotion_classifier,
    )

    examples = _goemotions_examples(3000)
    tax = default_taxonomy()
    clf = train_emotion_classifier(examples, tax, encoder=NGRAM_ENCODER, max_train_rows=3000)
    m = clf.metrics
    assert m["held_out_split"] == "test" and m["train_rows"] == 3000 and m["held_out_rows"] > 2500
    assert m["sentiment_macro_f1"] > 0.35, m
    assert m["macro_f1"] > 2 * m["chance_macro_f1"], m

    texts = [
        "Thank you so much, this made my whole day wonderful!",
        "I hate this, it is disgusting and makes me furious.",
    ]
    assert [g for g, _ in clf.predict_groups(texts, tax)] == ["positive", "negative"]
    x = ngram_features(texts)
    assert x.shape == (2, clf.coef.shape[1]) and np.allclose(
        np.asarray(x.multiply(x).sum(axis=1)).ravel(), 1.0
    )

    clf.save(tmp_path / "clf")
    loaded = load_emotion_classifier(tmp_path / "clf")
    np.testing.assert_allclose(loaded.predict_proba(texts), clf.predict_proba(texts), rtol=1e-5)
    (g0, p0), (g1, p1) = loaded.predict_groups(texts, tax)
    assert (g0, g1) == ("positive", "negative") and [p0, p1] == pytest.approx(
        [p for _, p in clf.predict_groups(texts, tax)], rel=1e-5
    )

    config = json.loads((tmp_path / "clf" / CONFIG_FILE).read_text())
    config["encoder"] = "hashed-ngrams:word1-3:2^20"
    (tmp_path / "clf" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="retrain"):
        load_emotion_classifier(tmp_path / "clf").predict_groups(texts, tax)
