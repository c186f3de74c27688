"""Metadata a person wants to read in the Dagster UI: counts, previews, language mix."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema
from tabulate import tabulate

from empathy_dag.plots import bar_chart_png


def markdown_table(df: pl.DataFrame, max_rows: int = 10, max_chars: int = 80) -> MetadataValue:
    def cell(v):
        s = "" if v is None else str(v)
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    rows = [[cell(v) for v in row] for row in df.head(max_rows).iter_rows()]
    return MetadataValue.md(tabulate(rows, headers=df.columns, tablefmt="github"))


def counts_by(frames: dict[str, pl.DataFrame], column: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for df in frames.values():
        if df.height and column in df.columns:
            for value, n in df.group_by(column).len().iter_rows():
                out[str(value)] = out.get(str(value), 0) + int(n)
    return dict(sorted(out.items()))


def frames_schema(frames: Mapping[str, pl.DataFrame]) -> dict[str, pl.DataType]:
    """The columns of per-emotion frames as one {name: dtype}, in first-seen order (an empty partition
    may lack columns a full one has; the first full frame that has a column gives its type)."""
    out: dict[str, pl.DataType] = {}
    for df in sorted(frames.values(), key=lambda d: d.height == 0):
        for name, dtype in df.schema.items():
            if name not in out or (out[name] == pl.Null and dtype != pl.Null):
                out[name] = dtype
    return out


def frame_metadata(frames: dict[str, pl.DataFrame], preview_columns: Iterable[str]) -> dict:
    """Row counts per emotion, total, language mix and a preview of a few rows."""
    total = sum(df.height for df in frames.values())
    per_emotion = pl.DataFrame(
        {"emotion": list(frames), "rows": [df.height for df in frames.values()]},
        schema={"emotion": pl.String, "rows": pl.Int64},
    )
    non_empty = [df for df in frames.values() if df.height]
    sample = (
        pl.concat([df.head(2) for df in non_empty], how="diagonal_relaxed") if non_empty else pl.DataFrame()
    )
    cols = [c for c in preview_columns if c in sample.columns]
    md = {
        "dagster/row_count": total,
        "rows_per_emotion": markdown_table(per_emotion, max_rows=28),
        "language_mix": MetadataValue.json(counts_by(frames, "language")),
        "sources": MetadataValue.json(counts_by(frames, "source")),
    }
    schema = frames_schema(frames)
    if schema:
        md["dagster/column_schema"] = column_schema(schema)
    if cols:
        md["preview"] = preview_table(sample.select(cols), max_rows=8)
    if len(frames) > 1:  # a chart of one bar says nothing; a run over many emotions gets one
        counts = {e: df.height for e, df in frames.items()}
        md["rows_per_emotion_chart"] = png_markdown(
            bar_chart_png(counts, "rows per emotion"), "rows per emotion"
        )
    return md


# --- owners: the one place that says who answers for which stage ---------------------------------------

# Dagster accepts an e-mail or `team:<name>`. Per asset group; EMPATHY_DAG_OWNERS overrides it with JSON,
# either one owner list for every group (`["team:ml"]`) or some groups (`{"train": ["team:ml"]}`).
OWNERS_ENV = "EMPATHY_DAG_OWNERS"
DEFAULT_OWNERS_BY_GROUP: dict[str, list[str]] = {
    "taxonomy": ["team:empathy-data"],
    "ingest": ["team:empathy-data"],
    "generate": ["team:empathy-data"],
    "curate": ["team:empathy-data"],
    "review": ["team:empathy-annotation"],
    "pairs": ["team:empathy-data"],
    "export": ["team:empathy-data"],
    "models": ["team:empathy-modeling"],
    "train": ["team:empathy-modeling"],
    "automation": ["team:empathy-modeling"],
    "evaluate": ["team:empathy-evaluation"],
    "warehouse": ["team:empathy-evaluation"],
}
FALLBACK_OWNERS = ["team:empathy"]


def owners_by_group(env: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    import json
    import os

    raw = (os.environ if env is None else env).get(OWNERS_ENV, "").strip()
    if not raw:
        return dict(DEFAULT_OWNERS_BY_GROUP)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{OWNERS_ENV} must be JSON (a list of owners, or {{group: [owners]}}): {e}") from e
    if isinstance(value, list):
        return {group: list(value) for group in DEFAULT_OWNERS_BY_GROUP} | {"*": list(value)}
    if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
        return {**DEFAULT_OWNERS_BY_GROUP, **{k: list(v) for k, v in value.items()}}
    raise ValueError(f"{OWNERS_ENV} must be a JSON list of owners or an object of group -> list, got {raw!r}")


def owners_for(group: str | None, table: Mapping[str, list[str]]) -> list[str]:
    return list(table.get(group or "", table.get("*", FALLBACK_OWNERS)))


def with_owners(assets_defs: list, table: Mapping[str, list[str]] | None = None) -> list:
    """Every spec of `assets_defs` owned by its group's owners (owners already declared on a spec stay)."""
    from dagster import map_asset_specs

    table = owners_by_group() if table is None else table
    return list(
        map_asset_specs(
            lambda spec: (
                spec if spec.owners else spec.replace_attributes(owners=owners_for(spec.group_name, table))
            ),
            assets_defs,
        )
    )


def with_code_links(assets_defs: list, git_url: str | None = None, git_branch: str | None = None) -> list:
    """Source-code references (file + line of each asset's function) on every asset, turned into links
    to the repository when EMPATHY_DAG_GIT_URL (e.g. https://github.com/org/empathy_dag) names one;
    EMPATHY_DAG_GIT_BRANCH defaults to main. Without a URL they stay local paths, which the UI shows
    as text: a checkout has no canonical remote."""
    import os
    import warnings
    from pathlib import Path

    from dagster import AnchorBasedFilePathMapping, link_code_references_to_git, with_source_code_references

    git_url = git_url if git_url is not None else os.environ.get("EMPATHY_DAG_GIT_URL", "")
    git_branch = git_branch or os.environ.get("EMPATHY_DAG_GIT_BRANCH", "main")
    with warnings.catch_warnings():  # both are @beta in dagster 1.13; the warning says nothing to a user
        warnings.simplefilter("ignore")
        out = list(with_source_code_references(assets_defs))
        if git_url:
            out = list(
                link_code_references_to_git(
                    out,
                    git_url=git_url.rstrip("/"),
                    git_branch=git_branch,
                    file_path_mapping=AnchorBasedFilePathMapping(
                        local_file_anchor=Path(__file__),
                        file_anchor_path_in_repository="empathy_dag/defs/metadata.py",
                    ),
                )
            )
    return out


# --- column schemas: what each column of a table means --------------------------------------------------

# One glossary for the whole project: a column means the same in every table it appears in. Columns
# missing here still appear in a schema (name and type), only without a description.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "emotion": "GoEmotions label (one of the 28; the emotion partition key)",
    "language": "ISO 639-1 language code of the text",
    "source": "source file or generator the row came from",
    "origin": "where a dialogue comes from: corpus (human-written) or synthetic (LLM-generated)",
    "domain": "situation domain (e.g. medical, chronic illness)",
    "id": "stable content-hash id of the row",
    "situation_id": "content hash of (emotion, language, situation text)",
    "situation": "the situation the speaker is in, as written",
    "dialogue_id": "content hash of the dialogue (situation, speaker utterance, listener reply)",
    "explanation_id": "content hash of the generated first-person explanation",
    "speaker_utterance": "the speaker's first-person turn",
    "listener_reply": "the empathetic listener's reply",
    "original_reply": "the listener reply before a reviewer's edit",
    "seed_situation_ids": "seed situations the brainstorm prompt was shown",
    "item_index": "position of the item within its generation batch",
    "generator": "model that generated the text",
    "generator_source": "where the generator's weights came from (package, folder or endpoint)",
    "prompt_version": "hash of the prompt template (part of the asset's code version)",
    "split": "train / validation / test (stable hash split grouped by situation)",
    "split_bucket": "the situation's hash bucket in [0, 1) that decides its split",
    "pair_id": "content hash of the preference pair",
    "rejected_emotion": "the opposite emotion whose reply is the rejected one (EmPO)",
    "draw": "index of the rejected reply drawn for this prompt",
    "prompt_dialogue_id": "dialogue that gives the prompt and the chosen reply",
    "prompt_situation_id": "situation of the prompt dialogue",
    "rejected_dialogue_id": "dialogue of the opposite emotion that gives the rejected reply",
    "rejected_situation_id": "situation of the rejected dialogue",
    "negative_source": "how the rejected reply was found (opposite-emotion partition, fallback)",
    "system_prompt": "system message the model is trained with",
    "prompt": "the user turn shown to the model",
    "chosen": "the preferred (empathetic, same-emotion) reply",
    "rejected": "the dispreferred reply, written for a situation of the opposite emotion",
    "seed": "random seed of the draw",
    "pair_key": "hash of (pair, max_length): the reference-cache key",
    "ref_sha256": "sha256 of the reference policy (base weights + SFT adapter)",
    "ref_chosen_logps": "reference policy's summed log-prob of the chosen reply",
    "ref_rejected_logps": "reference policy's summed log-prob of the rejected reply",
    "filter": "curation filter that dropped the row",
    "reason": "why: the filter's or validator's explanation",
    "reason_code": "machine-readable reason of a quarantine entry",
    "text": "the text concerned",
    "file": "source file (path as read)",
    "line": "line (row) of the file, 1-based; empty for whole-file entries",
    "sha256": "sha256 of the file or model folder",
    "file_sha256": "sha256 of the decisions file",
    "rows_in": "rows read",
    "valid": "rows that passed validation",
    "quarantined": "rows held back with a reason",
    "skipped": "rows skipped (duplicates of earlier files, empty lines)",
    "item_id": "content hash of the evaluation or review item",
    "system": "model scored: base, sft, dpo, promoted or an external system",
    "prediction": "the reply the system generated for the item",
    "reference": "the human reference reply of the item",
    "metric": "metric name (see README 'Reading the scorecard')",
    "direction": "1 if higher is better, -1 if lower is better, 0 descriptive",
    "n": "items the statistic is computed over",
    "value": "mean over items",
    "std_error": "standard error of the mean",
    "ci_low": "95% bootstrap interval, lower end",
    "ci_high": "95% bootstrap interval, upper end",
    "interval_note": "why there is no interval (fewer than 2 items)",
    "versus": "system compared against",
    "versus_role": "baseline or promoted: which reference the comparison is against",
    "delta": "mean paired difference (system minus versus) on the items both answered",
    "delta_ci_low": "95% paired-bootstrap interval of the difference, lower end",
    "delta_ci_high": "95% paired-bootstrap interval of the difference, upper end",
    "paired_n": "items both systems answered",
    "p_value": "two-sided paired permutation test",
    "p_adjusted": "Benjamini-Hochberg adjusted p over the metrics of one family",
    "verdict": "better / worse / inconclusive / descriptive",
    "regression": "worse with confidence and the whole interval beyond the regression margin",
    "model_sha256": "sha256 of the checkpoint scored",
    "model_run_id": "Dagster run that materialized the checkpoint scored",
    "run_id": "Dagster run id",
    "reviewer": "who reviewed",
    "decision": "accept / edit / reject",
    "edited_reply": "the reviewer's replacement reply (edit decisions)",
    "note": "free-text note",
    "flag": "why the item is in the review batch (new synthetic, borderline drop, audit sample)",
    "why_flagged": "details of the flag",
    "in_training_data": "whether the item currently reaches the training data",
    "item_in_training_data": "whether the item reached the training data when reviewed",
    "overruled_filter": "curation filter that reviewers overruled by accepting the dialogue",
    "label": "emotion label",
    "sentiment": "positive / negative / ambiguous / neutral",
    "ekman": "Ekman basic-emotion group",
    "opposite": "opposite emotion (gives the rejected replies of EmPO pairs)",
    "ed_labels": "EmpatheticDialogues labels mapped onto this emotion",
    "definition": "short definition of the emotion",
    "labels": "GoEmotions labels of the comment",
    "rows": "row count",
    "score": "score given",
    "dimension": "rubric dimension the judge scored",
}


def column_schema(columns: Mapping[str, Any], descriptions: Mapping[str, str] | None = None) -> TableSchema:
    """A Dagster TableSchema from {column: type} (Polars dtypes, DuckDB type names or strings), each
    column described from `descriptions` then the project glossary."""
    described = {**COLUMN_DESCRIPTIONS, **(descriptions or {})}
    return TableSchema(
        columns=[
            TableColumn(name=name, type=str(dtype), description=described.get(name))
            for name, dtype in columns.items()
        ]
    )


def column_schema_metadata(columns: Mapping[str, Any], descriptions: Mapping[str, str] | None = None) -> dict:
    """Definition metadata of a table-like asset whose columns are known before it runs."""
    return {"dagster/column_schema": column_schema(columns, descriptions)}


def preview_table(df: pl.DataFrame, max_rows: int = 5, max_chars: int = 120) -> MetadataValue:
    """The first rows as a Dagster table (sortable columns in the UI, not markdown behind a button).
    Nested and non-scalar cells become text, long text is cut."""

    def cell(v):
        if v is None or isinstance(v, bool | int | float):
            return v
        s = str(v) if not isinstance(v, list | dict) else repr(v)
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    head = df.head(max_rows)
    records = [TableRecord({k: cell(v) for k, v in row.items()}) for row in head.iter_rows(named=True)]
    return MetadataValue.table(records=records, schema=column_schema(df.schema))


def table_metadata(
    df: pl.DataFrame,
    *,
    table: str | None = None,
    uri: str | None = None,
    descriptions: Mapping[str, str] | None = None,
    preview_rows: int = 5,
) -> dict:
    """What the UI shows for a table-like materialization: its Columns section (the schema actually
    written, described from the glossary), row count, table name / URI, and a preview as a table."""
    md: dict = {
        "dagster/column_schema": column_schema(df.schema, descriptions),
        "dagster/row_count": df.height,
    }
    if table:
        md["dagster/table_name"] = table
    if uri:
        md["dagster/uri"] = uri
    if df.height and preview_rows:
        md["preview_table"] = preview_table(df, max_rows=preview_rows)
    return md


# --- lineage to the exact data: which materializations a step consumed ----------------------------------

# Absolute links need the UI's address (e.g. http://127.0.0.1:3000); without it the links are relative,
# which the UI resolves against itself.
UI_URL_ENV = "EMPATHY_DAG_UI_URL"


def ui_base_url(env: Mapping[str, str] | None = None) -> str:
    import os

    return (os.environ if env is None else env).get(UI_URL_ENV, "").rstrip("/")


def consumed_materializations(instance, asset: str, partitions: Iterable[str] | None = None) -> list[dict]:
    """The latest materialization of `asset` (of each of `partitions` when given): what the IO manager
    has just loaded for the step, since a Parquet file is overwritten by every materialization of its
    partition. One dict per materialization: asset, partition, run_id, data_version, storage_id,
    timestamp. Nothing materialized: []."""
    from dagster import AssetKey, AssetRecordsFilter, DagsterEventType

    key = AssetKey(asset)
    if partitions is None:
        latest = instance.fetch_materializations(key, limit=1).records
        records = [(None, r.storage_id, r.event_log_entry) for r in latest]
    else:
        wanted = sorted(set(partitions))
        ids = instance.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION, set(wanted)
        )
        if not ids:
            return []
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())), limit=len(ids)
        )
        by_id = {r.storage_id: r for r in result.records}
        records = [(p, ids[p], by_id[ids[p]].event_log_entry) for p in wanted if p in ids and ids[p] in by_id]
    out = []
    for partition, storage_id, entry in records:
        mat = entry.asset_materialization
        out.append(
            {
                "asset": asset,
                "partition": partition,
                "run_id": entry.run_id,
                "data_version": (mat.tags or {}).get("dagster/data_version") if mat else None,
                "content_hash": _text(mat.metadata.get("content_hash")) if mat else None,
                "storage_id": storage_id,
                "timestamp": entry.timestamp,
            }
        )
    return out


def _text(value) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def lineage_metadata(consumed: list[dict], base_url: str | None = None) -> dict:
    """Checkpoint metadata that names its exact inputs: a table of every consumed materialization with
    links to its partition and its run, one run link (`MetadataValue.dagster_run`, which the UI renders
    as a link) per upstream asset and run, and the same records as JSON."""
    from urllib.parse import quote

    base = ui_base_url() if base_url is None else base_url.rstrip("/")
    rows = []
    for c in consumed:
        asset_url = f"{base}/assets/{quote(c['asset'])}"
        if c["partition"] is not None:
            asset_url += f"?view=events&partition={quote(c['partition'])}"
        rows.append(
            [
                f"[{c['asset']}]({asset_url})",
                c["partition"] or "",
                f"[{c['run_id'][:8]}]({base}/runs/{c['run_id']})",
                f"`{c['data_version']}`" if c["data_version"] else "",
                f"`{c['content_hash']}`" if c.get("content_hash") else "",
                c["storage_id"],
            ]
        )
    md: dict = {
        "consumed_materializations": MetadataValue.md(
            tabulate(
                rows,
                headers=["asset", "partition", "run", "data version", "content hash", "event id"],
                tablefmt="github",
            )
            if rows
            else "no upstream materializations recorded"
        ),
        "consumed_materializations_json": MetadataValue.json(consumed),
    }
    runs: dict[str, list[str]] = {}
    for c in consumed:
        runs.setdefault(c["asset"], [])
        if c["run_id"] not in runs[c["asset"]]:
            runs[c["asset"]].append(c["run_id"])
    for asset, run_ids in runs.items():
        for i, run_id in enumerate(run_ids):
            label = f"input_run_{asset}" + (f"_{i + 1}" if len(run_ids) > 1 else "")
            md[label] = (
                MetadataValue.url(f"{base}/runs/{run_id}") if base else MetadataValue.dagster_run(run_id)
            )
    return md


def content_data_version(hashes_by_partition: Mapping[str, str]) -> str:
    """The data version of a per-emotion materialization from its partitions' content hashes. One
    partition: its hash, so Dagster's version and staleness views compare content. Several partitions in
    one run (a single-run backfill): Dagster 1.13 records one data version per output, shared by every
    partition's event, so it is a hash over (partition, hash) pairs: it changes exactly when some
    partition's content changes. Each partition's own hash is its `content_hash` metadata
    (`record_partition_hashes`)."""
    import hashlib

    if len(hashes_by_partition) == 1:
        return next(iter(hashes_by_partition.values()))
    joined = "\x1f".join(f"{p}={h}" for p, h in sorted(hashes_by_partition.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def record_partition_hashes(context, hashes_by_partition: Mapping[str, str]) -> None:
    """Each partition's content hash on that partition's own materialization event (partition-scoped
    metadata), where the lineage of a downstream checkpoint reads it."""
    for partition, value in hashes_by_partition.items():
        context.add_asset_metadata({"content_hash": value}, partition_key=partition)


# --- charts as metadata -----------------------------------------------------------------------------------


def png_markdown(png: bytes, alt: str) -> MetadataValue:
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def chart_metadata(png: bytes, alt: str, save_to: Path | None = None) -> dict[str, MetadataValue]:
    md = {alt: png_markdown(png, alt)}
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_bytes(png)
        md[f"{alt}_path"] = MetadataValue.path(str(save_to))
    return md
