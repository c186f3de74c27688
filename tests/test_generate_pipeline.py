"""The synthetic-data chain on the real embedded model: brainstormed_situations -> speaker_explanations
-> synthetic_dialogues -> curated_dialogues for two emotions, two items each, in one single run over a
partition range; then the same run again must generate nothing (response cache)."""

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from empathy_dag.defs.curate.assets import curated_dialogues, emotion_classifier
from empathy_dag.defs.generate.assets import (
    base_model,
    brainstormed_situations,
    speaker_explanations,
    synthetic_dialogues,
)
from empathy_dag.defs.generate.resources import TextGenerator
from empathy_dag.defs.ingest.assets import (
    dialogues,
    emotion_taxonomy,
    goemotions_examples,
    ingest_corpus,
    situations,
)
from empathy_dag.generate.prompts import load_template
from empathy_dag.ingest.records import dialogue_id

pytestmark = pytest.mark.slow

# admiration and amusement are adjacent in taxonomy order, so one range covers exactly them.
RANGE = {
    "dagster/asset_partition_range_start": "admiration",
    "dagster/asset_partition_range_end": "amusement",
}
GENERATE = [brainstormed_situations, speaker_explanations, synthetic_dialogues]
RUN_CONFIG = {
    "ops": {
        "brainstormed_situations": {
            "config": {"per_emotion": 2, "max_new_tokens": 40, "domain": "chronic illness"}
        },
        "speaker_explanations": {"config": {"max_new_tokens": 48}},
        "synthetic_dialogues": {"config": {"max_new_tokens": 40}},
        "curated_dialogues": {"config": {"emotion_consistency": "auto", "min_chars": 8}},
    }
}


def _meta(result, name):
    return {
        k: getattr(v, "value", v) for k, v in result.asset_materializations_for_node(name)[0].metadata.items()
    }


def test_synthetic_chain_and_cache(resources, data_root, base_model_dir):
    resources = {
        **resources,
        "text_generator": TextGenerator(
            source=str(base_model_dir),
            device="cpu",
            batch_size=8,
            threads=1,
            cache_dir=str(data_root / "generation_cache"),
        ),
    }
    instance = DagsterInstance.ephemeral()
    assert materialize([emotion_taxonomy, ingest_corpus], resources=resources, instance=instance).success
    upstream = [emotion_taxonomy, ingest_corpus, situations, dialogues]
    chain = [*GENERATE, curated_dialogues]
    assets = [*upstream, *chain, base_model, emotion_classifier, goemotions_examples]

    first = materialize(
        assets,
        selection=[situations, dialogues, *chain],
        resources=resources,
        instance=instance,
        tags=RANGE,
        run_config=RUN_CONFIG,
    )
    assert first.success
    brainstorm = _meta(first, "brainstormed_situations")
    assert brainstorm["prompts"] == 4 and brainstorm["generated"] == 4 and brainstorm["cache_hits"] == 0
    assert brainstorm["new_tokens"] > 0
    assert brainstorm["prompt_version"] == load_template("brainstorm_situation").version

    parquet = data_root / "parquet"
    synth = pl.concat(
        [
            pl.read_parquet(parquet / "synthetic_dialogues" / f"{e}.parquet")
            for e in ("admiration", "amusement")
        ]
    )
    brainstormed = pl.concat(
        [
            pl.read_parquet(parquet / "brainstormed_situations" / f"{e}.parquet")
            for e in ("admiration", "amusement")
        ]
    )
    # Dropped empty outputs are counted, and what is kept is accounted for.
    assert brainstormed.height + brainstorm["empty_outputs"] == 4
    assert synth.height >= 1
    assert set(synth["emotion"]) <= {"admiration", "amusement"}
    assert synth["listener_reply"].str.len_chars().min() > 0
    assert (synth["generator"] == brainstormed["generator"][0]).all()
    assert synth["prompt_version"][0] == load_template("listener_reply").version
    row = synth.row(0, named=True)
    assert row["dialogue_id"] == dialogue_id(
        row["situation_id"], row["speaker_utterance"], row["listener_reply"]
    )

    curated_meta = _meta(first, "curated_dialogues")
    curated = pl.concat(
        [pl.read_parquet(parquet / "curated_dialogues" / f"{e}.parquet") for e in ("admiration", "amusement")]
    )
    corpus = pl.concat(
        [pl.read_parquet(parquet / "dialogues" / f"{e}.parquet") for e in ("admiration", "amusement")]
    )
    report = pl.concat(
        [pl.read_parquet(parquet / "filter_report" / f"{e}.parquet") for e in ("admiration", "amusement")],
        how="diagonal_relaxed",
    )
    assert set(corpus.columns) <= set(curated.columns) and {"origin", "generator"} <= set(curated.columns)
    n_synth = curated.filter(pl.col("origin") == "synthetic").height
    # Every synthetic row is either kept or in the report with a reason; corpus rows are all kept.
    assert n_synth + report.filter(pl.col("origin") == "synthetic").height == synth.height
    assert curated.filter(pl.col("origin") == "corpus").height == corpus.height
    assert report["reason"].str.len_chars().min() > 0 if report.height else True
    # No classifier was trained in this data root: the consistency filter says it was skipped.
    assert "skipped" in str(curated_meta["emotion_consistency"])

    second = materialize(
        assets, selection=chain, resources=resources, instance=instance, tags=RANGE, run_config=RUN_CONFIG
    )
    assert second.success
    for name in ("brainstormed_situations", "speaker_explanations", "synthetic_dialogues"):
        meta = _meta(second, name)
        assert meta["generated"] == 0 and meta["new_tokens"] == 0, (name, meta)
        assert meta["cache_hits"] == meta["prompts"] > 0
    synth_again = pl.concat(
        [
            pl.read_parquet(parquet / "synthetic_dialogues" / f"{e}.parquet")
            for e in ("admiration", "amusement")
        ]
    )
    assert synth_again.sort("dialogue_id").equals(synth.sort("dialogue_id"))


def test_large_generation_runs_as_a_pipes_step_with_the_same_replies(tmp_path, base_model_dir):
    """With heavy_step_min_prompts set, brainstormed_situations sends its prompts to a Dagster Pipes
    subprocess (the ECS task of the aws profile); the replies equal the in-process ones (same batch
    seeds), the step's log reaches the run, and a second run answers from the cache without a step."""
    from empathy_dag.defs.profiles import local_resources

    def run(root, min_prompts):
        resources = {
            **local_resources(root),
            "text_generator": TextGenerator(
                source=str(base_model_dir),
                device="cpu",
                batch_size=8,
                threads=1,
                cache_dir=str(root / "generation_cache"),
                heavy_step_min_prompts=min_prompts,
            ),
        }
        instance = DagsterInstance.ephemeral()
        assets = [emotion_taxonomy, ingest_corpus, situations, dialogues, brainstormed_situations, base_model]
        result = materialize(
            assets,
            selection=[emotion_taxonomy, ingest_corpus, situations, brainstormed_situations],
            resources=resources,
            instance=instance,
            tags=RANGE,
            run_config={"ops": {"brainstormed_situations": RUN_CONFIG["ops"]["brainstormed_situations"]}},
        )
        assert result.success
        frame = pl.concat(
            [
                pl.read_parquet(root / "parquet" / "brainstormed_situations" / f"{e}.parquet")
                for e in ("admiration", "amusement")
            ]
        )
        logs = [e.message for e in instance.all_logs(result.run_id)]
        return frame.sort("situation_id"), _meta(result, "brainstormed_situations"), logs

    in_process, _, logs = run(tmp_path / "a", 0)
    assert not any("through Dagster Pipes" in m for m in logs)
    piped, meta, logs = run(tmp_path / "b", 1)
    assert any(
        "heavy step empathy_dag.generate.steps:generate_prompts through Dagster Pipes" in m for m in logs
    )
    assert any("generating 4 replies" in m for m in logs)  # the step's own log line, through Pipes
    assert meta["generated"] == 4 and meta["cache_hits"] == 0
    assert piped["situation"].to_list() == in_process["situation"].to_list()
    again, meta, logs = run(tmp_path / "b", 1)
    assert meta["cache_hits"] == 4 and meta["generated"] == 0
    assert not any("through Dagster Pipes" in m for m in logs)
    assert again["situation"].to_list() == piped["situation"].to_list()
