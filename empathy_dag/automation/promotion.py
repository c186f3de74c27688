"""The promotion gate: a new DPO checkpoint replaces the promoted model only if it does not regress.

Two gates use the same pure rule (`promotion_decision`):
1. `dpo_checkpoint_no_regression`, a blocking asset check on `dpo_checkpoint`, compares the metrics the
   training step records (metadata `metrics`, e.g. DPO reward accuracy and eval loss) with those of the
   promoted model. A failure stops the run before evaluation: nothing downstream sees the checkpoint.
2. `promoted_model` (downstream of the checkpoint and of the leaderboard) compares evaluation metrics
   (the `leaderboard` row of the candidate) with the promoted model's, and moves the pointer file only
   when the candidate passes. A rejected candidate is recorded (metadata + `promotion_log`) and the
   pointer keeps naming the previous model: a regression never replaces the promoted model.

Metric names are not hard-coded: every numeric metric both sides have is compared, higher-is-better
unless its name says otherwise (loss, perplexity, toxicity, error, latency, distance) or the config lists
it in `lower_is_better`."""

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

# The evaluation stage names the DPO model "dpo" in the leaderboard (`system` column).
CANDIDATE_SYSTEMS = ["dpo", "dpo_checkpoint"]
LOWER_IS_BETTER_HINTS = ("loss", "perplexity", "toxicity", "error", "latency", "distance", "seconds")
NOT_METRICS = ("n_", "num_", "parameters", "steps", "epoch", "rank", "rows", "seed", "size", "count")


@dataclass(frozen=True)
class Tolerances:
    """How much worse than the promoted model a candidate may be, per metric (absolute units)."""

    default: float = 0.01
    per_metric: Mapping[str, float] = field(default_factory=dict)
    lower_is_better: frozenset[str] = frozenset()
    metrics: tuple[str, ...] = ()  # compare only these; () = every numeric metric both sides have
    required: tuple[str, ...] = ()  # the candidate must report these

    def tolerance(self, name: str) -> float:
        return float(self.per_metric.get(name, self.default))

    def lower_better(self, name: str) -> bool:
        return name in self.lower_is_better or any(h in name.lower() for h in LOWER_IS_BETTER_HINTS)


def numeric_metrics(values: Mapping[str, Any] | None) -> dict[str, float]:
    """The finite numbers among `values` that look like metrics (not counts or sizes)."""
    out = {}
    for k, v in (values or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if any(k.lower().startswith(p) or k.lower() == p.rstrip("_") for p in NOT_METRICS):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


def promotion_decision(
    candidate_metrics: Mapping[str, Any],
    promoted_metrics: Mapping[str, Any] | None,
    tolerances: Tolerances = Tolerances(),
) -> tuple[bool, list[str]]:
    """(passed, reasons). Passing needs every required metric present and no compared metric worse
    than the promoted model's by more than its tolerance. With no promoted model yet, the candidate
    passes if it reports its required metrics. With a promoted model but nothing to compare, it fails:
    a gate that cannot compare must not promote."""
    cand = numeric_metrics(candidate_metrics)
    reasons: list[str] = []
    passed = True
    for name in tolerances.required:
        if name not in cand:
            passed = False
            reasons.append(f"{name}: required metric missing from the candidate")
    if promoted_metrics is None:
        reasons.append("no promoted model yet: the first passing candidate is promoted")
        return passed, reasons
    prom = numeric_metrics(promoted_metrics)
    names = [m for m in (tolerances.metrics or sorted(set(cand) & set(prom)))]
    compared = 0
    for name in names:
        if name not in cand:
            passed = False
            reasons.append(f"{name}: missing from the candidate")
            continue
        if name not in prom:
            reasons.append(f"{name}: {cand[name]:.4g} (promoted model has none; not compared)")
            continue
        compared += 1
        lower = tolerances.lower_better(name)
        gain = (prom[name] - cand[name]) if lower else (cand[name] - prom[name])
        tol = tolerances.tolerance(name)
        verdict = "ok" if gain >= -tol else "REGRESSION"
        if verdict != "ok":
            passed = False
        reasons.append(
            f"{name}: {cand[name]:.4g} vs promoted {prom[name]:.4g} "
            f"({'lower' if lower else 'higher'} is better, tolerance {tol:g}) {verdict}"
        )
    if compared == 0:
        passed = False
        reasons.append("no metric in common with the promoted model: cannot show it is not a regression")
    return passed, reasons


# ------------------------------------------------------------------ Dagster wiring (thin)


class PromotionConfig(Config):
    default_tolerance: float = Field(default=0.01, description="Allowed absolute drop per metric.")
    tolerances: dict[str, float] = Field(default_factory=dict, description="Per-metric allowed drop.")
    lower_is_better: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list, description="Compare only these (empty = all common).")
    required_metrics: list[str] = Field(default_factory=list)

    def to_tolerances(self) -> Tolerances:
        return Tolerances(self.default_tolerance, dict(self.tolerances), frozenset(self.lower_is_better),
                          tuple(self.metrics), tuple(self.required_metrics))


def _metadata_values(event) -> dict[str, Any]:
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def training_metrics(metadata: Mapping[str, Any]) -> dict[str, float]:
    """A checkpoint's own metrics: the `metrics` JSON entry of its materialization, else any numeric
    metadata entry named like a metric."""
    metrics = metadata.get("metrics")
    if isinstance(metrics, Mapping):
        return numeric_metrics(metrics)
    return numeric_metrics({k: v for k, v in metadata.items() if k not in ("path", "sha256")})


def leaderboard_metrics(conn, identifiers: list[str]) -> tuple[dict[str, float], frozenset[str]] | None:
    """(metrics, lower-is-better names) of a system in the `leaderboard` table, None when there is no
    leaderboard or no row for it. The leaderboard is long: one row per (system, emotion, metric) with
    `direction` +1 (higher is better), -1 (lower is better) or 0 (descriptive, not compared); the gate
    uses the emotion 'all' rows. A wide table (one row per model) is read by any text column naming
    one of `identifiers`."""
    tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "leaderboard" not in tables:
        return None
    frame = conn.execute("SELECT * FROM leaderboard").pl()
    idents = {str(i) for i in identifiers if i}
    if {"system", "metric", "value"} <= set(frame.columns):
        rows = frame.filter(pl.col("system").is_in(list(idents)))
        if "emotion" in rows.columns:
            rows = rows.filter(pl.col("emotion") == "all")
        if rows.height == 0:
            return None
        metrics, lower = {}, set()
        for row in rows.iter_rows(named=True):
            direction = row.get("direction", 1)
            if direction == 0 or row["value"] is None:
                continue
            metrics[row["metric"]] = float(row["value"])
            if direction is not None and direction < 0:
                lower.add(row["metric"])
        return metrics, frozenset(lower)
    text_cols = [c for c, t in frame.schema.items() if t == pl.String]
    for row in frame.iter_rows(named=True):
        if any(str(row[c]) in idents for c in text_cols if row[c] is not None):
            return numeric_metrics(row), frozenset()
    return None


def write_pointer(path: Path, pointer: dict) -> None:
    """Atomic: a reader sees the previous pointer or the new one, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(pointer, indent=2, sort_keys=True))
    os.replace(tmp, path)


def keep_promoted_copy(model_store, candidate: dict) -> tuple[Path, str]:
    """Copy the candidate's adapter folder to `promoted/<sha256[:16]>` and persist it (uploaded in the aws
    profile). `dpo_checkpoint` is overwritten by the next training, so the pointer must name a folder that
    only ever holds this model. The copy's sha256 must be the candidate's: a checkpoint that changed since
    it was evaluated is not promoted."""
    import shutil

    from empathy_dag.models import folder_written_aside, sha256_tree

    sha = str(candidate.get("sha256") or "")
    source = Path(str(candidate["path"]))
    if not source.is_dir():  # a run on another machine (aws profile): the published checkpoint
        source = model_store.fetch(source.name)
    name = f"promoted/{sha[:16]}"
    target = model_store.folder(name)
    if not target.is_dir() or sha256_tree(target) != sha:
        with folder_written_aside(target) as tmp:
            shutil.copytree(source, tmp)
            got = sha256_tree(tmp)
            if got != sha:
                raise ValueError(f"{source} has sha256 {got}, but the evaluated candidate was {sha}: it "
                                 "changed after evaluation; re-run evaluation before promoting")
    return target, model_store.persist(name)


def build_promotion_definitions(has_leaderboard: bool) -> tuple[list, list]:
    """(assets, asset_checks) of the gate; call only when `dpo_checkpoint` exists."""
    from empathy_dag.automation.tables import upsert
    from empathy_dag.resources import ModelStore
    from empathy_dag.warehouse.resource import Warehouse

    dpo_key = AssetKey("dpo_checkpoint")

    @asset_check(
        asset=dpo_key, blocking=True, name="dpo_checkpoint_no_regression",
        description="Blocks the run when the new checkpoint's training metrics regress beyond tolerance "
        "against the promoted model's.",
    )
    def dpo_checkpoint_no_regression(context: AssetCheckExecutionContext, config: PromotionConfig):
        candidate = _metadata_values(context.instance.get_latest_materialization_event(dpo_key))
        promoted_meta = _metadata_values(context.instance.get_latest_materialization_event(AssetKey("promoted_model")))
        promoted = promoted_meta.get("training_metrics") if promoted_meta else None
        cand_metrics = training_metrics(candidate)
        if promoted is not None and not cand_metrics:
            # Nothing to compare at training time: the evaluation gate (promoted_model) decides.
            return AssetCheckResult(passed=True, severity=AssetCheckSeverity.WARN,
                                    metadata={"note": "no training metrics recorded; promoted_model gates on evaluation"})
        passed, reasons = promotion_decision(cand_metrics, promoted, config.to_tolerances())
        return AssetCheckResult(
            passed=passed, severity=AssetCheckSeverity.ERROR,
            metadata={"reasons": MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
                      "candidate_metrics": MetadataValue.json(cand_metrics)},
        )

    deps = [dpo_key] + ([AssetKey("leaderboard")] if has_leaderboard else [])

    @asset(
        name="promoted_model", group_name="automation", deps=deps, kinds={"json"},
        description="Pointer (path, sha256, metrics) to the best checkpoint that passed the promotion "
        "gate; a rejected candidate is recorded but never replaces it.",
        metadata={"warehouse_tables": ["promotion_log"]},
    )
    def promoted_model(
        context: AssetExecutionContext, config: PromotionConfig, model_store: ModelStore, warehouse: Warehouse
    ) -> MaterializeResult:
        candidate = _metadata_values(context.instance.get_latest_materialization_event(dpo_key))
        if not candidate.get("path"):
            raise ValueError("dpo_checkpoint has no materialization with a `path`: nothing to promote")
        previous = _metadata_values(context.instance.get_latest_materialization_event(AssetKey("promoted_model")))
        pointer_path = model_store.folder("promoted_model") / "pointer.json"
        with warehouse.connect() as conn:
            cand_eval = leaderboard_metrics(conn, CANDIDATE_SYSTEMS + [candidate.get("sha256"), candidate.get("path")])
        tolerances = config.to_tolerances()
        if cand_eval is not None:
            cand_metrics, lower = cand_eval
            tolerances = replace(tolerances, lower_is_better=tolerances.lower_is_better | lower)
        else:
            cand_metrics = training_metrics(candidate)
        # The promoted model's evaluation metrics as recorded when it was promoted.
        prom_metrics = (previous.get("metrics") or {}) if previous.get("sha256") else None
        passed, reasons = promotion_decision(cand_metrics, prom_metrics, tolerances)
        if passed:
            kept, uri = keep_promoted_copy(model_store, candidate)
            pointer = {"path": str(kept), "uri": uri, "sha256": candidate.get("sha256"),
                       "candidate_path": str(candidate["path"]),
                       "metrics": cand_metrics, "training_metrics": training_metrics(candidate),
                       "promoted_at_run": context.run.run_id}
            write_pointer(pointer_path, pointer)
        else:
            pointer = {"path": previous.get("path"), "uri": previous.get("uri"), "sha256": previous.get("sha256"),
                       "metrics": previous.get("metrics") or {},
                       "training_metrics": previous.get("training_metrics") or {}}
        with warehouse.connect() as conn:
            upsert(conn, "promotion_log", [{
                "decided_at": datetime.now(UTC).replace(tzinfo=None), "run_id": context.run.run_id,
                "candidate_path": str(candidate["path"]), "candidate_sha256": candidate.get("sha256"),
                "previous_sha256": previous.get("sha256"), "promoted": passed, "reasons": reasons,
                "candidate_metrics": cand_metrics, "promoted_metrics": prom_metrics or {},
            }])
        context.log.info(("PROMOTED " if passed else "REJECTED ") + "; ".join(reasons))
        return MaterializeResult(metadata={
            "decision": "promoted" if passed else "rejected",
            "reasons": MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
            "candidate_sha256": str(candidate.get("sha256")),
            "path": MetadataValue.path(str(pointer["path"])) if pointer.get("path") else "none",
            "sha256": str(pointer.get("sha256") or ""),
            "uri": str(pointer.get("uri") or ""),
            "metrics": MetadataValue.json(pointer.get("metrics") or {}),
            "training_metrics": MetadataValue.json(pointer.get("training_metrics") or {}),
            "pointer_file": MetadataValue.path(str(pointer_path)),
        })

    return [promoted_model], [dpo_checkpoint_no_regression]
