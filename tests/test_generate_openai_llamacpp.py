"""The OpenAI-compatible backend against a real server: `python -m llama_cpp.server` on 127.0.0.1 with
the embedded SmolLM2 GGUF, started by a fixture. Skipped when llama-cpp-python[server] is missing."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess

import pytest

from empathy_dag.defs.generate.resources import OpenAICompatibleBackend
from empathy_dag.generate.engine import GenerationSettings, ResponseCache, model_cache_id
from empathy_dag.generate.llama_server import start_llama_server
from empathy_dag.generate.openai_backend import ModelNotFound
from tests.moto_server import free_port
from tests.test_generate_openai_faults import _two_test_rows_per_emotion

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MISSING = [
    m
    for m in ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
    if importlib.util.find_spec(m) is None
]
if MISSING:
    pytest.skip(
        f"llama-cpp-python[server] not installed (missing {', '.join(MISSING)})", allow_module_level=True
    )

ALIAS = "smollm2"
SETTINGS = GenerationSettings(max_new_tokens=24, temperature=0.7, top_p=0.9, seed=7)
CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a caring listener. Answer in one or two sentences."},
        {"role": "user", "content": text},
    ]
    for text in (
        "My dog died this morning.",
        "I finally got the job I wanted!",
        "Nobody came to my birthday.",
    )
]


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def llama_server():
    from empathy_dag.models import embedded_smollm2_gguf

    port = free_port()
    proc = start_llama_server(embedded_smollm2_gguf(), port, alias=ALIAS)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_server(proc)


def test_replies_through_llama_cpp_server_shared_cache_with_engine(llama_server, base_model_dir, tmp_path):
    cache_dir = tmp_path / "generation_cache"
    backend = OpenAICompatibleBackend(
        base_url=llama_server,
        model=ALIAS,
        max_in_flight=2,
        timeout_s=120,
        # The in-process engine's id for the same weights and its tokenizer: cache keys coincide.
        cache_id=model_cache_id(str(base_model_dir)),
        tokenizer=str(base_model_dir),
        cache_dir=str(cache_dir),
    )
    gen = backend.get_generator()
    replies = gen.generate(CONVERSATIONS, SETTINGS)
    assert len(replies) == 3 and all(isinstance(r, str) and r.strip() for r in replies), replies
    stats = gen.last_stats
    assert stats["generated"] == 3 and stats["retries"] == 0
    # usage came from the server (no estimate) and respects max_tokens.
    assert stats["tokens_estimated_for"] == 0 and 3 <= stats["new_tokens"] <= 3 * SETTINGS.max_new_tokens
    assert stats["tokens_per_s"] > 0 and stats["requests_per_s"] > 0
    assert len(ResponseCache(cache_dir)) == 3

    # Seeded: the same request without the cache draws the same reply.
    uncached = dataclasses.replace(gen, cache=None)
    assert uncached.generate(CONVERSATIONS[:1], SETTINGS) == replies[:1]

    # Switching to the in-process engine for the same weights regenerates nothing.
    from empathy_dag.generate.engine import load_generator

    engine = load_generator(base_model_dir, cache_dir=cache_dir, device="cpu")
    assert engine.cache_id == gen.cache_id
    assert engine.generate(CONVERSATIONS, SETTINGS) == replies
    assert engine.last_stats["cached"] == 3 and engine.last_stats["generated"] == 0


def test_wrong_model_name_is_caught_before_generating(llama_server, tmp_path):
    # llama_cpp.server silently answers with its default model for any name; the /models check
    # is what turns a typo into an error instead of replies from the wrong model.
    gen = OpenAICompatibleBackend(
        base_url=llama_server, model="smollm2-typo", cache_dir=str(tmp_path / "c")
    ).get_generator()
    with pytest.raises(ModelNotFound) as err:
        gen.generate(CONVERSATIONS[:1], SETTINGS)
    assert "['smollm2'], not 'smollm2-typo'" in str(err.value) and "--model_alias" in str(err.value)
    assert len(gen.cache) == 0


def test_synthetic_dialogues_materialize_through_the_server(
    llama_server, resources, data_root, base_model_dir
):
    """The SYNTHEMPATHY chain, unchanged, with `text_generator` pointed at the llama.cpp server."""
    import polars as pl
    from dagster import DagsterInstance, materialize

    from empathy_dag.defs.generate.assets import (
        base_model,
        brainstormed_situations,
        speaker_explanations,
        synthetic_dialogues,
    )
    from empathy_dag.defs.generate.resources import ServerTextGenerator
    from empathy_dag.defs.ingest.assets import emotion_taxonomy, ingest_corpus, situations

    server = OpenAICompatibleBackend(
        base_url=llama_server,
        model=ALIAS,
        max_in_flight=2,
        cache_id=model_cache_id(str(base_model_dir)),
        tokenizer=str(base_model_dir),
    )
    resources = {
        **resources,
        "text_generator": ServerTextGenerator(server=server, cache_dir=str(data_root / "generation_cache")),
    }
    run_config = {
        "ops": {
            "brainstormed_situations": {"config": {"per_emotion": 2, "max_new_tokens": 40}},
            "speaker_explanations": {"config": {"max_new_tokens": 48}},
            "synthetic_dialogues": {"config": {"max_new_tokens": 40}},
        }
    }
    chain = [brainstormed_situations, speaker_explanations, synthetic_dialogues]
    assets = [emotion_taxonomy, ingest_corpus, situations, base_model, *chain]
    instance = DagsterInstance.ephemeral()
    assert materialize([emotion_taxonomy, ingest_corpus], resources=resources, instance=instance).success

    def run():
        result = materialize(
            assets,
            selection=[situations, *chain],
            resources=resources,
            instance=instance,
            partition_key="admiration",
            run_config=run_config,
        )
        assert result.success
        return {
            name: {
                k: getattr(v, "value", v)
                for k, v in result.asset_materializations_for_node(name)[0].metadata.items()
            }
            for name in ("brainstormed_situations", "speaker_explanations", "synthetic_dialogues")
        }

    first = run()
    assert first["brainstormed_situations"]["generated"] == 2
    assert first["brainstormed_situations"]["new_tokens"] > 0
    assert first["synthetic_dialogues"]["generators"] == [server.cache_id]
    brainstormed = pl.read_parquet(data_root / "parquet" / "brainstormed_situations" / "admiration.parquet")
    assert brainstormed.height + first["brainstormed_situations"]["empty_outputs"] == 2
    assert set(brainstormed["generator_source"]) <= {f"{llama_server}#{ALIAS}"}
    synth = pl.read_parquet(data_root / "parquet" / "synthetic_dialogues" / "admiration.parquet")
    explanations = pl.read_parquet(data_root / "parquet" / "speaker_explanations" / "admiration.parquet")
    # One reply asked per explanation, through the server; every one kept or counted as empty.
    assert first["synthetic_dialogues"]["prompts"] == explanations.height
    assert synth.height + first["synthetic_dialogues"]["empty_outputs"] == explanations.height
    assert set(synth["generator_source"]) <= {f"{llama_server}#{ALIAS}"}
    assert synth.height == 0 or synth["listener_reply"].str.len_chars().min() > 0

    # The same run again: every prompt of every step comes from the cache, nothing is generated.
    second = run()
    for name, meta in second.items():
        assert meta["generated"] == 0 and meta["cache_hits"] == first[name]["prompts"], name


def test_test_generations_and_judge_through_a_served_model(
    llama_server, resources, data_root, base_model_dir
):
    """The evaluation assets, unchanged, with `served_models`: the base system's replies and the judge's
    scores come from the llama.cpp server (cache ids name the served model), nothing loads in process."""
    import duckdb
    from dagster import asset, instance_for_test, materialize

    from empathy_dag.defs.evaluate import assets as ev
    from empathy_dag.defs.evaluate.resources import EvaluationConfig
    from empathy_dag.defs.generate.resources import ServerTextGenerator
    from empathy_dag.defs.partitions import emotion_partitions, single_run

    splits = asset(
        name="dataset_splits",
        partitions_def=emotion_partitions,
        backfill_policy=single_run,
        io_manager_key="parquet_io_manager",
    )(_two_test_rows_per_emotion)
    resources["model_store"].folder("base_model").symlink_to(base_model_dir, target_is_directory=True)
    cache_dir = str(data_root / "generation_cache")
    resources["text_generator"] = ServerTextGenerator(
        server=OpenAICompatibleBackend(
            base_url=llama_server, model=ALIAS, max_in_flight=2, cache_dir=cache_dir
        ),
        cache_dir=cache_dir,
    )

    def evaluation(judge_scoring: str) -> EvaluationConfig:
        return EvaluationConfig(
            systems=["base"],
            max_new_tokens=12,
            max_items_per_emotion=2,
            min_items_per_emotion=1,
            judge_scoring=judge_scoring,
            judge_max_items=2,
            served_models={"base": ALIAS, "judge": ALIAS},
        )

    resources["evaluation"] = evaluation("generate")
    tags = {"dagster/asset_partition_range_start": "anger", "dagster/asset_partition_range_end": "annoyance"}
    with instance_for_test() as instance:
        run = materialize(
            [splits, ev.evaluation_set, ev.test_generations],
            resources=resources,
            tags=tags,
            instance=instance,
        )
        generations = run.asset_materializations_for_node("test_generations")[0].metadata
        stats = generations["systems"].value["base"]
        assert stats["cache_id"] == f"server:{ALIAS}" and stats["generated"] == 4
        assert stats["failed_prompts"] == 0 and generations["failed_prompts"].value == 0
        assert materialize(
            [ev.external_predictions, ev.evaluation_items], resources=resources, instance=instance
        ).success
        judged = materialize([ev.metric_judge], resources=resources, instance=instance)
        meta = judged.asset_materializations_for_node("metric_judge")[0].metadata
        assert meta["judge_model"].value == f"served:{ALIAS}" and meta["scoring"].value == "generate"
        with duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True) as db:
            predictions = db.execute("SELECT prediction FROM evaluation_items").pl()["prediction"]
            judge = db.execute("SELECT * FROM metric_judge").pl()
        assert predictions.len() == 4 and predictions.str.len_chars().min() > 0
        # Two items x the rubric's dimensions; a reply without a digit is a counted parse failure, not a crash.
        assert judge.height >= 2 and judge["reply"].str.len_chars().min() > 0
        assert (
            meta["parse_failures"].value == judge["score"].is_null().sum()
            and meta["request_errors"].value == 0
        )

        # The probabilities mode through the same server: every item scored from the top logprobs.
        resources["evaluation"] = evaluation("probabilities")
        judged = materialize([ev.metric_judge], resources=resources, instance=instance)
        meta = judged.asset_materializations_for_node("metric_judge")[0].metadata
        with duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True) as db:
            scored = db.execute("SELECT * FROM metric_judge").pl()
    assert meta["scoring"].value == "probabilities" and meta["judge_model"].value == f"served:{ALIAS}"
    assert meta["request_errors"].value == 0 and meta["parse_failures"].value == 0
    assert scored.height == judge.height and scored["score"].is_between(1, 5).all()
    assert scored["expected_score"].is_between(1.0, 5.0).all() and scored["reply"].str.starts_with("1:").all()


def test_judge_digit_probabilities_through_the_server_match_the_in_process_judge(
    llama_server, base_model_dir
):
    """The served judge's P(score) from llama.cpp's top logprobs against the in-process judge's softmax
    over the digit logits, same weights (the Q8 GGUF vs its float32 de-quantization) and same prompt."""
    from empathy_dag.evaluate.metrics.judge import digit_probabilities, load_rubrics
    from empathy_dag.models import load_causal_lm

    rubric = load_rubrics(None)["en"]
    convs = [
        rubric.conversation(
            dim,
            emotion="sadness",
            situation="My dog died.",
            speaker_utterance="My dog died this morning.",
            response="That sounds really hard, I'm so sorry.",
        )
        for dim in list(rubric.dimensions)[:2]
    ]
    gen = OpenAICompatibleBackend(base_url=llama_server, model=ALIAS).get_generator()
    served = gen.digit_probabilities(convs)
    assert gen.last_errors == [] and gen.last_stats["scored"] == 2
    model, tokenizer = load_causal_lm(str(base_model_dir), device="cpu")
    local = digit_probabilities(model, tokenizer, convs)
    for s, loc in zip(served, local, strict=True):
        assert sum(s) == pytest.approx(1.0)
        assert max(range(5), key=s.__getitem__) == max(range(5), key=loc.__getitem__)
        # llama.cpp's Q8 matmuls vs float32: measured <= 0.041 apart on 9 judge prompts.
        assert max(abs(a - b) for a, b in zip(s, loc)) < 0.1, (s, loc)


def test_served_model_without_a_server_is_a_clear_error():
    from empathy_dag.defs.generate.resources import TextGenerator, served_generator

    with pytest.raises(ValueError, match="EMPATHY_DAG_OPENAI_BASE_URL"):
        served_generator(TextGenerator(), "smollm2")
