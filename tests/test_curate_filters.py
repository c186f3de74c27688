"""Each synthetic-data filter on crafted inputs, then `filter_synthetic` end to end on a small frame."""

import polars as pl
import pytest

from empathy_dag.curate.filters import (
    FilterConfig,
    NearDuplicateIndex,
    contradiction_reason,
    exact_key,
    filter_synthetic,
    language_reason,
    length_reason,
    load_unsafe_list,
    load_word_list,
    prompt_echo_reason,
    refusal_reason,
    unsafe_dialogue_reason,
    unsafe_list_path,
    unsafe_reason,
)
from empathy_dag.defs.curate.assets import DIALOGUE_COLUMNS, synthetic_as_dialogues
from empathy_dag.generate.synthetic import clean_generation
from empathy_dag.ingest.language import SUPPORTED_LANGUAGES
from empathy_dag.taxonomy import default_taxonomy


def test_length_bounds():
    assert length_reason("ok", 12, 600) is not None
    assert "more than" in length_reason("x" * 700, 12, 600)
    assert length_reason("That sounds really hard to carry.", 12, 600) is None


def test_refusals():
    assert refusal_reason("As an AI, I don't have feelings, but that sounds hard.")
    assert refusal_reason("I'm sorry, but I can't help with that.")
    assert refusal_reason("I cannot help you with this request.")
    assert refusal_reason("I can't believe how hard that week was for you.") is None
    assert refusal_reason("It sounds like the new treatment helped a lot.") is None


def test_prompt_echo():
    utterance = "I waited six hours in the emergency room and nobody told me anything about my mum."
    assert prompt_echo_reason("Reply to your friend in one or two sentences.", [utterance])
    assert prompt_echo_reason(
        "I waited six hours in the emergency room and nobody told me anything.", [utterance]
    )
    assert (
        prompt_echo_reason(
            "Six hours with no news about your mum must have felt endless and frightening.", [utterance]
        )
        is None
    )


def test_unsafe_words():
    words = load_word_list()
    assert "fuck*" in words
    assert unsafe_reason("This is fucking unfair to you.")
    assert unsafe_reason("What a shitty day.")
    assert unsafe_reason("Just kill   yourself") is not None
    # Whole words only: "Scunthorpe" and "assessment" do not match.
    assert unsafe_reason("I moved to Scunthorpe for the assessment.") is None
    assert unsafe_reason("damn", words=("damn",))


# Medical and abuse-disclosure texts that a word list must NOT drop (each was dropped, or would be, by a
# naive list: "rape*", "retard*", "nigg*", "fag*", "dick", 死ね as a substring, 気持ち悪い, かたわ in かたわら).
SAFE_DIALOGUES = [
    # The speaker's own swearing is theirs: only the listener's reply is held to the profanity list.
    (
        "en",
        "This whole fucking year has been loss after loss for our family.",
        "A whole year of losses, one after another. I'm so sorry you are carrying that.",
    ),
    (
        "en",
        "I was raped by my stepfather when I was fourteen and I have never told anyone until now.",
        "Thank you for trusting me with this. What he did was not your fault.",
    ),
    (
        "en",
        "My ex called me a worthless bitch every day and told me nobody would want someone this sick.",
        "No one deserves to be spoken to like that, and being ill does not make you worth less.",
    ),
    (
        "en",
        "The neurologist says the slowness is psychomotor retardation from the depression, not dementia.",
        "Having a name for the slowness and knowing it is not dementia must be a relief of sorts.",
    ),
    (
        "en",
        "I have had this niggling pain in my hip since the chemo, and my oncologist wants a scan.",
        "A pain that keeps nagging after chemo is worth checking; I hope the scan gives you an answer.",
    ),
    (
        "en",
        "Dick, my nurse, stayed after his shift to flush my port when the line clotted.",
        "He went past his shift to keep your line working; that is real care.",
    ),
    (
        "en",
        "He took nude photos of me while I was sedated after surgery and I only found out last month.",
        "That is a serious violation, and you are right to be shaken. Have you been able to report it?",
    ),
    (
        "en",
        "Some days the fatigue is so bad I think I want to die, and then I feel guilty for thinking it.",
        "Thank you for telling me. Feeling that way is heavy; have you been able to share it with your doctor?",
    ),
    (
        "en",
        "I smoked a fag outside the hospital after the diagnosis, my first in ten years.",
        "After news like that, reaching for an old comfort makes sense.",
    ),
    (
        "ja",
        "抗がん剤の副作用で一日中気持ち悪くて、何も食べられません。",
        "一日中吐き気が続くのは本当につらいですね。主治医の先生に相談できそうですか。",
    ),
    (
        "ja",
        "夫に「お前なんか死ねばいいのに」と毎日言われていて、病気のせいだと自分を責めてしまいます。",
        "そんな言葉を毎日浴びせられるのは、あなたのせいではありません。話してくれてありがとうございます。",
    ),
    (
        "ja",
        "透析がつらすぎて、もう死にたいと思ってしまう夜があります。",
        "そう思ってしまうほどつらい夜があるんですね。話してくれてありがとうございます。",
    ),
    (
        "ja",
        "子どものころ、親戚に性的虐待を受けていたことを、やっと主治医に話せました。",
        "長い間ひとりで抱えてきたことを話せたのは、大きな一歩だと思います。",
    ),
    (
        "ja",
        "入院中、母がずっとベッドのかたわらにいてくれました。",
        "お母さまがそばにいてくれたことが、きっと大きな支えになったのですね。",
    ),
    (
        "ja",
        "リハビリで足が上がらなくて、死ねないから生きているだけだと感じる日もあります。",
        "そう感じるほど、毎日のリハビリが重くのしかかっているんですね。",
    ),
]
# And dialogues that must be dropped, with the term and turn in the reason.
UNSAFE_DIALOGUES = [
    ("en", "My test results came back bad again.", "Well, shit happens, get over it.", "'shit'"),
    ("en", "I can't take the pain anymore.", "Then just kill yourself.", "'kill yourself'"),
    (
        "en",
        "My brother has Down syndrome and I look after him.",
        "Looking after a retard must be tiring.",
        "'retard'",
    ),
    ("ja", "検査の結果がまた悪かったです。", "うるさいな、死ね。", "'死ね'"),
    ("ja", "弟に障害があって、私が世話をしています。", "ガイジの世話なんて大変ですね。", "'ガイジ'"),
    ("ja", "もう痛みに耐えられません。", "自殺の方法を教えましょうか。", "'自殺の方法'"),
]


@pytest.mark.parametrize("language,speaker,reply", SAFE_DIALOGUES)
def test_unsafe_lists_keep_medical_and_abuse_disclosures(language, speaker, reply):
    assert unsafe_dialogue_reason(speaker, reply, language) is None


@pytest.mark.parametrize("language,speaker,reply,term", UNSAFE_DIALOGUES)
def test_unsafe_lists_drop_abuse_and_self_harm_in_either_language(language, speaker, reply, term):
    reason = unsafe_dialogue_reason(speaker, reply, language)
    assert reason is not None and term in reason
    assert ("unsafe_words.txt" if language == "en" else "unsafe_words.ja.txt") in reason


def test_each_unsafe_list_names_its_source_and_licence_and_a_missing_list_drops_with_a_reason():
    for language in SUPPORTED_LANGUAGES:
        header = unsafe_list_path(language).read_text(encoding="utf-8").split("\n[")[0]
        assert "Source:" in header and "Licence:" in header
        assert load_unsafe_list(language).reply  # both sections present
    reason = unsafe_dialogue_reason("오늘 검사 결과가 나빴어요.", "힘드시겠어요.", "ko")
    assert "no unsafe-word list for language 'ko'" in reason


def test_language():
    assert language_reason("That sounds exhausting, I'm sorry.", "en") is None
    assert "ja" in language_reason("それは本当に大変でしたね。", "en")
    assert language_reason("それは本当に大変でしたね。", "ja") is None
    assert language_reason("Oh no! So sad.", "en") is None  # too short for lingua: judged among en / ja
    assert "'ko'" in language_reason("정말 힘드셨겠어요. 마음이 아프네요.", "en")
    assert "'zh'" in language_reason(
        "这真的很辛苦，我很理解你的感受。", "ja"
    )  # Han only: no longer read as ja


def test_emotion_contradiction_only_between_positive_and_negative():
    tax = default_taxonomy()
    assert tax.sentiment("grief") == "negative" and tax.sentiment("joy") == "positive"
    assert contradiction_reason("grief", "positive", 0.9, tax.sentiment)
    assert contradiction_reason("joy", "negative", 0.8, tax.sentiment)
    assert contradiction_reason("grief", "negative", 0.9, tax.sentiment) is None
    assert contradiction_reason("grief", "neutral", 0.9, tax.sentiment) is None
    assert contradiction_reason("grief", "ambiguous", 0.9, tax.sentiment) is None
    ambiguous = next(e.label for e in tax.emotions if e.sentiment == "ambiguous")
    assert contradiction_reason(ambiguous, "positive", 0.99, tax.sentiment) is None
    # Below the confidence floor the classifier is not trusted to contradict.
    assert contradiction_reason("grief", "positive", 0.4, tax.sentiment, min_probability=0.5) is None


def test_near_duplicates():
    index = NearDuplicateIndex(threshold=0.7)
    index.add("a", "My dad's new heart medication finally seems to be working and he walked to the shop.")
    hit = index.check_and_add(
        "b", "My dad's new heart medication finally seems to be working, he walked to the shop!"
    )
    assert hit and hit[0] == "a" and hit[1] >= 0.7
    assert index.check_and_add("c", "The physiotherapist taught me three new exercises for my knee.") is None
    assert exact_key("Hello,  there!", "OK") == exact_key("hello there", "ok")


def test_clean_generation_of_a_small_models_output():
    assert clean_generation('Sure! Here is a new situation:\n"I finally got my MRI results back today."') == (
        "I finally got my MRI results back today."
    )
    assert clean_generation("Situation 3: My sister drove four hours to sit with me after surgery.") == (
        "My sister drove four hours to sit with me after surgery."
    )
    assert (
        clean_generation("1. I was told my scan was clear.\n2. Another one")
        == "I was told my scan was clear."
    )
    assert clean_generation("   \n  ") == ""
    assert clean_generation('""') == ""


def _frame(rows):
    return pl.DataFrame(
        rows,
        schema={
            "dialogue_id": pl.String,
            "situation_id": pl.String,
            "emotion": pl.String,
            "language": pl.String,
            "domain": pl.String,
            "situation": pl.String,
            "speaker_utterance": pl.String,
            "listener_reply": pl.String,
            "generator": pl.String,
            "prompt_version": pl.String,
        },
    )


def test_filter_synthetic_reports_every_drop_once():
    corpus = _frame(
        [
            {
                "dialogue_id": "c1",
                "situation_id": "s",
                "emotion": "grief",
                "language": "en",
                "domain": "d",
                "situation": "x",
                "speaker_utterance": "My grandmother died last week after a long illness.",
                "listener_reply": "I'm so sorry. Losing her after watching her struggle must hurt so much.",
            },
        ]
    )
    good = "I keep reaching for the phone to call her, and then I remember she's gone."
    rows = [
        ("keep", good, "That reflex to call her shows how close you were. I'm so sorry."),
        ("short", "Sad.", "Oh no."),
        ("refusal", good + " Really.", "As an AI, I cannot feel grief, but I understand."),
        (
            "echo",
            "My brother's funeral was yesterday and the church was completely full.",
            "My brother's funeral was yesterday and the church was completely full.",
        ),
        (
            "unsafe",
            "This whole year has been loss after loss for our family.",
            "What a shitty year, so much loss.",
        ),
        ("language", "祖母が先週亡くなって、まだ信じられません。", "それは本当につらいですね。"),
        ("exact", good, "That reflex to call her shows how close you were. I'm so sorry."),
        (
            "near",
            "My grandmother died last week after a very long illness.",
            "I'm so sorry. Losing her after watching her struggle must hurt so much!",
        ),
        (
            "contradict",
            "We held a lovely memorial and I felt so grateful for everyone's kindness.",
            "It sounds like a beautiful way to honour her.",
        ),
    ]
    synthetic = _frame(
        [
            {
                "dialogue_id": rid,
                "situation_id": "s",
                "emotion": "grief",
                "language": "en",
                "domain": "d",
                "situation": "A death in the family.",
                "speaker_utterance": u,
                "listener_reply": r,
                "generator": "g1",
                "prompt_version": "listener_reply@x",
            }
            for rid, u, r in rows
        ]
    )

    def predict_groups(texts):  # a stand-in classifier: "grateful" reads as positive
        return [("positive", 0.9) if "grateful" in t else ("negative", 0.8) for t in texts]

    result = filter_synthetic(
        synthetic,
        corpus,
        FilterConfig(min_chars=12, near_duplicate_threshold=0.7),
        predict_groups=predict_groups,
        sentiment_of=default_taxonomy().sentiment,
    )
    assert result.kept["dialogue_id"].to_list() == ["keep"]
    by_id = dict(zip(result.report["id"], result.report["filter"]))
    assert by_id == {
        "short": "length",
        "refusal": "refusal",
        "echo": "prompt_echo",
        "unsafe": "unsafe",
        "language": "language",
        "exact": "exact_duplicate",
        "near": "near_duplicate",
        "contradict": "emotion_consistency",
    }
    assert result.report["reason"].str.len_chars().min() > 5
    assert result.counts()["near_duplicate"] == 1
    # Each dropped row is kept whole (review can bring it back) next to the one-line preview.
    near = result.report.filter(pl.col("id") == "near").row(0, named=True)
    assert near["listener_reply"] == rows[7][2] and near["situation"] == "A death in the family."
    assert near["prompt_version"] == "listener_reply@x" and near["text"] == f"{rows[7][1]} || {rows[7][2]}"

    # Without a classifier the consistency filter is skipped: the contradicting row is kept.
    skipped = filter_synthetic(synthetic, corpus, FilterConfig(near_duplicate_threshold=0.7))
    assert "contradict" in skipped.kept["dialogue_id"].to_list()

    mapped = synthetic_as_dialogues(result.kept)
    assert list(mapped.columns) == [*DIALOGUE_COLUMNS, "origin", "generator"]
    assert mapped["origin"].to_list() == ["synthetic"] and mapped["generator"].to_list() == ["g1"]


# ------------------------------------------------------------ every source, across partitions


def _dialogues(rows):
    """rows: (dialogue_id, emotion, source, origin, speaker, reply)."""
    return pl.DataFrame(
        [
            {
                "dialogue_id": d,
                "situation_id": f"s-{d}",
                "emotion": e,
                "language": "en",
                "domain": "x",
                "situation": "A hospital visit.",
                "speaker_utterance": u,
                "listener_reply": r,
                "source": src,
                "origin": o,
                "generator": "g1" if o == "synthetic" else None,
            }
            for d, e, src, o, u, r in rows
        ]
    )


def test_curation_filters_ingested_rows_dedups_across_sources_and_partitions():
    from empathy_dag.curate.filters import CurationPolicy, curate_partitions

    speak = "My mum's chemo finally finished today and the nurses rang the bell for her."
    reply = "Hearing that bell after everything she went through must have felt incredible."
    long_reply = ("It sounds like such a relief to reach this point. " * 16).strip()  # ~800 chars
    frames = {
        "joy": _dialogues(
            [
                ("a1", "joy", "empathetic_dialogues", "corpus", speak, reply),
                # A near copy in another source: dropped although both are human-written.
                ("b1", "joy", "seed", "corpus", speak.replace("today", "today!"), reply + " Truly."),
                (
                    "c1",
                    "joy",
                    "empathetic_dialogues",
                    "corpus",
                    "I can't help but smile at her photos.",
                    long_reply,
                ),
                ("d1", "joy", "empathetic_dialogues", "corpus", "Hi.", "Oh."),
            ]
        ),
        # The same text labelled with another emotion, in another partition: still a duplicate.
        "relief": _dialogues(
            [
                ("a0", "relief", "empathetic_dialogues", "corpus", speak, reply),
                (
                    "z9",
                    "relief",
                    "synthetic",
                    "synthetic",
                    "I can't help you with that request right now, sorry friend.",
                    long_reply,
                ),
            ]
        ),
    }
    result = curate_partitions(frames, FilterConfig(near_duplicate_threshold=0.7), CurationPolicy())
    kept = {e: f["dialogue_id"].to_list() for e, f in result.kept.items()}
    # a0 < a1 by id: the earlier id survives whichever partition it sits in.
    assert kept == {"joy": ["c1"], "relief": ["a0"]}
    report = pl.concat(result.report.values())
    by_id = dict(zip(report["id"], report["filter"]))
    assert by_id == {"a1": "exact_duplicate", "b1": "near_duplicate", "d1": "length", "z9": "refusal"}
    # The ~800-character human reply survives (the old 600 cap dropped it); "I can't help but" does not
    # read as a refusal in a human source, while the synthetic row with a real refusal is dropped.
    assert dict(zip(report["id"], report["source"]))["b1"] == "seed"
    counts = result.counts()
    assert counts.filter(pl.col("filter") == "exact_duplicate").row(0, named=True) == {
        "filter": "exact_duplicate",
        "origin": "corpus",
        "source": "empathetic_dialogues",
        "dropped": 1,
        "rows_in": 4,
    }
    assert result.counts_per_filter()["near_duplicate"] == 1


def test_source_policy_skips_consistency_for_trusted_sources_but_never_dedup():
    import pytest

    from empathy_dag.curate.filters import CurationPolicy, curate_partitions

    grateful = "We held a lovely memorial and I felt so grateful for everyone's kindness."
    reply = "It sounds like a beautiful way to honour her."
    frames = {
        "grief": _dialogues(
            [
                ("h1", "grief", "seed", "corpus", grateful, reply),
                (
                    "s1",
                    "grief",
                    "synthetic",
                    "synthetic",
                    grateful + " Truly, all of them.",
                    "What a warm and fitting goodbye for someone so loved.",
                ),
            ]
        )
    }

    def predict_groups(texts):
        return [("positive", 0.9) if "grateful" in t else ("negative", 0.8) for t in texts]

    result = curate_partitions(
        frames,
        FilterConfig(),
        CurationPolicy(),
        predict_groups=predict_groups,
        sentiment_of=default_taxonomy().sentiment,
    )
    assert result.kept["grief"]["dialogue_id"].to_list() == ["h1"]
    assert result.report["grief"]["filter"].to_list() == ["emotion_consistency"]
    # A policy for the seed source that runs the classifier on it too:
    strict = CurationPolicy(skip={"seed": (), "synthetic": ()})
    result = curate_partitions(
        frames,
        FilterConfig(),
        strict,
        predict_groups=predict_groups,
        sentiment_of=default_taxonomy().sentiment,
    )
    assert result.kept["grief"].height == 0
    with pytest.raises(ValueError, match="dedup"):
        CurationPolicy(skip={"seed": ("near_duplicate",)})
    with pytest.raises(ValueError, match="unknown filters"):
        CurationPolicy(skip={"seed": ("spelling",)})


def test_length_bounds_by_source_then_language():
    from empathy_dag.curate.filters import CurationPolicy

    policy = CurationPolicy(length_bounds={"en": (12, 2000), "ja": (6, 1000), "my_file": (2, 300)})
    assert policy.bounds("my_file", "corpus", "en") == (2, 300)
    assert policy.bounds("seed", "corpus", "ja") == (6, 1000)
    assert policy.bounds("seed", "corpus", "fr") == policy.default_length
