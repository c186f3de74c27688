"""The promotion gate: a new DPO checkpoint replaces the promoted model only on evidence.

1. `dpo_checkpoint_no_regression`, a blocking asset check on `dpo_checkpoint`, is a cheap sanity check
   of the metrics the training step records (metadata `metrics`, e.g. DPO reward accuracy and eval
   loss) against the promoted model's (`promotion_decision`, absolute tolerances). A failure stops the
   run before evaluation: nothing downstream sees the checkpoint.
2. `promoted_model` (downstream of the leaderboard) decides on the scorecard's paired tests
   (`empathy_dag.evaluate.scorecard.gate_decision` over `metric_comparisons`): the candidate ("dpo") is
   compared with the promoted model on the same evaluation items (with the baseline before the first
   promotion). It is promoted only when no headline metric (`headline_metrics`: diff-Epitome ER/IP/EX,
   BERTScore F1, judge empathy) is a confident regression and at least `min_improved_metrics` are
   confidently better; a candidate better only by noise is kept out ("kept"), a regression is
   "rejected". The numbers (deltas, intervals, p, n) go to metadata and `promotion_log`; the pointer
   file moves only on "promoted".
3. `candidate_vs_base_headline`, a non-blocking check on `leaderboard`, reports the candidate against
   the baseline on the headline metrics, whatever the gate decided.

For the training-metric check, metric names are not hard-coded: every numeric metric both sides have
is compared, higher-is-better unless its name says otherwise (loss, perplexity, toxicity, error,
latency, distance) or the config lists it in `lower_is_better`."""

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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

from empathy_dag.defs.warehouse.resource import Warehouse
from empathy_dag.evaluate.scorecard import DEFAULT_HEADLINE_METRICS, GateDecision, gate_decision
from empathy_dag.models import folder_written_aside, sha256_tree
from empathy_dag.resources import ModelStore
from empathy_dag.warehouse.tables import upsert

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
    names = list(tolerances.metrics or sorted(set(cand) & set(prom)))
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
    headline_metrics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HEADLINE_METRICS),
        description="The evaluation metrics the gate decides on.",
    )
    min_improved_metrics: int = Field(
        default=1,
        description="Headline metrics that must be confidently better "
        "(0 = promote whenever there is no confident regression).",
    )
    candidate_system: str = Field(default="dpo", description="The leaderboard system that is the candidate.")
    # The training-metric sanity check (dpo_checkpoint_no_regression):
    default_tolerance: float = Field(default=0.01, description="Allowed absolute drop per training metric.")
    tolerances: dict[str, float] = Field(default_factory=dict, description="Per-metric allowed drop.")
    lower_is_better: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list, description="Compare only these (empty = all common).")
    required_metrics: list[str] = Field(default_factory=list)

    def to_tolerances(self) -> Tolerances:
        return Tolerances(
            self.default_tolerance,
            dict(self.tolerances),
            frozenset(self.lower_is_better),
            tuple(self.metrics),
            tuple(self.required_metrics),
        )


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


def read_scorecard(conn) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(metric_comparisons, evaluation_systems) from the warehouse; None for a table not written yet."""
    tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    read = lambda t: conn.execute(f"SELECT * FROM {t}").pl() if t in tables else None
    return read("metric_comparisons"), read("evaluation_systems")


def _baseline(systems: pl.DataFrame | None) -> str | None:
    if systems is None or "is_baseline" not in systems.columns:
        return None
    return next(iter(systems.filter(pl.col("is_baseline"))["system"].to_list()), None)


def evaluation_gate(
    comparisons: pl.DataFrame | None,
    systems: pl.DataFrame | None,
    candidate: Mapping[str, Any],
    previous: Mapping[str, Any],
    config: "PromotionConfig",
) -> tuple[GateDecision, str | None]:
    """(decision, the system compared with). The candidate is compared with the promoted model when one
    exists (it must have been scored on the same items: the evaluation adds it as system "promoted"),
    with the baseline before the first promotion. Evidence that does not belong to this candidate (the
    evaluation scored another checkpoint) is no evidence."""
    if comparisons is None or systems is None or not comparisons.height:
        return GateDecision(
            False,
            "no_evidence",
            [("no scorecard (metric_comparisons): evaluate the candidate before the gate can decide")],
            [],
        ), None
    cand = systems.filter(pl.col("system") == config.candidate_system)
    if not cand.height:
        return GateDecision(
            False, "no_evidence", [f"{config.candidate_system!r} was not evaluated"], []
        ), None
    scored_sha = cand["model_sha256"][0] if "model_sha256" in cand.columns else None
    if scored_sha and candidate.get("sha256") and scored_sha != candidate.get("sha256"):
        return GateDecision(
            False,
            "no_evidence",
            [
                (
                    f"the scorecard scored {config.candidate_system} = {str(scored_sha)[:12]}, not the candidate "
                    f"{str(candidate.get('sha256'))[:12]}: re-run the evaluation"
                )
            ],
            [],
        ), None
    if previous.get("sha256"):
        versus = "promoted"
        if not comparisons.filter(
            (pl.col("system") == config.candidate_system) & (pl.col("versus") == versus)
        ).height:
            return GateDecision(
                False,
                "no_evidence",
                [
                    (
                        "a model is promoted but was not scored on the same items (evaluation.compare_with_promoted): "
                        "cannot show the candidate is not a regression"
                    )
                ],
                [],
            ), versus
    else:
        versus = _baseline(systems)
        if versus is None:
            return GateDecision(False, "no_evidence", ["no baseline system in the scorecard"], []), None
    decision = gate_decision(
        comparisons, config.candidate_system, versus, config.headline_metrics, config.min_improved_metrics
    )
    return decision, versus


CHECKPOINT_SYSTEMS = {"sft_checkpoint": "sft", "dpo_checkpoint": "dpo"}
CHECKPOINT_SCORECARD_CHECK = "scorecard_vs_base_and_promoted"


def checkpoint_scorecard_checks() -> list:
    """On each checkpoint's own page, "is it better?": its paired comparison with the baseline and with
    the promoted model on the headline metrics (from metric_comparisons, after the evaluation ran).
    Fails (warning) on a confident regression against the baseline; the rows are its metadata."""
    return [
        _checkpoint_scorecard_check(asset_name, system) for asset_name, system in CHECKPOINT_SYSTEMS.items()
    ]


def _checkpoint_scorecard_check(asset_name: str, system: str):
    @asset_check(
        asset=AssetKey(asset_name),
        name=CHECKPOINT_SCORECARD_CHECK,
        blocking=False,
        additional_deps=[AssetKey("metric_comparisons")],
        description=f"The scorecard's paired tests of {system!r} against the baseline and the promoted "
        "model on the headline metrics; warns on a confident regression against the baseline.",
    )
    def _check(context: AssetCheckExecutionContext, config: PromotionConfig, warehouse: Warehouse):
        with warehouse.connect() as conn:
            comparisons, systems = read_scorecard(conn)
        if comparisons is None or systems is None:
            return AssetCheckResult(
                passed=True,
                severity=AssetCheckSeverity.WARN,
                metadata={"note": "no scorecard yet: materialize metric_comparisons"},
            )
        latest = _metadata_values(context.instance.get_latest_materialization_event(AssetKey(asset_name)))
        scored = systems.filter(pl.col("system") == system)
        scored_sha = scored["model_sha256"][0] if scored.height and "model_sha256" in scored.columns else None
        metadata = {
            "system": system,
            "scored_sha256": str(scored_sha or ""),
            "checkpoint_sha256": str(latest.get("sha256") or ""),
            "scored_this_checkpoint": bool(scored_sha) and scored_sha == latest.get("sha256"),
        }
        passed = True
        for versus in [v for v in (_baseline(systems), "promoted") if v]:
            decision = gate_decision(
                comparisons, system, versus, config.headline_metrics, config.min_improved_metrics
            )
            if not decision.compared:
                continue
            metadata[f"vs_{versus}"] = MetadataValue.md(evidence_markdown(decision.compared))
            metadata[f"outcome_vs_{versus}"] = decision.decision
            if versus != "promoted" and decision.decision == "rejected":
                passed = False
        return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.WARN, metadata=metadata)

    return _check


def evidence_markdown(compared: list[dict]) -> str:
    if not compared:
        return "(no paired comparison)"
    lines = [
        "| metric | n | candidate | versus | delta [95% CI] | p (BH) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in compared:
        ci = (
            f"[{r['delta_ci_low']:+.4g}, {r['delta_ci_high']:+.4g}]"
            if r.get("delta_ci_low") is not None
            else "-"
        )
        p = f"{r['p_adjusted']:.3g}" if r.get("p_adjusted") is not None else "-"
        cand = f"{r['value']:.4g}" if r.get("value") is not None else "-"
        vs = f"{r['versus_value']:.4g}" if r.get("versus_value") is not None else "-"
        lines.append(
            f"| {r['metric']} | {r['n']} | {cand} | {vs} | {r['delta']:+.4g} {ci} | {p} | "
            f"{r['verdict']}{' (regression)' if r.get('regression') else ''} |"
        )
    return "\n".join(lines)


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
                raise ValueError(
                    f"{source} has sha256 {got}, but the evaluated candidate was {sha}: it "
                    "changed after evaluation; re-run evaluation before promoting"
                )
    return target, model_store.persist(name)


def build_promotion_definitions(has_leaderboard: bool) -> tuple[list, list]:
    """(assets, asset_checks) of the gate; call only when `dpo_checkpoint` exists."""

    dpo_key = AssetKey("dpo_checkpoint")

    @asset_check(
        asset=dpo_key,
        blocking=True,
        name="dpo_checkpoint_no_regression",
        description="Blocks the run when the new checkpoint's training metrics regress beyond tolerance "
        "against the promoted model's.",
    )
    def dpo_checkpoint_no_regression(context: AssetCheckExecutionContext, config: PromotionConfig):
        candidate = _metadata_values(context.instance.get_latest_materialization_event(dpo_key))
        promoted_meta = _metadata_values(
            context.instance.get_latest_materialization_event(AssetKey("promoted_model"))
        )
        promoted = promoted_meta.get("training_metrics") if promoted_meta else None
        cand_metrics = training_metrics(candidate)
        if promoted is not None and not cand_metrics:
            # Nothing to compare at training time: the evaluation gate (promoted_model) decides.
            return AssetCheckResult(
                passed=True,
                severity=AssetCheckSeverity.WARN,
                metadata={"note": "no training metrics recorded; promoted_model gates on evaluation"},
            )
        passed, reasons = promotion_decision(cand_metrics, promoted, config.to_tolerances())
        return AssetCheckResult(
            passed=passed,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "reasons": MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
                "candidate_metrics": MetadataValue.json(cand_metrics),
            },
        )

    deps = [dpo_key] + ([AssetKey("leaderboard")] if has_leaderboard else [])

    @asset(
        name="promoted_model",
        group_name="automation",
        deps=deps,
        kinds={"json"},
        description="Pointer (path, sha256, evidence) to the checkpoint that last passed the evaluation gate: "
        "promoted only when the scorecard's paired tests show no confident regression on a headline metric "
        "and a confident gain on at least one; every decision is recorded in promotion_log.",
        metadata={"warehouse_tables": ["promotion_log"]},
    )
    def promoted_model(
        context: AssetExecutionContext, config: PromotionConfig, model_store: ModelStore, warehouse: Warehouse
    ) -> MaterializeResult:
        candidate = _metadata_values(context.instance.get_latest_materialization_event(dpo_key))
        if not candidate.get("path"):
            raise ValueError("dpo_checkpoint has no materialization with a `path`: nothing to promote")
        previous = _metadata_values(
            context.instance.get_latest_materialization_event(AssetKey("promoted_model"))
        )
        pointer_path = model_store.folder("promoted_model") / "pointer.json"
        with warehouse.connect() as conn:
            comparisons, systems = read_scorecard(conn)
        decision, versus = evaluation_gate(comparisons, systems, candidate, previous, config)
        passed = decision.promote
        if passed:
            kept, uri = keep_promoted_copy(model_store, candidate)
            pointer = {
                "path": str(kept),
                "uri": uri,
                "sha256": candidate.get("sha256"),
                "candidate_path": str(candidate["path"]),
                "evidence": decision.compared,
                "training_metrics": training_metrics(candidate),
                "promoted_at_run": context.run.run_id,
            }
            write_pointer(pointer_path, pointer)
        else:
            pointer = {
                "path": previous.get("path"),
                "uri": previous.get("uri"),
                "sha256": previous.get("sha256"),
                "evidence": previous.get("evidence") or [],
                "training_metrics": previous.get("training_metrics") or {},
            }
        cand_values = {r["metric"]: r["value"] for r in decision.compared}
        versus_values = {r["metric"]: r["versus_value"] for r in decision.compared}
        with warehouse.connect() as conn:
            upsert(
                conn,
                "promotion_log",
                [
                    {
                        "decided_at": datetime.now(UTC).replace(tzinfo=None),
                        "run_id": context.run.run_id,
                        "candidate_path": str(candidate["path"]),
                        "candidate_sha256": candidate.get("sha256"),
                        "previous_sha256": previous.get("sha256"),
                        "promoted": passed,
                        "reasons": decision.reasons,
                        "candidate_metrics": cand_values,
                        "promoted_metrics": versus_values,
                        "decision": decision.decision,
                        "versus": versus,
                        "evidence": decision.compared,
                    }
                ],
            )
        context.log.info(f"{decision.decision.upper()} (vs {versus}): " + "; ".join(decision.reasons))
        return MaterializeResult(
            metadata={
                "decision": decision.decision,
                "versus": versus or "none",
                "reasons": MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
                "evidence": MetadataValue.md(evidence_markdown(decision.compared)),
                "candidate_sha256": str(candidate.get("sha256")),
                "path": MetadataValue.path(str(pointer["path"])) if pointer.get("path") else "none",
                "sha256": str(pointer.get("sha256") or ""),
                "uri": str(pointer.get("uri") or ""),
                "training_metrics": MetadataValue.json(pointer.get("training_metrics") or {}),
                "pointer_file": MetadataValue.path(str(pointer_path)),
            }
        )

    checks = [dpo_checkpoint_no_regression, *checkpoint_scorecard_checks()]
    if has_leaderboard:

        @asset_check(
            asset=AssetKey("leaderboard"),
            name="candidate_vs_base_headline",
            blocking=False,
            description="The candidate against the baseline on the headline metrics (paired tests over all "
            "emotions): fails on a confident regression, warns when nothing is confidently better.",
        )
        def candidate_vs_base_headline(
            context: AssetCheckExecutionContext, config: PromotionConfig, warehouse: Warehouse
        ):
            with warehouse.connect() as conn:
                comparisons, systems = read_scorecard(conn)
            baseline = _baseline(systems)
            if comparisons is None or baseline is None:
                return AssetCheckResult(
                    passed=False,
                    severity=AssetCheckSeverity.WARN,
                    metadata={"note": "no scorecard yet: materialize metric_comparisons"},
                )
            decision = gate_decision(
                comparisons,
                config.candidate_system,
                baseline,
                config.headline_metrics,
                config.min_improved_metrics,
            )
            regression = decision.decision == "rejected"
            return AssetCheckResult(
                passed=decision.promote,
                severity=AssetCheckSeverity.ERROR if regression else AssetCheckSeverity.WARN,
                metadata={
                    "candidate": config.candidate_system,
                    "baseline": baseline,
                    "outcome": decision.decision,
                    "reasons": MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
                    "evidence": MetadataValue.md(evidence_markdown(decision.compared)),
                },
            )

        checks.append(candidate_vs_base_headline)

    return [promoted_model], checks
