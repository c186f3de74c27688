"""Data-quality checks on per-emotion frames, evaluated when the frames are written (so they run in
the same step, for every partition of a run) and reported as Dagster asset check results."""

from __future__ import annotations

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from empathy_dag.taxonomy import default_taxonomy

FRAME_CHECKS = ("schema", "no_empty_text", "labels_in_taxonomy", "unique_ids", "min_rows_per_emotion")


def frame_check_specs(asset: str) -> list[AssetCheckSpec]:
    descriptions = {
        "schema": "Every expected column is present with its type.",
        "no_empty_text": "No text column is empty or whitespace.",
        "labels_in_taxonomy": "Every emotion is a taxonomy label and equals its partition.",
        "unique_ids": "Ids are unique within each partition.",
        "min_rows_per_emotion": "Each emotion written has at least the configured number of rows (warning).",
    }
    return [
        AssetCheckSpec(name, asset=AssetKey(asset), description=descriptions[name]) for name in FRAME_CHECKS
    ]


def frame_check_results(
    asset: str,
    frames: dict[str, pl.DataFrame],
    *,
    schema: dict[str, type[pl.DataType] | pl.DataType],
    id_column: str,
    text_columns: tuple[str, ...],
    min_rows: int,
) -> list[AssetCheckResult]:
    key = AssetKey(asset)
    labels = set(default_taxonomy().labels)
    schema_errors, empty, bad_labels, dupes, thin = [], {}, {}, {}, {}
    for emotion, df in frames.items():
        for col, dtype in schema.items():
            if col not in df.columns:
                schema_errors.append(f"{emotion}: missing {col}")
            elif df.schema[col] != dtype:
                schema_errors.append(f"{emotion}: {col} is {df.schema[col]}, expected {dtype}")
        present = [c for c in text_columns if c in df.columns]
        n_empty = (
            df.filter(
                pl.any_horizontal([pl.col(c).str.strip_chars().str.len_chars() == 0 for c in present])
            ).height
            if present and df.height
            else 0
        )
        if n_empty:
            empty[emotion] = n_empty
        if "emotion" in df.columns and df.height:
            wrong = df.filter(~pl.col("emotion").is_in(list(labels)) | (pl.col("emotion") != emotion)).height
            if wrong:
                bad_labels[emotion] = wrong
        if id_column in df.columns and df.height:
            n_dup = df.height - df[id_column].n_unique()
            if n_dup:
                dupes[emotion] = n_dup
        if df.height < min_rows:
            thin[emotion] = df.height
    return [
        AssetCheckResult(
            asset_key=key,
            check_name="schema",
            passed=not schema_errors,
            metadata={"errors": schema_errors[:20]},
        ),
        AssetCheckResult(
            asset_key=key,
            check_name="no_empty_text",
            passed=not empty,
            metadata={"empty_rows_per_emotion": empty},
        ),
        AssetCheckResult(
            asset_key=key,
            check_name="labels_in_taxonomy",
            passed=not bad_labels,
            metadata={"wrong_label_rows_per_emotion": bad_labels},
        ),
        AssetCheckResult(
            asset_key=key,
            check_name="unique_ids",
            passed=not dupes,
            metadata={"duplicate_ids_per_emotion": dupes},
        ),
        AssetCheckResult(
            asset_key=key,
            check_name="min_rows_per_emotion",
            passed=not thin,
            severity=AssetCheckSeverity.WARN,
            metadata={"min_rows": min_rows, "below_minimum": thin},
        ),
    ]
