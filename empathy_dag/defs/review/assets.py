"""Review stage assets.

    curated_dialogues, filter_report --> review_decisions (+ review_quarantine)   [files in <landing>/reviews/]
    curated_dialogues, filter_report, review_decisions --> review_batches  [files in <outbox>/<batch_id>/]
    curated_dialogues, filter_report, review_decisions --> reviewed_dialogues --> dataset_splits --> training
    review_decisions --> review_agreement, reviewer_pair_agreement, reviewer_acceptance

`review_decisions` sits upstream of `review_batches` on purpose: the next batch leaves out what has been
decided already, and the decision files are checked against every curated or filtered dialogue (a
reviewer may also decide on an item that was never exported, e.g. one a user reported). Because
`reviewed_dialogues` depends on `review_decisions`, the lineage of a checkpoint shows the decision table
(and reviewed_dialogues' materialization lists the sha256 of every decision file it used).

The DuckDB tables are written by the assets themselves (CREATE OR REPLACE through the `warehouse`
resource), not by the DuckDB IO manager, which skips empty frames: a table that is a snapshot of the
decision files must become empty when the files are fixed or removed, not keep the last rows. Readers
declare `review_decisions` as a dependency and read the table through the resource, so that a landing
run (new corpus file) on a machine where no decision was ever ingested still goes through: no table =
no decisions.
"""

import hashlib
from pathlib import Path

import duckdb
import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    Nothing,
    Output,
    asset,
    multi_asset,
)
from pydantic import Field

from empathy_dag.defs.curate.assets import filtered_as_dialogues
from empathy_dag.defs.io_managers import per_partition
from empathy_dag.defs.metadata import column_schema_metadata, frame_metadata, markdown_table, png_markdown
from empathy_dag.defs.partitions import emotion_partitions, single_run
from empathy_dag.defs.review.resources import ReviewStore
from empathy_dag.defs.warehouse.resource import WAREHOUSE_SCHEMA, Warehouse, write_table
from empathy_dag.ingest.landing import REVIEWS_SUBFOLDER
from empathy_dag.plots import bar_chart_png
from empathy_dag.resources import CorpusSources
from empathy_dag.review.agreement import (
    ALPHA_SCHEMA,
    RATE_SCHEMA,
    acceptance_rates,
    alpha_table,
    multi_reviewed,
    pair_table,
)
from empathy_dag.review.agreement import PAIR_SCHEMA as PAIR_AGREEMENT_SCHEMA
from empathy_dag.review.consensus import DEFAULT_VETO_REASONS, apply_review, consensus_frame
from empathy_dag.review.decisions import (
    DECISION_SCHEMA,
    DECISIONS,
    REASONS,
    decision_files,
    decision_fingerprints,
    decisions_frame,
    file_summary,
    ingest_decision_files,
    quarantine_frame,
)
from empathy_dag.review.items import ITEM_SCHEMA, BatchRules, batch_id, review_items, write_batch

REVIEW_CODE_VERSION = "review-v2"  # v2: filtered dialogues that reviewers accept come back


def _all_partitions(value) -> dict[str, pl.DataFrame]:
    """An unpartitioned asset's view of a per-emotion input: {emotion: frame} of what exists."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return {} if value is None else {"_": value}


def landed_decisions(warehouse: Warehouse) -> pl.DataFrame:
    """The `review_decisions` table, or an empty frame when it was never materialized."""
    empty = pl.DataFrame(schema=DECISION_SCHEMA)
    if not warehouse.s3_uri and not Path(warehouse.database).is_file():
        return empty
    try:
        with warehouse.connect(read_only=True) as conn:
            found = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
                "AND table_name = 'review_decisions'",
                [WAREHOUSE_SCHEMA],
            ).fetchone()[0]
            if not found:
                return empty
            frame = conn.execute(f"SELECT * FROM {WAREHOUSE_SCHEMA}.review_decisions").pl()
    except duckdb.CatalogException:
        return empty
    return frame.select([pl.col(c).cast(t) for c, t in DECISION_SCHEMA.items()])


def known_items(
    curated: dict[str, pl.DataFrame], reports: dict[str, pl.DataFrame]
) -> dict[str, tuple[str, bool]]:
    """item_id -> (emotion, in training data) for every curated or filtered dialogue."""
    known: dict[str, tuple[str, bool]] = {}
    for report in reports.values():
        for item_id, emotion in report.select("id", "emotion").iter_rows():
            known[item_id] = (emotion, False)
    for frame in curated.values():
        for item_id, emotion in frame.select("dialogue_id", "emotion").iter_rows():
            known[item_id] = (emotion, True)
    return known


@multi_asset(
    outs={
        # Nothing-typed outputs: the asset writes the tables itself (see the module docstring) and still
        # reads the per-emotion frames through the IO manager, missing partitions allowed.
        "review_decisions": AssetOut(
            dagster_type=Nothing,
            group_name="review",
            kinds={"duckdb"},
            metadata={"warehouse_tables": ["review_decisions"], **column_schema_metadata(DECISION_SCHEMA)},
            description="Every valid review decision of every file in <landing_dir>/reviews/: item, emotion, "
            "reviewer, accept/edit/reject, reason, edited reply, note, file and line.",
        ),
        "review_quarantine": AssetOut(
            dagster_type=Nothing,
            group_name="review",
            kinds={"duckdb"},
            metadata={"warehouse_tables": ["review_quarantine"]},
            description="Decision rows and files that failed validation (unknown item, conflicting duplicate, "
            "bad label, missing reason or edited reply, unparseable, empty): file, line, reason.",
        ),
    },
    code_version=REVIEW_CODE_VERSION,
    pool="duckdb_warehouse",
    can_subset=False,
    ins={
        "curated_dialogues": AssetIn(metadata={"allow_missing_partitions": True}),
        "filter_report": AssetIn(metadata={"allow_missing_partitions": True}),
    },
)
def review_decisions(
    context: AssetExecutionContext,
    corpus_sources: CorpusSources,
    warehouse: Warehouse,
    curated_dialogues,
    filter_report,
):
    corpus_sources.sync_landing()  # aws profile: the reviews/ prefix comes down with the landing zone
    folder = Path(corpus_sources.landing_dir) / REVIEWS_SUBFOLDER
    files = decision_files(folder)
    known = known_items(_all_partitions(curated_dialogues), _all_partitions(filter_report))
    outcomes = ingest_decision_files(
        files,
        known,
        limits=corpus_sources.limits(),
        archive_dir=Path(corpus_sources.archive_dir) / REVIEWS_SUBFOLDER,
    )
    summary = file_summary(outcomes)
    if summary.height and not summary["balanced"].all():
        raise RuntimeError(
            f"row accounting does not balance for {summary.filter(~pl.col('balanced'))['file'].to_list()}"
        )
    decisions, quarantine = decisions_frame(outcomes), quarantine_frame(outcomes)
    context.log.info(
        f"review decisions: {len(files)} files, {decisions.height} decisions, {quarantine.height} quarantined"
    )
    per_decision = (
        dict(decisions.group_by("decision").len().sort("decision").iter_rows()) if decisions.height else {}
    )
    decisions_table = write_table(warehouse, "review_decisions", decisions)
    quarantine_table = write_table(warehouse, "review_quarantine", quarantine)
    yield Output(
        None,
        output_name="review_decisions",
        metadata={
            **decisions_table,
            "dagster/row_count": decisions.height,
            "inbox": MetadataValue.path(str(folder)),
            "files": markdown_table(summary, max_rows=50),
            # The exact inputs of every downstream dataset and checkpoint.
            "file_sha256": MetadataValue.json({Path(o.file).name: o.file_sha256 for o in outcomes}),
            "reviewers": decisions["reviewer"].n_unique() if decisions.height else 0,
            "items_decided": decisions["item_id"].n_unique() if decisions.height else 0,
            "per_decision": MetadataValue.json(per_decision),
            # Read by review_decisions_sensor: which emotions' reviewed_dialogues are stale.
            "decision_fingerprints": MetadataValue.json(decision_fingerprints(decisions)),
            "known_items": len(known),
            "preview": markdown_table(
                decisions.select("item_id", "emotion", "reviewer", "decision", "reason"), max_rows=10
            ),
        },
    )
    yield Output(
        None,
        output_name="review_quarantine",
        metadata={
            **quarantine_table,
            "dagster/row_count": quarantine.height,
            "reasons": MetadataValue.json(
                dict(quarantine.group_by("reason_code").len().sort("reason_code").iter_rows())
                if quarantine.height
                else {}
            ),
            "preview": markdown_table(
                quarantine.select("file", "line", "reason_code", "reason"), max_rows=10
            ),
        },
    )


class ReviewBatchConfig(Config):
    audit_fraction: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of accepted corpus dialogues sent for a random audit.",
    )
    audit_seed: str = Field(
        default="empathy-dag-audit-v1",
        description="Seed of the audit sample (hash-based: "
        "an item's membership never changes when data is added).",
    )
    borderline_max_similarity: float = Field(
        default=0.9, description="near_duplicate drops below this Jaccard similarity are borderline."
    )
    borderline_max_probability: float = Field(
        default=0.7, description="emotion_consistency drops below this classifier probability are borderline."
    )


@asset(
    group_name="review",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    code_version=REVIEW_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    kinds={"parquet", "polars"},
    ins={"filter_report": AssetIn(metadata={"allow_missing_partitions": True})},
    deps=["review_decisions"],
    description="Items needing review (new synthetic dialogues, borderline filter drops, a random audit of "
    "accepted corpus dialogues) without a decision yet; one batch per run written to "
    "<outbox>/<batch_id>/ as JSONL, CSV and Label Studio tasks (batch_id = content hash).",
)
def review_batches(
    context: AssetExecutionContext,
    config: ReviewBatchConfig,
    review_store: ReviewStore,
    warehouse: Warehouse,
    curated_dialogues,
    filter_report,
):
    keys = list(context.partition_keys)
    curated = per_partition(context, curated_dialogues)
    reports = per_partition(context, filter_report)
    rules = BatchRules(
        audit_fraction=config.audit_fraction,
        audit_seed=config.audit_seed,
        max_similarity=config.borderline_max_similarity,
        max_probability=config.borderline_max_probability,
    )
    reviewed = set(landed_decisions(warehouse)["item_id"].to_list())
    items = {e: review_items(curated[e], reports.get(e), reviewed, rules) for e in keys}
    everything = pl.concat(list(items.values())) if items else pl.DataFrame(schema=ITEM_SCHEMA)
    metadata: dict = {}
    if everything.height:
        bid = batch_id(everything)
        folder = review_store.batch_folder(bid)
        paths = write_batch(everything, folder, DECISIONS, REASONS)
        metadata.update(
            {
                "batch_id": bid,
                "batch_folder": MetadataValue.path(str(folder)),
                "jsonl": MetadataValue.path(str(paths["items.jsonl"])),
                "csv": MetadataValue.path(str(paths["items.csv"])),
                "label_studio_tasks": MetadataValue.path(str(paths["label_studio_tasks.json"])),
            }
        )
    else:
        bid = ""
        metadata["batch_id"] = "(nothing to review: no file written)"
    frames = {e: df.with_columns(pl.lit(bid).alias("batch_id")) for e, df in items.items()}
    per_flag = dict(sorted(everything.group_by("flag").len().iter_rows())) if everything.height else {}
    context.log.info(f"review batch {bid or '(empty)'}: {everything.height} items {per_flag}")
    return Output(
        frames,
        metadata={
            **frame_metadata(
                frames, ["emotion", "flag", "why_flagged", "speaker_utterance", "listener_reply"]
            ),
            **metadata,
            "items": everything.height,
            "per_flag": MetadataValue.json(per_flag),
            "items_with_decisions": len(reviewed),  # left out of this and every later batch
        },
    )


class ReviewedDialoguesConfig(Config):
    allow_unreviewed_synthetic: bool = Field(
        default=True,
        description="True (demo): synthetic dialogues nobody reviewed yet may train a model. "
        "False: they are held back until a reviewer accepts or edits them.",
    )
    veto_reasons: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VETO_REASONS),
        description="A single reject with one of these reasons rejects the item.",
    )


@asset(
    group_name="review",
    partitions_def=emotion_partitions,
    backfill_policy=single_run,
    code_version=REVIEW_CODE_VERSION,
    io_manager_key="parquet_io_manager",
    kinds={"parquet", "polars"},
    deps=["review_decisions"],
    # filter_report: the rows filters removed, which come back when reviewers accept or edit them.
    ins={
        "curated_dialogues": AssetIn(),
        "filter_report": AssetIn(metadata={"allow_missing_partitions": True}),
    },
    description="curated_dialogues after human review: edits replace the reply (original in "
    "original_reply), rejected dialogues leave, unreviewed synthetic ones stay or are held back "
    "(allow_unreviewed_synthetic), filtered dialogues that reviewers accepted come back (overruled_filter). "
    "Columns of curated_dialogues + review_status, original_reply, overruled_filter.",
)
def reviewed_dialogues(
    context: AssetExecutionContext,
    config: ReviewedDialoguesConfig,
    warehouse: Warehouse,
    curated_dialogues,
    filter_report,
):
    bad = sorted(set(config.veto_reasons) - set(REASONS))
    if bad:
        raise ValueError(f"veto_reasons {bad} are not review reasons ({', '.join(REASONS)})")
    curated = per_partition(context, curated_dialogues)
    decisions = landed_decisions(warehouse).filter(pl.col("emotion").is_in(list(context.partition_keys)))
    agreed = consensus_frame(decisions, tuple(config.veto_reasons))
    reports = per_partition(context, filter_report)
    frames, rows = {}, []
    for emotion in context.partition_keys:
        report = reports.get(emotion)
        dropped = None if report is None else filtered_as_dialogues(report, dict(curated[emotion].schema))
        result = apply_review(curated[emotion], agreed, config.allow_unreviewed_synthetic, filtered=dropped)
        frames[emotion] = result.frame
        rows.append({"emotion": emotion, **result.counts})
    counts = pl.DataFrame(rows)
    filtered = decisions.filter(~pl.col("item_in_training_data"))["item_id"].unique().to_list()
    overruled = set(
        agreed.filter(pl.col("item_id").is_in(filtered) & (pl.col("outcome") != "reject"))["item_id"]
    )
    reinstated = {
        i for f in frames.values() for i in f.filter(pl.col("overruled_filter").is_not_null())["dialogue_id"]
    }
    used = decisions.select("file", "file_sha256").unique().sort("file")
    decisions_hash = hashlib.sha256("".join(sorted(used["file_sha256"].to_list())).encode()).hexdigest()[:16]
    return Output(
        frames,
        metadata={
            **frame_metadata(
                frames,
                [
                    "emotion",
                    "origin",
                    "review_status",
                    "listener_reply",
                    "original_reply",
                    "overruled_filter",
                ],
            ),
            "review_counts": markdown_table(counts, max_rows=28),
            "rejected": int(counts["rejected"].sum()),
            "edited": int(counts["edited"].sum()),
            "held_back_unreviewed_synthetic": int(counts["held_back_unreviewed_synthetic"].sum()),
            "allow_unreviewed_synthetic": config.allow_unreviewed_synthetic,
            "consensus_rules": MetadataValue.json(
                dict(agreed.group_by("rule").len().sort("rule").iter_rows()) if agreed.height else {}
            ),
            "filter_overruled": len(overruled),
            "reinstated": len(reinstated),
            # accepted filtered items whose report row lacks the dialogue (written before curate-v3)
            "not_reinstatable": len(overruled - reinstated),
            "decisions_used": decisions.height,
            "decision_files": MetadataValue.json(
                dict(
                    zip(
                        used["file"].map_elements(lambda f: Path(f).name, return_dtype=pl.String),
                        used["file_sha256"],
                    )
                )
            ),
            "decisions_hash": decisions_hash,
        },
    )


def _agreement_spec(name: str, description: str, schema: dict) -> AssetSpec:
    return AssetSpec(
        name,
        group_name="review",
        kinds={"duckdb"},
        deps=["review_decisions"],
        metadata={"warehouse_tables": [name], **column_schema_metadata(schema)},
        description=description,
    )


@multi_asset(
    specs=[
        _agreement_spec(
            "review_agreement",
            "Krippendorff's alpha (nominal) over items with several reviewers: "
            "for the decision and for each reason (binary: did the reviewer flag it).",
            ALPHA_SCHEMA,
        ),
        _agreement_spec(
            "reviewer_pair_agreement",
            "Cohen's kappa and observed agreement for every pair of "
            "reviewers, on the items both decided, for the decision and for each reason.",
            PAIR_AGREEMENT_SCHEMA,
        ),
        _agreement_spec(
            "reviewer_acceptance", "Per reviewer: decisions and accept / edit / reject rates.", RATE_SCHEMA
        ),
    ],
    code_version=REVIEW_CODE_VERSION,
    pool="duckdb_warehouse",
    can_subset=False,
)
def review_agreement(context: AssetExecutionContext, warehouse: Warehouse):
    decisions = landed_decisions(warehouse)
    alphas, pairs, rates = alpha_table(decisions), pair_table(decisions), acceptance_rates(decisions)
    written = {
        name: write_table(warehouse, name, frame)
        for name, frame in (
            ("review_agreement", alphas),
            ("reviewer_pair_agreement", pairs),
            ("reviewer_acceptance", rates),
        )
    }
    multi = multi_reviewed(decisions)
    decision_alpha = alphas.filter(pl.col("scope") == "decision")["value"][0]
    chart = {}
    if rates.height:
        series = {
            "accept rate": dict(zip(rates["reviewer"], rates["accept_rate"])),
            "edit rate": dict(zip(rates["reviewer"], rates["edit_rate"])),
            "reject rate": dict(zip(rates["reviewer"], rates["reject_rate"])),
        }
        chart["acceptance_chart"] = png_markdown(
            bar_chart_png(series, "decisions per reviewer", "share"), "decisions per reviewer"
        )
    defined = alphas.filter(pl.col("value").is_not_null())
    if defined.height:
        chart["alpha_chart"] = png_markdown(
            bar_chart_png(dict(zip(defined["scope"], defined["value"])), "Krippendorff's alpha", "alpha"),
            "Krippendorff's alpha",
        )
    context.log.info(
        f"agreement: alpha(decision)={decision_alpha}, {multi['item_id'].n_unique() if multi.height else 0} "
        "multi-reviewed items"
    )
    yield MaterializeResult(
        asset_key="review_agreement",
        metadata={
            **written["review_agreement"],
            "dagster/row_count": alphas.height,
            "alpha_decision": decision_alpha,
            "multi_reviewed_items": multi["item_id"].n_unique() if multi.height else 0,
            "alpha": markdown_table(alphas, max_rows=10),
            **chart,
        },
    )
    yield MaterializeResult(
        asset_key="reviewer_pair_agreement",
        metadata={
            **written["reviewer_pair_agreement"],
            "dagster/row_count": pairs.height,
            "kappa": markdown_table(pairs.filter(pl.col("scope") == "decision"), max_rows=20),
        },
    )
    yield MaterializeResult(
        asset_key="reviewer_acceptance",
        metadata={
            **written["reviewer_acceptance"],
            "dagster/row_count": rates.height,
            "rates": markdown_table(rates, max_rows=30),
        },
    )
