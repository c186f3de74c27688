"""Each metric function against a reference computation: bert_score called directly, scipy's
correlations, VADER itself, and hand-computed distinct-n, entropy, diff-Epitome and VAD differences."""

import math

import numpy as np
import pytest
from scipy import stats

from empathy_dag.evaluate.metrics import agreement, alignment, diversity, epitome, judge, retention, valence
from empathy_dag.evaluate.metrics.text import char_tokens, guess_language, tokens
from empathy_dag.taxonomy import default_taxonomy

RESPONSES = ["I am so sorry.", "I am so happy for you!", "I am so sorry."]


def test_distinct_n_by_hand():
    # words: [i am so sorry .] [i am so happy for you !] [i am so sorry .] -> 17 unigrams
    # distinct unigrams: i am so sorry . happy for you ! -> 9
    assert diversity.distinct_n(RESPONSES, 1) == pytest.approx(9 / 17)
    # bigrams: 4 + 6 + 4 = 14; distinct: (i am)(am so)(so sorry)(sorry .)(so happy)(happy for)(for you)(you !) = 8
    assert diversity.distinct_n(RESPONSES, 2) == pytest.approx(8 / 14)
    assert diversity.unique_share(RESPONSES) == pytest.approx(2 / 3)
    assert diversity.distinct_n([], 2) == 0.0


def test_entropy_by_hand():
    # unigram counts: i 3, am 3, so 3, sorry 2, . 2, happy 1, for 1, you 1, ! 1 (total 17)
    counts = [3, 3, 3, 2, 2, 1, 1, 1, 1]
    expected = -sum(c / 17 * math.log(c / 17) for c in counts)
    assert diversity.ngram_entropy(RESPONSES, 1) == pytest.approx(expected)
    assert diversity.ngram_entropy(["same same same"], 1) == 0.0


def test_japanese_distinct_n_counts_words():
    assert guess_language("それは辛いですね") == "ja" and guess_language("That is hard") == "en"
    # MeCab + UniDic-lite short units (was characters: 辛 い で す).
    assert tokens("辛い です", "ja") == ["辛い", "です"]
    assert tokens("今日は病院で検査を受けました。", "ja") == [
        "今日",
        "は",
        "病院",
        "で",
        "検査",
        "を",
        "受け",
        "まし",
        "た",
        "。",
    ]
    # words: 辛い ね / 辛い よ -> unigrams 4, distinct 3 (辛い ね よ); bigrams 2, distinct 2
    assert diversity.distinct_n(["辛いね", "辛いよ"], 1, "ja") == pytest.approx(3 / 4)
    assert diversity.distinct_n(["辛いね", "辛いよ"], 2, "ja") == pytest.approx(2 / 2)
    # Characters (EmplifAI's unit) remain available: 6 unigrams, 4 distinct.
    assert len(char_tokens("辛いね辛いよ")) == 6 and len(set(char_tokens("辛いね辛いよ"))) == 4


def test_diff_epitome_by_hand():
    pred, ref = [0, 1, 2, 2], [0, 2, 0, 2]
    assert epitome.diff_epitome(pred, ref) == pytest.approx((0 + 1 + 4 + 0) / 4)
    with pytest.raises(ValueError):
        epitome.diff_epitome([0, 1], [0])


def test_tfidf_matches_scikit_learn():
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [
        "I am so sorry to hear that!",
        "What happened? Are you ok?",
        "I am sorry, that is hard.",
        "So sorry. What happened next?",
    ]
    vocab, idf = epitome.fit_tfidf(docs, min_df=1)
    ours = epitome.tfidf_matrix(docs, vocab, idf).toarray()
    ref = TfidfVectorizer(analyzer=epitome.response_terms, sublinear_tf=True, vocabulary=vocab).fit(docs)
    np.testing.assert_allclose(ref.idf_, idf, rtol=1e-6)
    np.testing.assert_allclose(ref.transform(docs).toarray(), ours, rtol=1e-5, atol=1e-7)


def test_epitome_classifier_roundtrip_without_pickle(tmp_path):
    class FixedEncoder:  # 4-dim "embeddings" from text length, so the test needs no model
        def encode(self, texts):
            return np.array([[len(t), t.count("?"), t.count("!"), 1.0] for t in texts], dtype=np.float32)

    seekers = ["I failed my exam.", "My dog died.", "I got a job!", "Nobody called me."] * 6
    responses = ["What happened?", "I am so sorry.", "Congratulations!", "That must feel lonely. Why?"] * 6
    levels = [2, 1, 0, 2] * 6
    # a forced embedding weight exercises both feature blocks in the round trip
    clf, metrics = epitome.train_epitome_classifier(
        "ex", seekers, responses, levels, FixedEncoder(), test_size=0.25, embedding_weights=(0.5,)
    )
    clf.save(tmp_path / "clf", metrics)
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == [
        "classifier.safetensors",
        "config.json",
        "vocabulary.json",
    ]
    loaded = epitome.EpitomeClassifier.load(tmp_path / "clf")
    assert loaded.vocabulary == clf.vocabulary and loaded.embedding_weight == 0.5
    enc = FixedEncoder()
    x = clf.features(enc, seekers, responses)
    np.testing.assert_array_equal(
        loaded.predict(enc, seekers, responses), clf.predict(enc, seekers, responses)
    )
    # the prediction is the argmax of the linear scores
    manual = clf.classes[np.argmax(x.toarray() @ clf.coef.T + clf.intercept, axis=1)]
    np.testing.assert_array_equal(clf.predict(enc, seekers, responses), manual)


def test_vader_against_the_analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    rows = valence.valence_rows(["That is wonderful news!", "Oh no."], ["I got the job!", "My dog died."])
    for row, resp, spk in zip(
        rows, ["That is wonderful news!", "Oh no."], ["I got the job!", "My dog died."]
    ):
        assert row["vader_response"] == analyzer.polarity_scores(resp)["compound"]
        assert row["vader_speaker"] == analyzer.polarity_scores(spk)["compound"]
        assert row["vader_difference"] == pytest.approx(row["vader_response"] - row["vader_speaker"])


def test_nrc_vad_max_differences_by_hand(tmp_path):
    lex = tmp_path / "vad.txt"
    lex.write_text(
        "Word\tValence\tArousal\tDominance\nhappy\t0.9\t0.6\t0.7\nsad\t0.1\t0.3\t0.2\ncalm\t0.7\t0.1\t0.5\n"
    )
    lexicon = valence.load_nrc_vad(lex)
    rows = valence.vad_difference_rows(
        ["so happy and calm", "nothing here"], ["sad but calm", "sad"], lexicon
    )
    # prediction max (0.9, 0.6, 0.7); reference max (0.7, 0.3, 0.5)
    assert rows[0]["diff_valence"] == pytest.approx(0.2)
    assert rows[0]["diff_arousal"] == pytest.approx(0.3)
    assert rows[0]["diff_dominance"] == pytest.approx(0.2)
    assert rows[1] == {"diff_valence": None, "diff_arousal": None, "diff_dominance": None}


def test_agreement_matches_scipy():
    rng = np.random.default_rng(1)
    items = [f"i{k}" for k in range(30)]
    judge_scores = rng.integers(1, 6, size=30)
    human_rows, judge_rows = [], []
    for item, j in zip(items, judge_scores):
        judge_rows.append({"item_id": item, "system": "base", "dimension": "fluency", "score": int(j)})
        judge_rows.append({"item_id": item, "system": "base", "dimension": "general_empathy", "score": None})
        for rater in ("r1", "r2"):
            h = int(np.clip(j + rng.integers(-1, 2), 1, 5))
            human_rows.append(
                {"item_id": item, "system": "base", "dimension": "fluency", "rater": rater, "score": h}
            )
    out = agreement.judge_human_agreement(judge_rows, human_rows, n_resamples=300)
    assert [r["dimension"] for r in out] == ["fluency"]  # no human ratings for general_empathy
    row = out[0]
    human_mean = {}
    for r in human_rows:
        human_mean.setdefault(r["item_id"], []).append(r["score"])
    x = [float(j) for j in judge_scores]
    y = [float(np.mean(human_mean[i])) for i in items]
    assert row["pairs"] == 30 and row["raters"] == 2
    assert row["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert row["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert row["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)
    for m in ("spearman", "kendall", "pearson"):
        assert row[f"{m}_ci_low"] <= row[m] <= row[f"{m}_ci_high"]
        assert row[f"{m}_ci_high"] - row[f"{m}_ci_low"] > 0


def test_judge_rubric_and_parsing():
    rubric = judge.load_rubric()
    assert set(rubric.dimensions) == {"fluency", "general_empathy", "emotion_specific_empathy"}
    conv = rubric.conversation(
        "emotion_specific_empathy",
        emotion="grief",
        situation="My cat died.",
        speaker_utterance="I miss her.",
        response="I'm so sorry.",
    )
    assert (
        conv[0]["role"] == "system"
        and "grief" in conv[1]["content"]
        and "I'm so sorry." in conv[1]["content"]
    )
    assert len(rubric.sha256) == 64
    assert judge.parse_score("4") == 4
    assert judge.parse_score("Score: 5/5") == 5
    assert judge.parse_score("I would rate it a 2.") == 2
    assert judge.parse_score("10 out of 10") is None  # out of range: a failure, not a 1
    assert judge.parse_score("very empathetic") is None
    assert judge.parse_score("") is None
    assert judge.parse_score("1: Unreadable or broken text") is None  # the rubric echoed back
    assert judge.parse_score("3: Understandable with errors") is None
    assert judge.parse_score("4.") == 4


def test_japanese_is_never_scored_by_an_english_lexicon_or_backbone():
    from empathy_dag.evaluate.metrics.bertscore import backbone_for

    assert backbone_for("ja", "embedded:minilm", 6, None, 9) is None  # not scored, rather than MiniLM
    assert backbone_for("ja", "embedded:minilm", 6, "/models/mbert", 9) == ("/models/mbert", 9)
    assert backbone_for("en", "embedded:minilm", 6, "/models/mbert", 9) == ("embedded:minilm", 6)
    rows = valence.valence_rows(
        ["That is wonderful news!", "本当によかったですね。"],
        ["I got the job!", "合格しました！"],
        ["en", "ja"],
    )
    assert rows[0]["vader_response"] > 0 and rows[1] == {
        "vader_response": None,
        "vader_speaker": None,
        "vader_difference": None,
    }


def test_judge_rubric_per_language(tmp_path):
    rubrics = judge.load_rubrics()
    assert set(rubrics) == {"en", "ja"} and set(rubrics["ja"].dimensions) == set(rubrics["en"].dimensions)
    conv = rubrics["ja"].conversation(
        "emotion_specific_empathy",
        emotion="grief",
        situation="母が亡くなりました。",
        speaker_utterance="まだ信じられません。",
        response="それはお辛いですね。",
    )
    assert "悲嘆" in conv[1]["content"] and "grief" not in conv[1]["content"]  # the Japanese emotion name
    assert rubrics["ja"].sha256 != rubrics["en"].sha256
    # A rubric folder without a Japanese file gives only English: Japanese items are then not judged.
    (tmp_path / "r.yaml").write_bytes(judge.default_rubric_path().read_bytes())
    assert set(judge.load_rubrics(tmp_path / "r.yaml")) == {"en"}
    # A translation that drops a dimension is refused (scores are compared by dimension).
    (tmp_path / "r.ja.yaml").write_text(
        "name: x\nsystem: s\ntemplate: t\ndimensions:\n  fluency:\n    question: q\n"
        "    scale: {1: a, 2: b, 3: c, 4: d, 5: e}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="must match"):
        judge.load_rubrics(tmp_path / "r.yaml")


def test_alignment_parsing_and_scores():
    tax = default_taxonomy()
    assert alignment.parse_emotion("The speaker feels Sadness.", tax) == "sadness"
    assert alignment.parse_emotion("terrified, I think", tax) == tax.normalize_label("terrified")
    assert alignment.parse_emotion("no idea", tax) is None

    class FakeScorer:  # BERTScore of label strings is tested against bert_score in test_bertscore_*
        batch_size = 4

        def score(self, cands, refs, batch_size=None):
            import torch

            f = torch.tensor([1.0 if c == r else 0.5 for c, r in zip(cands, refs)])
            return f, f, f

    rows = alignment.alignment_rows(
        ["sadness", "grief maybe", "hmm"], ["sadness", "sadness", "joy"], tax, FakeScorer()
    )
    assert [r["alignment_exact"] for r in rows] == [1.0, 0.0, 0.0]
    # grief and sadness share the Ekman group "sadness"
    assert tax.ekman("grief") == tax.ekman("sadness")
    assert [r["alignment_ekman"] for r in rows] == [1.0, 1.0, 0.0]
    assert [r["alignment_bertscore_f1"] for r in rows] == [1.0, 0.5, 0.5]
    assert rows[2]["named_emotion"] is None


def test_mmlu_csv_reader(tmp_path):
    path = tmp_path / "mmlu.csv"
    path.write_text('What is 2+2?,3,4,5,6,B\n"Capital of France, the city?",Rome,Paris,Berlin,Madrid,b\n')
    rows = retention.read_mmlu_csv(path)
    assert [r["answer"] for r in rows] == ["B", "B"] and rows[1]["choices"][1] == "Paris"
    assert retention.mmlu_prompt(rows[0]).endswith("D. 6\nAnswer:")
    bad = tmp_path / "bad.csv"
    bad.write_text("q,a,b,c,d,E\n")
    with pytest.raises(ValueError):
        retention.read_mmlu_csv(bad)


def test_judge_digit_probabilities_give_every_item_a_verdict(base_model_dir):
    from empathy_dag.evaluate.metrics.judge import digit_probabilities, expected_score, load_rubric
    from empathy_dag.models import load_causal_lm

    rubric = load_rubric()
    model, tokenizer = load_causal_lm(str(base_model_dir), device="cpu")
    convs = [
        rubric.conversation(
            dim,
            emotion="relief",
            situation="My scan was clear.",
            speaker_utterance="It's clear, I can breathe again.",
            response=reply,
        )
        for dim in rubric.dimensions
        for reply in ("That is wonderful news, you must feel so light.", "ok")
    ]
    seen = []
    probs = digit_probabilities(model, tokenizer, convs, batch_size=4, progress=lambda *a: seen.append(a))
    assert len(probs) == len(convs)
    # one progress call per batch, ending at the total with no time left
    assert [d for d, *_ in seen] == [4, len(convs)] and seen[-1][1] == len(convs) and seen[-1][3] == 0
    for ps in probs:
        assert len(ps) == 5 and abs(sum(ps) - 1) < 1e-5
        assert 1 <= expected_score(ps) <= 5
    # batching with left padding must not change the verdicts
    # (nor the length sort: results come back in input order)
    single = [digit_probabilities(model, tokenizer, [c], batch_size=1)[0] for c in convs[:2]]
    assert single[0] == pytest.approx(probs[0], abs=1e-4) and single[1] == pytest.approx(probs[1], abs=1e-4)
    # only the last position's logits are computed (logits_to_keep=1): the same distribution as the
    # full forward pass's last row
    import torch

    prompt = tokenizer.apply_chat_template(convs[0], add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        full = model(**tokenizer(prompt, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
    digits = [tokenizer.encode(d, add_special_tokens=False)[0] for d in "12345"]
    assert torch.softmax(full[digits].float(), -1).tolist() == pytest.approx(probs[0], abs=1e-4)
    # the prompts about one reply share their prefix (system prompt, situation, dialogue, reply): computed
    # once, its KV cache reused for each dimension's question; the same verdicts as one pass per prompt
    replies = [c[-1]["content"].split("Listener's reply: ")[1].split("\n")[0] for c in convs]
    assert len(set(replies)) == 2
    seen.clear()
    grouped = digit_probabilities(model, tokenizer, convs, groups=replies, progress=lambda *a: seen.append(a))
    for g, b in zip(grouped, probs, strict=True):
        assert g == pytest.approx(b, abs=1e-4)
    assert [d for d, *_ in seen] == [3, 6]  # one progress call per group
    with pytest.raises(ValueError, match="groups"):
        digit_probabilities(model, tokenizer, convs, groups=replies[:2])
