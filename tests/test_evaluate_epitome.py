"""The Epitome classifiers trained and scored on the real Epitome files (a subsample, for time): every
mechanism must beat the majority-class macro-F1 on held-out rows, and reload from its folder to the
same predictions."""

import numpy as np
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
    clf, metrics = train_epitome_classifier(mechanism, data["seeker_post"].to_list(), data["response_post"].to_list(),
                                            data["level"].to_list(), encoder)
    assert metrics["heldout_rows"] == ROWS // 5
    assert metrics["heldout_macro_f1"] > metrics["majority_baseline_macro_f1"] + 0.1, metrics
    clf.save(tmp_path / mechanism, metrics)
    loaded = EpitomeClassifier.load(tmp_path / mechanism)
    sample = data.head(16)
    seekers, responses = sample["seeker_post"].to_list(), sample["response_post"].to_list()
    np.testing.assert_array_equal(loaded.predict(encoder, seekers, responses), clf.predict(encoder, seekers, responses))
    assert set(np.unique(loaded.predict(encoder, seekers, responses))) <= {0, 1, 2}
