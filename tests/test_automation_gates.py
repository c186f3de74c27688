"""Promotion rule, promotion gate (blocking check + promoted_model), retraining trigger and run history,
against a real instance."""

import json
from pathlib import Path

import polars as pl
from dagster import (
    AssetKey,
    AssetMaterialization,
    Definitions,
    MaterializeResult,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    define_asset_job,
    instance_for_test,
    materialize,
)

from empathy_dag.defs.ops.sensors import run_history_failure_sensor, run_history_success_sensor
from empathy_dag.defs.promotion.assets import Tolerances, build_promotion_definitions, promotion_decision
from empathy_dag.defs.train.sensors import build_retraining_sensor
from empathy_dag.models import sha256_tree
from empathy_dag.settings import RETRAIN_NEW_PAIRS_TAG, TRIGGER_TAG, AutomationSettings
from empathy_dag.train.retraining import count_unseen_train_pairs, train_pairs_fingerprint
from empathy_dag.warehouse.tables import read_table

# ------------------------------------------------------------------ promotion_decision (pure)


def test_first_candidate_is_promoted_when_it_reports_required_metrics():
    assert promotion_decision({"bertscore_f1": 0.8}, None, Tolerances(required=("bertscore_f1",)))[0]
    passed, reasons = promotion_decision({}, None, Tolerances(required=("bertscore_f1",)))
    assert not passed and "required" in reasons[0]


def test_regression_beyond_tolerance_fails_and_within_tolerance_passes():
    promoted = {"bertscore_f1": 0.80, "eval_loss": 1.00}
    tol = Tolerances(default=0.02)
    assert promotion_decision({"bertscore_f1": 0.79, "eval_loss": 1.01}, promoted, tol)[0]
    passed, reasons = promotion_decision({"bertscore_f1": 0.75, "eval_loss": 1.0}, promoted, tol)
    assert not passed and any("bertscore_f1" in r and "REGRESSION" in r for r in reasons)
    # loss is lower-is-better: a higher loss is the regression
    passed, reasons = promotion_decision({"bertscore_f1": 0.80, "eval_loss": 1.2}, promoted, tol)
    assert not passed and any("eval_loss" in r and "REGRESSION" in r for r in reasons)
    # per-metric tolerance and explicit direction
    assert promotion_decision(
        {"toxicity_x": 0.5}, {"toxicity_x": 0.45}, Tolerances(per_metric={"toxicity_x": 0.1})
    )[0]
    assert not promotion_decision(
        {"empathy": 0.5}, {"empathy": 0.4}, Tolerances(lower_is_better=frozenset({"empathy"}))
    )[0]


def test_nothing_comparable_never_promotes_and_counts_are_not_metrics():
    passed, reasons = promotion_decision({"n_pairs": 10, "steps": 5}, {"bertscore_f1": 0.8})
    assert not passed and "no metric in common" in reasons[-1]
    passed, _ = promotion_decision({"acc": float("nan")}, {"acc": 0.5})
    assert not passed


# ------------------------------------------------------------------ gate wiring


def _adapter(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A stand-in adapter folder whose weights file differs per `name`, and its sha256."""
    folder = tmp_path / f"dpo-{name}"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(f"weights of {name}".encode())
    return folder, sha256_tree(folder)


def _fake_dpo(metrics: dict, name: str, tmp_path: Path):
    @asset(name="dpo_checkpoint")
    def dpo_checkpoint() -> MaterializeResult:
        folder, sha = _adapter(tmp_path, name)
        return MaterializeResult(
            metadata={"path": str(folder), "sha256": sha, "metrics": metrics, "n_train_pairs": 10}
        )

    return dpo_checkpoint


def _scorecard(resources, shift: float, candidate_sha: str, versus: str, scored_sha: str | None = None):
    """The evaluation of a candidate, as the scorecard writes it: per-item scores of the candidate
    ("dpo") and of `versus` on the same 84 items, the candidate `shift` better (or worse) than `versus`
    on every headline metric plus item noise, through the real paired tests."""
    import numpy as np

    from empathy_dag.defs.warehouse.resource import write_table
    from empathy_dag.evaluate import scorecard as sc

    rng = np.random.default_rng(int(candidate_sha[:8], 16))  # deterministic per candidate
    rows = []
    for k in range(84):
        difficulty = rng.normal(0.5, 0.15)
        for system, s in ((versus, 0.0), ("dpo", shift)):
            for metric, sign in (("bertscore_f1", 1), ("diff_epitome_er", -1), ("judge_general_empathy", 1)):
                rows.append(
                    {
                        "system": system,
                        "emotion": f"e{k % 28}",
                        "language": "en",
                        "item_id": f"i{k}",
                        "metric": metric,
                        "value": difficulty + sign * s + rng.normal(0, 0.05),
                    }
                )
    roles = {"promoted": "promoted"} if versus == "promoted" else {"baseline": versus}
    comparisons = sc.paired_comparisons(pl.DataFrame(rows), roles, sc.ScorecardSettings(n_resamples=500))
    systems = pl.DataFrame(
        {
            "system": [versus, "dpo"],
            "is_baseline": [versus == "base", False],
            "model_sha256": ["", scored_sha or candidate_sha],
        }
    )
    write_table(resources["warehouse"], "metric_comparisons", comparisons)
    write_table(resources["warehouse"], "evaluation_systems", systems)


def _gate_run(resources, instance, tmp_path, train_metrics, shift, name, versus, scored_sha=None):
    assets, checks = build_promotion_definitions(has_leaderboard=False)
    _scorecard(resources, shift, _adapter(tmp_path, name)[1], versus, scored_sha)
    return materialize(
        [_fake_dpo(train_metrics, name, tmp_path), *assets, *checks],
        instance=instance,
        resources={k: resources[k] for k in ("model_store", "warehouse")},
        raise_on_error=False,
    )


def _pointer(resources) -> dict:
    return json.loads((Path(resources["model_store"].root) / "promoted_model" / "pointer.json").read_text())


def _promoted_meta(instance) -> dict:
    ev = instance.get_latest_materialization_event(AssetKey("promoted_model"))
    return {k: v.value for k, v in ev.asset_materialization.metadata.items()}


def test_gate_promotes_on_evidence_and_never_a_regression_or_noise(resources, tmp_path):
    sha = {n: _adapter(tmp_path, n)[1] for n in "abcdef"}
    with instance_for_test() as instance:
        # 1. First model, confidently better than the baseline: promoted.
        r = _gate_run(resources, instance, tmp_path, {"reward_accuracy": 0.6}, 0.05, "a", versus="base")
        assert r.success
        assert (
            _pointer(resources)["sha256"] == sha["a"] and _promoted_meta(instance)["decision"] == "promoted"
        )
        assert _promoted_meta(instance)["versus"] == "base"
        # The pointer names a copy that the next training cannot overwrite, with the same weights.
        kept = Path(_pointer(resources)["path"])
        assert kept.parent.name == "promoted" and sha256_tree(kept) == sha["a"]
        assert {e["metric"] for e in _pointer(resources)["evidence"]} == {
            "bertscore_f1",
            "diff_epitome_er",
            "judge_general_empathy",
        }
        # the checkpoint's own page says how it compares (check metadata), and that it scored this one
        page = next(
            e for e in r.get_asset_check_evaluations() if e.check_name == "scorecard_vs_base_and_promoted"
        )
        assert page.passed and page.metadata["outcome_vs_base"].value == "promoted"
        assert (
            page.metadata["scored_this_checkpoint"].value is True
            and "| bertscore_f1 |" in page.metadata["vs_base"].value
        )

        # 2. Confidently better than the promoted model on the same items: promoted.
        r = _gate_run(resources, instance, tmp_path, {"reward_accuracy": 0.65}, 0.05, "b", versus="promoted")
        assert r.success and _pointer(resources)["sha256"] == sha["b"]

        # 3. Training metrics regress: the blocking check fails and promoted_model does not even run.
        r = _gate_run(resources, instance, tmp_path, {"reward_accuracy": 0.40}, 0.05, "c", versus="promoted")
        checks = {e.check_name: e.passed for e in r.get_asset_check_evaluations()}
        assert checks["dpo_checkpoint_no_regression"] is False
        assert "promoted_model" not in {
            e.asset_key.path[-1]
            for e in (ev.event_specific_data.materialization for ev in r.get_asset_materialization_events())
        }
        assert _pointer(resources)["sha256"] == sha["b"]

        # 4. A confident regression on evaluation: rejected, pointer unchanged.
        r = _gate_run(resources, instance, tmp_path, {"reward_accuracy": 0.66}, -0.05, "d", versus="promoted")
        assert r.success
        meta = _promoted_meta(instance)
        assert (
            meta["decision"] == "rejected" and meta["sha256"] == sha["b"] and "REGRESSION" in meta["reasons"]
        )
        assert _pointer(resources)["sha256"] == sha["b"]

        # 5. Different only by noise: inconclusive, kept out (not promoted as an improvement).
        r = _gate_run(resources, instance, tmp_path, {"reward_accuracy": 0.66}, 0.0, "e", versus="promoted")
        assert r.success and _promoted_meta(instance)["decision"] == "kept"
        assert _pointer(resources)["sha256"] == sha["b"]

        # 6. The scorecard scored another checkpoint: no evidence for this one, not promoted.
        r = _gate_run(
            resources,
            instance,
            tmp_path,
            {"reward_accuracy": 0.66},
            0.05,
            "f",
            versus="promoted",
            scored_sha="0" * 64,
        )
        assert r.success and _promoted_meta(instance)["decision"] == "no_evidence"
        assert _pointer(resources)["sha256"] == sha["b"]

        with resources["warehouse"].connect() as conn:
            log = read_table(conn, "promotion_log").sort("decided_at")
        assert log["promoted"].to_list() == [True, True, False, False, False]
        assert log["decision"].to_list() == ["promoted", "promoted", "rejected", "kept", "no_evidence"]
        evidence = json.loads(log["evidence"][2])
        assert all(
            {"n", "delta", "delta_ci_low", "delta_ci_high", "p_adjusted", "verdict"} <= set(e)
            for e in evidence
        )


# ------------------------------------------------------------------ retraining trigger


def _write_pairs(parquet_dir: Path, emotion: str, n_train: int, n_test: int = 2, start: int = 0):
    folder = parquet_dir / "preference_pairs"
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"{emotion}-{i}" for i in range(start, start + n_train + n_test)]
    pl.DataFrame({"pair_id": ids, "split": ["train"] * n_train + ["test"] * n_test}).write_parquet(
        folder / f"{emotion}.parquet"
    )
    return ids[:n_train]


def test_count_unseen_pairs_uses_fingerprint_and_count():
    ids = ["a", "b", "c"]
    assert count_unseen_train_pairs(ids, {}) == (3, train_pairs_fingerprint(ids))
    assert (
        count_unseen_train_pairs(
            ids, {"n_train_pairs": 3, "pairs_fingerprint": train_pairs_fingerprint(ids)}
        )[0]
        == 0
    )
    assert (
        count_unseen_train_pairs(ids + ["d", "e"], {"n_train_pairs": 3, "pairs_fingerprint": "old"})[0] == 2
    )
    assert count_unseen_train_pairs(["x", "y", "z"], {"n_train_pairs": 3, "pairs_fingerprint": "old"})[0] == 1


def test_retraining_sensor_fires_on_enough_unseen_pairs_once_per_data_version(resources):
    parquet = Path(resources["warehouse"].parquet_base_dir)
    job = define_asset_job("retrain_job_test", selection=["dpo_checkpoint"])

    @asset(name="dpo_checkpoint")
    def dpo_checkpoint():
        return MaterializeResult()

    sensor = build_retraining_sensor(AutomationSettings(retrain_min_new_pairs=4), job_name="retrain_job_test")
    defs = Definitions(assets=[dpo_checkpoint], jobs=[job], sensors=[sensor], resources=resources)

    def tick(instance):
        return sensor.evaluate_tick(
            build_sensor_context(instance=instance, resources=resources, definitions=defs)
        )

    with instance_for_test() as instance:
        assert tick(instance).skip_message == "no preference_pairs written yet"
        joy = _write_pairs(parquet, "joy", 3)
        anger = _write_pairs(parquet, "anger", 3)
        first = tick(instance).run_requests
        assert len(first) == 1 and first[0].tags[RETRAIN_NEW_PAIRS_TAG] == "6"
        assert first[0].tags[TRIGGER_TAG] == "new_training_pairs"
        assert first[0].run_key == f"retrain:{train_pairs_fingerprint(joy + anger)}"
        # Same data on the next tick: same run_key, so Dagster launches it once.
        assert tick(instance).run_requests[0].run_key == first[0].run_key

        # The checkpoint trained on these pairs records what it saw: nothing to do.
        instance.report_runless_asset_event(
            AssetMaterialization(
                "dpo_checkpoint",
                metadata={"n_train_pairs": 6, "pairs_fingerprint": train_pairs_fingerprint(joy + anger)},
            )
        )
        assert "0 new train pairs" in tick(instance).skip_message

        # 2 new pairs: below the threshold of 4.
        joy = _write_pairs(parquet, "joy", 5)
        assert "2 new train pairs" in tick(instance).skip_message
        # 4 new pairs: retrain, with the reason in the tags.
        joy = _write_pairs(parquet, "joy", 7)
        req = tick(instance).run_requests
        assert len(req) == 1 and req[0].tags[RETRAIN_NEW_PAIRS_TAG] == "4"
        assert req[0].run_key == f"retrain:{train_pairs_fingerprint(joy + anger)}" != first[0].run_key


# ------------------------------------------------------------------ run history


def test_run_history_records_successes_and_failures(resources):
    @asset
    def ok_asset():
        return MaterializeResult()

    @asset
    def failing_asset():
        raise RuntimeError("transient S3 hiccup")

    with instance_for_test() as instance:
        ok = materialize([ok_asset], instance=instance, tags={"trigger": "test", "team": "t"})
        bad = materialize([failing_asset], instance=instance, raise_on_error=False)
        for sensor, result, event in (
            (run_history_success_sensor, ok, ok.get_run_success_event()),
            (run_history_failure_sensor, bad, bad.get_run_failure_event()),
        ):
            ctx = build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=event,
                dagster_instance=instance,
                dagster_run=result.dagster_run,
                resources={"warehouse": resources["warehouse"]},
            )
            sensor(ctx)
            sensor(ctx)  # replayed: still one row
        with resources["warehouse"].connect() as conn:
            history = read_table(conn, "run_history")
    assert history.height == 2
    rows = {r["status"]: r for r in history.iter_rows(named=True)}
    assert json.loads(rows["SUCCESS"]["assets"]) == ["ok_asset"] and rows["SUCCESS"]["trigger"] == "test"
    assert json.loads(rows["SUCCESS"]["tags"])["team"] == "t"
    assert rows["SUCCESS"]["duration_s"] is not None and rows["SUCCESS"]["duration_s"] >= 0
    assert rows["FAILURE"]["assets"] == "[]" and "transient S3 hiccup" in rows["FAILURE"]["error"]
