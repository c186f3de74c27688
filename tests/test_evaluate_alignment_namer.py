"""Who names the emotion in the alignment metric: the emotion classifier by default when the model is
the embedded 135M (it names 0 of 21 exactly as an LLM), EmplifAI's LLM protocol for a capable model."""

import json

import pytest

from empathy_dag.evaluate.metrics.alignment import (
    alignment_conversation,
    alignment_rows,
    choose_namer,
    estimated_parameters,
    namer_texts,
)
from empathy_dag.taxonomy import default_taxonomy

SMOLLM2_135M = {"hidden_size": 576, "num_hidden_layers": 30, "vocab_size": 49152}
LLAMA_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 128256}


def _model(tmp_path, name, config):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_parameter_estimate_tells_a_135m_model_from_an_8b_one():
    assert 100e6 < estimated_parameters(SMOLLM2_135M) < 170e6
    assert 6e9 < estimated_parameters(LLAMA_8B) < 9e9


def test_auto_picks_the_classifier_for_the_small_base_model_only(tmp_path):
    small, large = _model(tmp_path, "small", SMOLLM2_135M), _model(tmp_path, "large", LLAMA_8B)
    assert choose_namer("auto", small, classifier_available=True)[0] == "classifier"
    assert choose_namer("auto", large, classifier_available=True)[0] == "llm"
    assert choose_namer("auto", None, classifier_available=True)[0] == "llm"  # hub id / server
    namer, why = choose_namer("auto", small, classifier_available=False)
    assert namer == "llm" and "no emotion_classifier" in why
    assert choose_namer("llm", small, classifier_available=True)[0] == "llm"
    with pytest.raises(FileNotFoundError, match="emotion_classifier"):
        choose_namer("classifier", small, classifier_available=False)


def test_classifier_labels_are_scored_like_llm_replies(monkeypatch):
    """A namer's label goes through the same exact / Ekman / BERTScore scoring as an LLM reply
    (BERTScore itself is tested in test_evaluate_metrics: a stand-in here)."""
    import empathy_dag.evaluate.metrics.bertscore as bs

    tax = default_taxonomy()
    monkeypatch.setattr(bs, "bertscore", lambda scorer, a, b: {"f1": [1.0 if x == y else 0.5 for x, y in zip(a, b)]})
    rows = alignment_rows(["grief", "sadness", "joy"], ["grief", "grief", "grief"], tax, scorer=None)
    assert [r["alignment_exact"] for r in rows] == [1.0, 0.0, 0.0]
    assert [r["alignment_ekman"] for r in rows] == [1.0, 1.0, 0.0]  # sadness is grief's Ekman group
    assert namer_texts(["At the clinic."], ["Earlier turn."], ["My scan is bad."], ["I'm sorry."]) == [
        "At the clinic. Earlier turn. My scan is bad. I'm sorry."]
    assert "Earlier turns:\nEarlier turn." in alignment_conversation("s", "u", "r", tax.labels, "Earlier turn.")[1]["content"]
