"""Loaders on small fixtures (written for this project) and on the real files in ../shared/data."""

import json
from pathlib import Path

import polars as pl

from empathy_dag.ingest import language
from empathy_dag.ingest.corpus import dialogues_frame, ingest_files, situations_frame
from empathy_dag.ingest.language import (
    PARALLEL_MIN_TEXTS,
    cached_guesses,
    identify_language,
    identify_languages,
)
from empathy_dag.ingest.readers import read_ed_raw_csv, read_goemotions_tsv, sniff_format
from empathy_dag.ingest.records import detect_language, dialogue_id, situation_id
from empathy_dag.settings import assets_dir
from empathy_dag.taxonomy import default_taxonomy
from tests.conftest import FIXTURES, shared_file

TAX = default_taxonomy()


def test_seed_corpus_has_ten_english_and_ten_japanese_situations_per_emotion():
    seed = sorted((assets_dir() / "seed").glob("*.jsonl"))
    result = ingest_files(seed, taxonomy=TAX)
    assert not result.quarantine.height, result.quarantine.to_dicts()[:3]
    sit = situations_frame(result.corpus)
    en = sit.filter(pl.col("language") == "en").group_by("emotion").len()
    ja = sit.filter(pl.col("language") == "ja").group_by("emotion").len()
    assert en.height == 28 and en["len"].min() >= 10
    assert ja.height == 28 and ja["len"].min() >= 10
    assert sit.height >= 560
    dia = dialogues_frame(result.corpus)
    assert dia.height == sit.height  # every seed situation carries its gold two-turn dialogue
    chronic = sit.filter(pl.col("domain") != "everyday life").height
    assert chronic / sit.height > 0.75


def test_japanese_seeds_are_ten_dialogues_per_emotion_read_as_japanese_and_pass_every_filter():
    """The Japanese seed set EmplifAI-style (chronic-illness dialogues, 10 per GoEmotions label): every
    row passes ingest validation, lingua reads it as Japanese, and curation drops none of it even under
    the synthetic rows' rules (length, refusal, prompt echo, the Japanese unsafe list, language, exact
    and near duplicates across all seeds, English included). Emotion consistency is the one filter left
    out: it needs the trained classifier, and seed labels are the authors'."""
    from empathy_dag.curate.filters import CurationPolicy, FilterConfig, curate_partitions

    files = sorted((assets_dir() / "seed").glob("situations_ja_part*.jsonl"))
    result = ingest_files(files, taxonomy=TAX)
    assert not result.quarantine.height, result.quarantine.to_dicts()[:3]
    corpus = result.corpus
    assert set(corpus["language"]) == {"ja"} and set(corpus["language_detected"]) == {"ja"}
    assert dict(corpus.group_by("emotion").len().iter_rows()) == dict.fromkeys(TAX.labels, 10)
    assert dialogues_frame(corpus).height == 280 and corpus["domain"].n_unique() >= 20

    everything = ingest_files(sorted((assets_dir() / "seed").glob("*.jsonl")), taxonomy=TAX).corpus
    dialogues = dialogues_frame(everything).with_columns(pl.lit("corpus").alias("origin"))
    frames = {e: dialogues.filter(pl.col("emotion") == e) for e in TAX.labels}
    curated = curate_partitions(frames, FilterConfig(), CurationPolicy(skip={"corpus": ()}))
    dropped = [r for r in curated.report.values() if r.height]
    assert not dropped, pl.concat(dropped).select("filter", "reason", "text").to_dicts()[:3]


def test_raw_empathetic_dialogues_csv_decodes_commas_groups_conversations_and_maps_labels():
    data = (FIXTURES / "ed_raw_sample.csv").read_bytes()
    assert sniff_format(Path("x.csv"), data) == "ed_raw"
    rows = read_ed_raw_csv(data, "ed_raw_sample.csv")
    dialogues = [r for r in rows if r.values]
    skipped = [r for r in rows if r.skip_reason]
    # conv 1: two exchanges; conv 2: one exchange + a trailing speaker turn; conv 3: one exchange
    assert len(dialogues) == 4 and len(skipped) == 1
    first = dialogues[0].values
    assert first["situation"] == "My insulin pump alarmed at 3am, and I could not make it stop."
    assert first["speaker_utterance"].startswith("The pump started screaming in the middle of the night, I")
    assert first["listener_reply"].startswith("That sounds frightening")
    result = ingest_files([FIXTURES / "ed_raw_sample.csv"], taxonomy=TAX)
    corpus = result.corpus
    assert set(corpus["emotion"]) == {"fear", "pride"}  # terrified -> fear, proud -> pride
    assert set(corpus["source_label"]) == {"terrified", "proud"}
    assert result.quarantine["reason_code"].to_list() == ["unknown_emotion"]  # "hangry"
    assert result.outcomes[0].balanced


def test_user_jsonl_and_csv_schema_with_language_detection_and_situation_only_rows():
    result = ingest_files([FIXTURES / "user_dialogues.jsonl", FIXTURES / "user_dialogues.csv"], taxonomy=TAX)
    assert result.quarantine.height == 0
    c = result.corpus
    assert c.height == 6
    by_emotion = {r["emotion"]: r for r in c.to_dicts()}
    assert by_emotion["gratitude"]["source_label"] == "grateful"
    assert by_emotion["nervousness"]["language"] == "ja"  # detected, not declared
    assert by_emotion["sadness"]["dialogue_id"] is None  # a situation without a dialogue
    assert by_emotion["joy"]["speaker_utterance"] == "She drew me with a cape, like a superhero!"
    assert set(c["source"]) == {"user_dialogues"}


def test_ids_are_stable_content_hashes():
    a = situation_id("joy", "en", "My  granddaughter visited.")
    assert a == situation_id("joy", "en", "my granddaughter visited.")  # whitespace and case
    assert a != situation_id("pride", "en", "My granddaughter visited.")
    assert dialogue_id(a, "x", "y") != dialogue_id(a, "x", "z")
    r1 = ingest_files([FIXTURES / "user_dialogues.csv"], taxonomy=TAX).corpus
    r2 = ingest_files([FIXTURES / "user_dialogues.csv"], taxonomy=TAX).corpus
    assert r1["dialogue_id"].to_list() == r2["dialogue_id"].to_list()


def test_language_detection():
    assert detect_language("I had my check-up today.") == "en"
    assert detect_language("今日は検査の日でした。") == "ja"
    assert detect_language("12345 !!!") == "und"
    # What the old regex got wrong: Han-only Chinese was read as Japanese, Spanish and French as English.
    assert detect_language("我今天去医院做了检查，医生说结果还要等一周。") == "zh"
    assert detect_language("오늘 병원에서 검사를 받았는데 결과가 걱정돼요.") == "ko"
    assert detect_language("Hoy fui al médico y todavía estoy esperando los resultados.") == "es"
    assert detect_language("Je suis allé chez le médecin et j'attends encore les résultats.") == "fr"
    guess = identify_language("I have been waiting for my biopsy results all week.")
    assert guess.language == "en" and guess.confidence > 0.8
    # Too short to tell: below the confidence floor it is undetermined, not a coin flip.
    assert identify_language("Oh no!").language == "und"


def test_batch_identification_gives_what_one_call_per_text_gives():
    """identify_languages (lingua's multi-threaded batch call, each distinct text once) against
    identify_language (one call per text) on the shipped seeds in both languages, other scripts and
    languages, letterless and too-short text, and repeats."""
    texts = []
    for path in sorted((assets_dir() / "seed").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.append(f"{row['situation']} {row.get('speaker_utterance') or ''}".strip())
    texts += [
        "我等活检结果已经等了一个星期了。",
        "오늘 병원에서 검사를 받았는데 결과가 걱정돼요.",
        "Llevo toda la semana esperando los resultados de la biopsia.",
        "Oh no!",
        "12345 !!!",
        "",
        "   ",
    ]
    texts += texts[:20]  # repeats
    assert len(set(texts)) > PARALLEL_MIN_TEXTS  # the batch call, not the per-text fallback
    batch = identify_languages(texts)
    assert set(batch) == set(texts)
    # lingua sums in no fixed order, so a confidence may differ in its last bit from one call to the next
    # (the corpus stores it rounded to 4 places)
    for text in texts:
        one = identify_language(text)
        assert one.language == batch[text].language and abs(one.confidence - batch[text].confidence) < 1e-9, (
            text
        )
    assert {g.language for g in batch.values()} >= {"en", "ja", "zh", "ko", "es", "und"}
    small = identify_languages(texts[:3])  # under PARALLEL_MIN_TEXTS: one call per text
    assert [small[t].language for t in texts[:3]] == [batch[t].language for t in texts[:3]]


def test_language_guesses_cached_across_runs_give_the_same_corpus(tmp_path, monkeypatch):
    """A second ingest of the same files with the cache of the first identifies nothing again (lingua is
    made unusable) and gives the same corpus; the cache keeps only the texts of the latest run, and a cache
    written by another identifier (another fingerprint) is not read."""
    seed = sorted((assets_dir() / "seed").glob("*.jsonl"))
    cache = tmp_path / "cache" / "language_guesses.parquet"
    first = ingest_files(seed, taxonomy=default_taxonomy(), language_cache=cache)
    (written,) = list(cache.parent.glob("language_guesses.*.parquet"))
    assert pl.read_parquet(written).height == first.corpus.height  # one text per row here: all distinct

    def no_identifier():
        raise AssertionError("identified again a text the cache holds")

    with monkeypatch.context() as m:
        m.setattr(language, "_detector", no_identifier)
        again = ingest_files(seed, taxonomy=default_taxonomy(), language_cache=cache)
    assert again.corpus.equals(first.corpus) and again.quarantine.equals(first.quarantine)
    assert first.corpus["language_detected"].null_count() == 0

    fewer = ingest_files(seed[:1], taxonomy=default_taxonomy(), language_cache=cache)
    assert pl.read_parquet(written).height == fewer.corpus.height < first.corpus.height  # pruned to this run

    monkeypatch.setattr(language, "_fingerprint", lambda: "another")
    with cached_guesses(cache) as store:
        assert store.path != written and store.get(first.corpus["situation"][0]) is None


def test_detected_language_and_confidence_are_stored_and_unsupported_rows_quarantined(tmp_path):
    rows = [
        {"emotion": "fear", "situation": "I have been waiting for my biopsy results all week."},
        {"emotion": "fear", "situation": "検査の結果を一週間ずっと待っていて、落ち着きません。"},
        {"emotion": "fear", "situation": "Llevo toda la semana esperando los resultados de la biopsia."},
        {"emotion": "fear", "situation": "我等活检结果已经等了一个星期了。"},
        # Declared: kept as declared, the detection stored beside it.
        {"emotion": "fear", "situation": "My scan is tomorrow and I cannot sleep.", "language": "ja"},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    result = ingest_files([path], taxonomy=TAX)
    corpus = result.corpus.sort("source_line")
    assert corpus["language"].to_list() == ["en", "ja", "ja"]
    assert corpus["language_detected"].to_list() == ["en", "ja", "en"]
    assert corpus["language_confidence"].dtype == pl.Float64 and (corpus["language_confidence"] > 0.5).all()
    quarantine = result.quarantine.sort("line")
    assert quarantine["reason_code"].to_list() == ["unknown_language", "unknown_language"]
    assert "'es' (detected" in quarantine["reason"][0] and "'zh' (detected" in quarantine["reason"][1]


def test_real_empathetic_dialogues_utterance_pairs():
    path = shared_file("empathetic_dialogues", "utterance_pairs_valid.csv")
    result = ingest_files([path], taxonomy=TAX)
    outcome = result.outcomes[0]
    assert outcome.balanced and outcome.rows_in == 7577
    dia = dialogues_frame(result.corpus)
    # first exchange of each conversation (speaker opens, listener replies)
    assert 2000 < dia.height < 2800
    assert dia["emotion"].is_in(TAX.labels).all()
    assert dia.filter(pl.col("speaker_utterance").str.contains("_comma_")).height == 0
    assert dia["emotion"].n_unique() >= 20


def test_real_empathetic_dialogues_conversations_give_situations():
    path = shared_file("empathetic_dialogues", "conversations_valid.csv")
    result = ingest_files([path], taxonomy=TAX)
    assert result.outcomes[0].balanced
    sit = situations_frame(result.corpus)
    assert sit.height > 2500
    assert result.corpus["dialogue_id"].null_count() == result.corpus.height


def test_real_goemotions_tsv():
    path = shared_file("goemotions", "dev.tsv")
    rows = read_goemotions_tsv(path, TAX.labels)
    assert len(rows) == 5426
    assert all(set(r["labels"]) <= set(TAX.labels) for r in rows)
    multi = sum(len(r["labels"]) > 1 for r in rows) / len(rows)
    assert 0.1 < multi < 0.25  # README: 16% of rows carry more than one label
