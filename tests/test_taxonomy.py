import json

import pytest

from empathy_dag.taxonomy import EKMAN_GROUPS, default_taxonomy, load_taxonomy
from tests.conftest import shared_file

ED_LABELS = [
    "afraid",
    "angry",
    "annoyed",
    "anticipating",
    "anxious",
    "apprehensive",
    "ashamed",
    "caring",
    "confident",
    "content",
    "devastated",
    "disappointed",
    "disgusted",
    "embarrassed",
    "excited",
    "faithful",
    "furious",
    "grateful",
    "guilty",
    "hopeful",
    "impressed",
    "jealous",
    "joyful",
    "lonely",
    "nostalgic",
    "prepared",
    "proud",
    "sad",
    "sentimental",
    "surprised",
    "terrified",
    "trusting",
]


def test_28_labels_in_official_order():
    tax = default_taxonomy()
    assert len(tax.labels) == 28
    assert tax.labels[0] == "admiration" and tax.labels[-1] == "neutral"
    assert [e.id for e in tax.emotions] == list(range(28))


def test_labels_match_goemotions_release():
    official = shared_file("goemotions", "emotions.txt").read_text().split()
    assert default_taxonomy().labels == official


def test_sentiment_and_ekman_groups_match_goemotions_release():
    tax = default_taxonomy()
    sentiment = json.loads(shared_file("goemotions", "sentiment_dict.json").read_text())
    for group, labels in sentiment.items():
        for label in labels:
            assert tax.sentiment(label) == group, label
    assert tax.sentiment("neutral") == "neutral"
    ekman = json.loads(shared_file("goemotions", "ekman_mapping.json").read_text())
    for group, labels in ekman.items():
        for label in labels:
            assert tax.ekman(label) == group, label


def test_every_opposite_is_another_label_of_another_sentiment_group():
    tax = default_taxonomy()
    for e in tax.emotions:
        assert e.opposite in tax.labels
        assert e.opposite != e.label
        assert tax.sentiment(e.opposite) != e.sentiment
        assert e.opposite_rationale.strip(), f"{e.label}: opposite needs a rationale"
        assert e.ekman in EKMAN_GROUPS
        assert e.definition.strip()


def test_plutchik_primary_opposites_are_kept():
    tax = default_taxonomy()
    assert tax.opposite("joy") == "sadness" and tax.opposite("sadness") == "joy"
    assert tax.opposite("love") == "remorse" and tax.opposite("remorse") == "love"
    assert tax.opposite("optimism") == "disappointment"
    assert tax.opposite("approval") == "disapproval"


def test_every_empathetic_dialogues_label_is_mapped():
    tax = default_taxonomy()
    assert sorted(tax.ed_mapping) == sorted(ED_LABELS)
    for ed in ED_LABELS:
        assert tax.normalize_label(ed) in tax.labels
    assert tax.normalize_label("Terrified ") == "fear"
    assert tax.normalize_label("joy") == "joy"
    assert tax.normalize_label("hangry") is None


def test_invalid_taxonomy_is_rejected(tmp_path):
    src = default_taxonomy()
    fields = ("id", "label", "sentiment", "ekman", "definition", "opposite", "opposite_rationale")
    go = {"emotions": [{f: getattr(e, f) for f in fields} for e in src.emotions]}
    go["emotions"][17]["opposite"] = "amusement"  # joy -> amusement: same sentiment group
    (tmp_path / "taxonomy").mkdir()
    (tmp_path / "taxonomy" / "goemotions.json").write_text(json.dumps(go))
    ed = {"mapping": {k: {"goemotion": v, "rationale": ""} for k, v in src.ed_mapping.items()}}
    (tmp_path / "taxonomy" / "empathetic_dialogues_map.json").write_text(json.dumps(ed))
    with pytest.raises(ValueError, match="same sentiment group"):
        load_taxonomy(tmp_path)
