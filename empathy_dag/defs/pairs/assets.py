"""Pairs stage assets: stable splits and EmPO preference pairs, per emotion.

`preference_pairs[E]` reads the splits of E and of the taxonomy's opposite of E through a static
partition mapping, so the asset graph (and the UI's lineage) shows exactly which two partitions every
partition of pairs came from."""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    Config,
    DataVersion,
    MetadataValue,
    Output,
    StaticPartitionMapping,
    asset,
)
from pydantic import Field

from empathy_dag.defs.generate.resources import served_generator
from empathy_dag.defs.io_managers import per_partition
from empathy_dag.defs.metadata import (
    column_schema_metadata,
    content_data_version,
    frame_metadata,
    markdown_table,
    record_partition_hashes,
)
from empathy_dag.defs.partitions import emotion_partitions, single_run
from empathy_dag.generate.engine import GenerationSettings, load_generator
from empathy_dag.pairs.build import (
    PAIR_SCHEMA,
    build_preference_pairs,
    model_written_negatives,
    pairs_content_hash,
)
from empathy_dag.pairs.splits import SplitFractions, assign_splits, split_counts
from empathy_dag.taxonomy import default_taxonomy

PAIRS_CODE_VERSION = "pairs-v2"  # v2: per-emotion minimum of test dialogues


def opposite_partition_mapping() -> StaticPartitionMapping:
    """Upstream emotion U feeds downstream U itself and every emotion whose opposite is U."""
    tax = default_taxonomy()
    mapping: dict[str, set[str]] = {label: {label} for label in tax.labels}
    for label in tax.labels:
        mapping[tax.opposite(label)].add(label)
    return StaticPartitionMapping({u: sorted(d) for u, d in mapping.items()})


class SplitConfig(Config):
    """Fractions of the hash buckets. Changing them (or the salt) moves rows between splits: treat it
    as a new split definition, not a tweak."""

    train_fraction: float = 0.8
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    salt: str = "empathy-dag-splits-v1"
    min_test_dialogues_per_emotion: int = Field(
        default=2,
        description="Each emotion gets at least this many complete test dialogues (topped up from "
        "the situations nearest the test region), so the scorecard evaluates every emotion; 0 = hash cut only.",
    )

    def fractions(self) -> SplitFractions:
        return SplitFractions(self.train_fraction, self.validation_fraction, self.test_fraction, self.salt)


@asset(
    group_name="pairs",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    code_version=PAIRS_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    kinds={"parquet", "polars"},
    description="Reviewed dialogues (curated, after human review) with a stable train/validation/test "
    "split: a pure function of the situation id (hash buckets), so no situation crosses splits and new "
    "data never moves old rows.",
)
def dataset_splits(context: AssetExecutionContext, config: SplitConfig, reviewed_dialogues):
    fractions = config.fractions()
    frames = {
        e: assign_splits(df, fractions, config.min_test_dialogues_per_emotion)
        for e, df in per_partition(context, reviewed_dialogues).items()
    }
    counts = split_counts(frames)
    return Output(
        frames,
        metadata={
            **frame_metadata(frames, ["emotion", "split", "situation_id", "speaker_utterance"]),
            "split_counts": markdown_table(counts, max_rows=28),
            "fractions": MetadataValue.json(
                {
                    "train": fractions.train,
                    "validation": fractions.validation,
                    "test": fractions.test,
                    "salt": fractions.salt,
                    "min_test_dialogues_per_emotion": config.min_test_dialogues_per_emotion,
                }
            ),
            "topped_up_test_dialogues": sum(int(f["top_up"].sum()) for f in frames.values() if f.height),
        },
    )


class PairsConfig(Config):
    k: int = Field(default=3, description="Independent rejected replies drawn per prompt (EmPO used 3).")
    seed: int = 0
    system_prompt: str | None = Field(default=None, description="Optional system turn stored with each pair.")
    same_split: bool = Field(default=True, description="Draw rejected replies from the prompt's own split.")
    same_language: bool = Field(default=True, description="Draw rejected replies in the prompt's language.")
    model_negatives: bool = Field(
        default=False,
        description="Also add one negative per train prompt written by the base model as if the speaker "
        "felt the opposite emotion (slow: one generation per prompt).",
    )
    model_negatives_max_new_tokens: int = 64
    model_negatives_served_model: str = Field(
        default="",
        description="Write the model negatives with this model on the text_generator's "
        "OpenAI-compatible server (EMPATHY_DAG_OPENAI_BASE_URL) instead of the base model in process.",
    )


def _model_generate(context, max_new_tokens: int, seed: int, served_model: str = ""):
    """The generate stage's engine on the base model folder, or `served_model` on the text_generator's
    server (only loaded when model negatives are on)."""

    model_store = context.resources.model_store
    if served_model:
        generator = served_generator(context.resources.text_generator, served_model)
    else:
        generator = load_generator(source=str(model_store.folder("base_model")), adapter=None)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, seed=seed)
    failed = [0]  # prompts a server gave no usable reply for (their negative is skipped), over the run

    def generate(conversations):
        replies = generator.generate(conversations, settings)
        failed[0] += len(getattr(generator, "last_errors", []))
        return replies

    generate.failed_prompts = failed  # type: ignore[attr-defined]
    return generate


@asset(
    group_name="pairs",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    code_version=PAIRS_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    kinds={"parquet", "polars"},
    metadata=column_schema_metadata(PAIR_SCHEMA),
    required_resource_keys={"model_store", "text_generator"},
    ins={
        "dataset_splits": AssetIn(
            partition_mapping=opposite_partition_mapping(),
            # An emotion without data simply has no opposite to draw from; counted, not fatal.
            metadata={"allow_missing_partitions": True},
        )
    },
    deps=["base_model"],
    description="EmPO preference pairs: prompt = the speaker's turn, chosen = its empathetic reply, "
    "rejected = a reply written for the taxonomy's opposite emotion (k seeded draws per prompt). "
    "All splits are kept (column `split`); only train pairs feed training.",
)
def preference_pairs(context: AssetExecutionContext, config: PairsConfig, dataset_splits):
    tax = default_taxonomy()
    splits = per_partition(context, dataset_splits)
    empty = pl.DataFrame(
        schema={
            "dialogue_id": pl.String,
            "situation_id": pl.String,
            "emotion": pl.String,
            "split": pl.String,
            "language": pl.String,
            "speaker_utterance": pl.String,
            "listener_reply": pl.String,
        }
    )
    generate = None
    if config.model_negatives:
        generate = _model_generate(
            context, config.model_negatives_max_new_tokens, config.seed, config.model_negatives_served_model
        )
    frames, rows = {}, []
    for emotion in context.partition_keys:
        opposite = tax.opposite(emotion)
        pairs, stats = build_preference_pairs(
            splits.get(emotion, empty),
            splits.get(opposite, empty),
            emotion=emotion,
            opposite=opposite,
            k=config.k,
            seed=config.seed,
            system_prompt=config.system_prompt,
            same_split=config.same_split,
            same_language=config.same_language,
        )
        model_pairs = 0
        if generate is not None and emotion in splits:
            train_prompts = splits[emotion].filter(pl.col("split") == "train")
            extra = model_written_negatives(
                train_prompts,
                emotion=emotion,
                opposite=opposite,
                opposite_definition=tax[opposite].definition,
                generate=generate,
                seed=config.seed,
                system_prompt=config.system_prompt,
            )
            model_pairs = extra.height
            pairs = pl.concat([pairs, extra]).sort("pair_id")
        frames[emotion] = pairs.select(list(PAIR_SCHEMA))
        rows.append(
            {
                "emotion": emotion,
                "opposite": opposite,
                "prompts": stats.prompts,
                "pairs": pairs.height,
                "train_pairs": pairs.filter(pl.col("split") == "train").height,
                "prompts_without_opposite": stats.prompts_without_opposite,
                "model_pairs": model_pairs,
                "content_hash": pairs_content_hash(pairs)[:12],
            }
        )
    summary = pl.DataFrame(rows)
    context.log.info(f"pairs: {summary.select('emotion', 'pairs', 'prompts_without_opposite').to_dicts()}")
    hashes = dict(zip(summary["emotion"], summary["content_hash"]))
    record_partition_hashes(context, hashes)
    return Output(
        frames,
        data_version=DataVersion(content_data_version(hashes)),
        metadata={
            **frame_metadata(
                frames, ["emotion", "rejected_emotion", "split", "prompt", "chosen", "rejected"]
            ),
            "pairs_per_emotion": markdown_table(summary, max_rows=28),
            "prompts_without_opposite": int(summary["prompts_without_opposite"].sum()),
            "train_pairs": int(summary["train_pairs"].sum()),
            "model_negative_failed_prompts": generate.failed_prompts[0] if generate is not None else 0,
            "content_hashes": MetadataValue.json(dict(zip(summary["emotion"], summary["content_hash"]))),
        },
    )
