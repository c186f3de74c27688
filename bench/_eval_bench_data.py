"""Shared by the evaluation benches: real EmpatheticDialogues turns as external predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from empathy_dag.settings import shared_data_dir


def ed_external_predictions(n: int, out: Path, systems: tuple[str, ...] = ("shifted",)) -> Path:
    """`n` rows per system: speaker turn, reference reply, and a prediction that is the reply of
    another conversation (shifted), so scores are realistic rather than all 1.0."""
    path = shared_data_dir() / "empathetic_dialogues" / "utterance_pairs_valid.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benches run on the real EmpatheticDialogues turns")
    df = pl.read_csv(path, infer_schema_length=0).filter(pl.col("level") == "1")
    df = df.with_columns(pl.col(c).str.replace_all("_comma_", ",") for c in ("sp1", "sp2", "prompt"))
    df = df.head(n)
    if df.height < n:
        raise SystemExit(f"only {df.height} listener turns available, asked for {n}")
    replies = df["sp2"].to_list()
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["system", "emotion", "situation", "context", "reference", "prediction"])
        for k, system in enumerate(systems):
            for i, r in enumerate(df.iter_rows(named=True)):
                w.writerow([system, r["context"], r["prompt"], r["sp1"], r["sp2"], replies[(i + 7 + k) % n]])
    return out
