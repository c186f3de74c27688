"""The emotion classifier asset on a small slice of real GoEmotions: MiniLM embeddings + logistic
regression, saved as a model folder with sha256 and held-out macro-F1; then the consistency filter
runs inside `curated_dialogues` with it."""

import numpy as np
import pytest
from dagster import DagsterInstance, materialize

from empathy_dag.curate.assets import curated_dialogues, emotion_classifier
from empathy_dag.curate.classifier import EmotionClassifier
from empathy_dag.ingest.assets import (
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
    clf = EmotionClassifier(labels=["joy", "grief", "anger", "neutral"], coef=coef,
                            intercept=rng.normal(size=4).astype(np.float32), groups=["negative", "positive"],
                            group_coef=group_coef, group_intercept=np.zeros(2, np.float32))
    clf.save(tmp_path / "clf")
    back = EmotionClassifier.load(tmp_path / "clf")
    x = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(back.predict_proba([], embeddings=x), clf.predict_proba([], embeddings=x), rtol=1e-6)
    tax = default_taxonomy()
    np.testing.assert_allclose(back.group_mass([], tax, embeddings=x)[1], clf.group_mass([], tax, embeddings=x)[1],
                               rtol=1e-6)


@pytest.mark.slow
@pytest.mark.shared_data
def test_emotion_classifier_trains_above_chance_and_enables_the_filter(resources, data_root):
    folder = shared_file("goemotions")
    shared_file("goemotions", "train.tsv")
    resources = {**resources, "goemotions": GoEmotionsSource(data_dir=str(folder), max_rows_per_split=1500)}
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [emotion_taxonomy, goemotions_examples, emotion_classifier], resources=resources, instance=instance,
        run_config={"ops": {"emotion_classifier": {"config": {"max_train_rows": 1500}}}},
    )
    assert result.success
    meta = {k: getattr(v, "value", v) for k, v in
            result.asset_materializations_for_node("emotion_classifier")[0].metadata.items()}
    model_dir = data_root / "models" / "emotion_classifier"
    assert meta["sha256"] == sha256_tree(model_dir, patterns=("*.safetensors", "*.json"))
    assert meta["train_rows"] == 1500
    # 28 labels: chance macro-F1 is ~0.04; MiniLM + a linear head on 1.5k rows gets well above that.
    assert meta["macro_f1"] > 2 * meta["chance_macro_f1"], meta
    # 4 sentiment groups: chance is ~0.25.
    assert meta["sentiment_macro_f1"] > 0.33, meta

    clf = EmotionClassifier.load(model_dir)
    tax = default_taxonomy()
    texts = ["Thank you so much, this made my whole day wonderful!",
             "I hate this, it is disgusting and makes me furious."]
    groups, mass = clf.group_mass(texts, tax)
    assert clf.groups == sorted(groups)  # the saved group head is used
    pos, neg = groups.index("positive"), groups.index("negative")
    assert mass[0, pos] > mass[1, pos] and mass[1, neg] > mass[0, neg], (groups, mass)
    assert clf.predict_groups(texts, tax)[0][0] == "positive"

    # curated_dialogues now runs the consistency filter (no synthetic rows here: corpus kept as is).
    assert materialize([emotion_taxonomy, ingest_corpus], resources=resources, instance=instance).success
    curated = materialize(
        [emotion_taxonomy, ingest_corpus, situations, dialogues, curated_dialogues, emotion_classifier,
         goemotions_examples, *_generate_assets()],
        selection=[situations, dialogues, curated_dialogues], resources=resources, instance=instance,
        partition_key="gratitude",
    )
    assert curated.success
    note = curated.asset_materializations_for_node("curated_dialogues")[0].metadata["emotion_consistency"].value
    assert note.startswith("on"), note


def _generate_assets():
    from empathy_dag.generate.assets import (
        base_model,
        brainstormed_situations,
        speaker_explanations,
        synthetic_dialogues,
    )

    return [base_model, brainstormed_situations, speaker_explanations, synthetic_dialogues]
