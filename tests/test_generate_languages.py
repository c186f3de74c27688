"""Prompt templates per language: a Japanese partition is prompted with the Japanese templates (and
Japanese emotion names), an English one exactly as before, and a language without a template is an
error rather than an English prompt. The model is replaced by a recorder at the `generate` boundary:
what is under test is which prompt each row gets, not what a model answers."""

import polars as pl
import pytest

from empathy_dag.generate.prompts import load_template, load_templates, templates_version
from empathy_dag.generate.synthetic import (
    BRAINSTORM_TEMPLATE,
    EXPLANATION_TEMPLATE,
    REPLY_TEMPLATE,
    brainstorm_situations,
    listener_replies,
    speaker_explanations,
)
from empathy_dag.ingest.language import SUPPORTED_LANGUAGES, identify_language
from empathy_dag.taxonomy import default_taxonomy


class RecordingGenerator:
    """Answers each conversation with a fixed reply in the language of its prompt, and keeps the prompts."""

    cache_id = "recorder"
    source = "recorder"

    def __init__(self):
        self.conversations: list = []
        self.last_stats: dict = {}

    def generate(self, conversations, settings=None, progress=None):
        self.conversations.extend(conversations)
        self.last_stats = {"requested": len(conversations)}
        replies = []
        for i, c in enumerate(conversations):
            ja = identify_language(c[-1]["content"]).language == "ja"
            replies.append(
                f"通院の日に主治医の先生から良い知らせを聞きました（{i}）。"
                if ja
                else f"My doctor gave me good news at my check-up ({i})."
            )
        return replies


def _seeds(language: str, texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "situation_id": [f"s{i}" for i in range(len(texts))],
            "language": [language] * len(texts),
            "situation": texts,
        }
    )


def test_every_supported_language_has_every_template():
    for name in (BRAINSTORM_TEMPLATE, EXPLANATION_TEMPLATE, REPLY_TEMPLATE):
        assert set(load_templates(name)) == set(SUPPORTED_LANGUAGES)
        # The English file is the un-suffixed one: its version did not change when Japanese was added.
        assert load_templates(name)["en"].version == load_template(name).version
        assert load_templates(name)["ja"].version.startswith(f"{name}.ja@")
    assert len(templates_version(BRAINSTORM_TEMPLATE)) == 10


def test_japanese_partition_generates_with_the_japanese_templates():
    tax = default_taxonomy()
    gen = RecordingGenerator()
    seeds = pl.concat(
        [
            _seeds("ja", ["透析の帰りに、看護師さんが私の好きな歌手の話を覚えていてくれました。"]),
            _seeds("en", ["My nurse remembered my favourite singer after dialysis."]),
        ]
    )
    brainstorm = load_templates(BRAINSTORM_TEMPLATE)
    out = brainstorm_situations(
        gen,
        brainstorm,
        None,
        seeds_by_emotion={"joy": seeds},
        taxonomy=tax,
        count=2,
        domain="chronic illness",
        language="ja",
    )
    prompt = gen.conversations[0][-1]["content"]
    assert "喜び" in prompt and "慢性疾患" in prompt  # Japanese emotion name and domain, not "joy"
    assert "透析の帰り" in prompt and "dialysis" not in prompt  # only the partition language's seeds
    assert gen.conversations[0][0]["content"] == brainstorm["ja"].system
    assert out.frame["language"].to_list() == ["ja", "ja"]
    assert set(out.frame["prompt_version"]) == {brainstorm["ja"].version}

    # Rows carry their language on: each later stage picks that row's template.
    rows = out.frame.with_columns(pl.Series("language", ["ja", "en"]))
    gen.conversations.clear()
    explanations = speaker_explanations(gen, load_templates(EXPLANATION_TEMPLATE), None, rows)
    assert "あなたにこんなことがありました" in gen.conversations[0][-1]["content"]
    assert gen.conversations[1][-1]["content"].startswith("This happened to you:")
    assert explanations.frame["prompt_version"].to_list() == [
        load_template(EXPLANATION_TEMPLATE, language="ja").version,
        load_template(EXPLANATION_TEMPLATE).version,
    ]
    gen.conversations.clear()
    replies = listener_replies(gen, load_templates(REPLY_TEMPLATE), None, explanations.frame)
    assert "友人があなたにこう話しました" in gen.conversations[0][-1]["content"]
    assert replies.frame["language"].to_list() == ["ja", "en"]


def test_a_language_without_templates_is_an_error_not_an_english_prompt():
    rows = pl.DataFrame(
        {
            "situation_id": ["s"],
            "emotion": ["joy"],
            "language": ["ko"],
            "domain": ["d"],
            "situation": ["오늘 검사 결과가 좋았어요."],
        }
    )
    with pytest.raises(ValueError, match="no prompt template for language 'ko'"):
        speaker_explanations(RecordingGenerator(), load_templates(EXPLANATION_TEMPLATE), None, rows)
    with pytest.raises(FileNotFoundError, match="no 'ko' prompt template"):
        load_template(REPLY_TEMPLATE, language="ko")
