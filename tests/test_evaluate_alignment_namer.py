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
    parse_emotion,
)
from empathy_dag.generate.prompts import emotion_names
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
    from empathy_dag.evaluate.metrics import alignment

    tax = default_taxonomy()
    monkeypatch.setattr(
        alignment, "bertscore", lambda scorer, a, b: {"f1": [1.0 if x == y else 0.5 for x, y in zip(a, b)]}
    )
    rows = alignment_rows(["grief", "sadness", "joy"], ["grief", "grief", "grief"], tax, scorer=None)
    assert [r["alignment_exact"] for r in rows] == [1.0, 0.0, 0.0]
    assert [r["alignment_ekman"] for r in rows] == [1.0, 1.0, 0.0]  # sadness is grief's Ekman group
    assert namer_texts(["At the clinic."], ["Earlier turn."], ["My scan is bad."], ["I'm sorry."]) == [
        "At the clinic. Earlier turn. My scan is bad. I'm sorry."
    ]
    assert (
        "Earlier turns:\nEarlier turn."
        in alignment_conversation("s", "u", "r", tax.labels, "Earlier turn.")[1]["content"]
    )


# Replies written the way a Japanese-speaking namer answers EmplifAI's question: a bare name, a name
# inflected as an adjective or verb, a sentence around it, full-width Latin letters, mixed scripts.
JAPANESE_REPLIES = [
    ("悲しみ", "sadness"),
    ("悲しい。", "sadness"),
    ("話し手はとても悲しいのだと思います。", "sadness"),
    ("感情: 深い悲しみ", "grief"),  # the longer name at the same place: grief, not the sadness inside it
    ("悲嘆", "grief"),
    ("恐れ", "fear"),
    ("怖いと感じている", "fear"),
    ("不安", "nervousness"),
    ("緊張しています", "nervousness"),
    ("安堵", "relief"),
    ("ほっとしている", "relief"),
    ("がっかりしている", "disappointment"),
    ("不賛成", "disapproval"),  # not the approval (賛成) inside it
    ("賛成", "approval"),
    ("誇らしい気持ち", "pride"),
    ("感謝の気持ちです。", "gratitude"),
    ("恥ずかしさ", "embarrassment"),
    ("イライラ", "annoyance"),
    ("驚いた", "surprise"),
    ("中立", "neutral"),
    ("感情はsadnessです", "sadness"),  # \b sees no word boundary between は and s
    ("喜び（joy）", "joy"),
    ("Ｓａｄｎｅｓｓ", "sadness"),  # full-width, NFKC-folded
    ("わかりません", None),
]


@pytest.mark.parametrize(("reply", "label"), JAPANESE_REPLIES)
def test_japanese_replies_name_the_emotion(reply, label):
    assert parse_emotion(reply, default_taxonomy()) == label


def test_two_names_in_one_reply_first_wins_in_japanese_as_in_english():
    tax = default_taxonomy()
    assert parse_emotion("fear, or maybe sadness", tax) == "fear"
    assert parse_emotion("恐れ、あるいは悲しみ", tax) == "fear"
    assert parse_emotion("悲しみと怒りが混ざっています", tax) == "sadness"
    assert parse_emotion("怒りと悲しみが混ざっています", tax) == "anger"
    assert parse_emotion("anger、それとも悲しみ", tax) == "anger"  # across languages too
    assert parse_emotion("悲しみ、でも anger かも", tax) == "sadness"
    assert parse_emotion("I enjoy this", tax) is None  # English names stay whole words


def test_every_japanese_name_reads_back_as_its_label():
    tax = default_taxonomy()
    for label, entry in emotion_names("ja").items():
        assert parse_emotion(entry["name"], tax) == label, entry["name"]
        for form in entry["variants"]:
            assert parse_emotion(f"話し手の感情は{form}です", tax) == label, form


def test_japanese_items_are_asked_in_japanese_with_japanese_names():
    tax = default_taxonomy()
    conv = alignment_conversation(
        "透析の日に",
        "また数値が悪かったんです。",
        "それはつらいですね。",
        tax.labels,
        history="前のやり取り",
        language="ja",
    )
    system, user = conv[0]["content"], conv[1]["content"]
    assert "一語で答えて" in system
    assert "状況: 透析の日に" in user and "それまでのやり取り:\n前のやり取り" in user
    assert "悲しみ" in user and "称賛、面白さ" in user and "sadness" not in user
    assert user.endswith("感情:")
    english = alignment_conversation("s", "u", "r", tax.labels)[1]["content"]
    assert "Choose one of: admiration, amusement" in english and english.endswith("Emotion:")
    with pytest.raises(ValueError, match="no alignment prompt for language 'ko'"):
        alignment_conversation("s", "u", "r", tax.labels, language="ko")
