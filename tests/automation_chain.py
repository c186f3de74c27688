"""Driver for the automation chain test (tests/test_end_to_end.py), run in a subprocess with
DAGSTER_HOME pointing at the demo's instance so that the definitions' resources are that instance's.

A landing file for one emotion → the landing sensor's run requests, executed → the retraining sensor's
request, executed (SFT + DPO + evaluation + promotion gate). Prints one JSON line with what happened."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, RunRequest, build_sensor_context


def _run_config(job, profile: str = "tiny") -> dict:
    from empathy_dag.demo import demo_run_config

    config = demo_run_config(profile)
    selected = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    op_names = {node.name for node in job.graph.node_defs} if hasattr(job.graph, "node_defs") else selected
    config["ops"] = {k: v for k, v in config["ops"].items() if k in op_names}
    if "evaluation" not in job.resource_defs:
        config.pop("resources", None)
    return config


def _execute(defs, request: RunRequest, instance, default_job: str, allow_gate_stop: bool = False):
    """Materializations of the requested run, and its asset-check evaluations. A run stopped by a failed
    blocking check (the promotion gate refusing a candidate) is an outcome, not an error, when allowed."""
    job = defs.resolve_job_def(request.job_name or default_job)
    tags = {**request.tags, "dagster/run_key": request.run_key or ""}
    result = job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=tags,
        asset_selection=request.asset_selection,
        run_config=_run_config(job),
        raise_on_error=False,
    )
    checks = [
        {"asset": c.asset_key.to_user_string(), "check": c.check_name, "passed": c.passed}
        for c in result.get_asset_check_evaluations()
    ]
    gate_stopped = any(not c["passed"] and c["check"] == "dpo_checkpoint_no_regression" for c in checks)
    if not result.success and not (allow_gate_stop and gate_stopped):
        raise SystemExit(f"run for {request.run_key} failed")
    mats = [
        (m.asset_key.to_user_string(), m.partition)
        for m in (e.event_specific_data.materialization for e in result.get_asset_materialization_events())
    ]
    return mats, checks


def main(landing_file: str) -> None:
    from empathy_dag.definitions import defs
    from empathy_dag.defs.ingest.jobs import LANDING_JOB_NAME
    from empathy_dag.defs.train.jobs import RETRAIN_JOB_NAME

    instance = DagsterInstance.get()
    landing = Path(defs.resources["corpus_sources"].landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / Path(landing_file).name
    target.write_bytes(Path(landing_file).read_bytes())
    # Dropped a minute ago: the sensor leaves files younger than settle_seconds for a later tick.
    past = time.time() - 60
    os.utime(target, (past, past))

    out: dict = {}
    sensor = defs.get_sensor_def("landing_zone_sensor")
    tick = sensor.evaluate_tick(
        build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
    )
    requests = tick.run_requests or []
    out["landing_requests"] = [
        {
            "run_key": r.run_key,
            "partition_key": r.partition_key,
            "range": [
                r.tags.get("dagster/asset_partition_range_start"),
                r.tags.get("dagster/asset_partition_range_end"),
            ],
        }
        for r in requests
    ]
    materialized = []
    for request in requests:
        materialized += _execute(defs, request, instance, LANDING_JOB_NAME)[0]
    out["landing_materialized"] = sorted({f"{a}[{p}]" for a, p in materialized})
    again = sensor.evaluate_tick(
        build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources, cursor=tick.cursor
        )
    )
    out["second_tick_requests"] = len(again.run_requests or [])

    retrain = defs.get_sensor_def("retraining_sensor")
    rtick = retrain.evaluate_tick(
        build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
    )
    rrequests = rtick.run_requests or []
    out["retrain_requests"] = [dict(r.tags) for r in rrequests]
    pointer = Path(defs.resources["model_store"].folder("promoted_model")) / "pointer.json"
    out["pointer_before"] = pointer.read_text() if pointer.is_file() else None
    with defs.resources["warehouse"].connect(read_only=True) as conn:
        out["decisions_before"] = conn.execute("select count(*) from promotion_log").fetchone()[0]
    if rrequests:
        mats, checks = _execute(defs, rrequests[0], instance, RETRAIN_JOB_NAME, allow_gate_stop=True)
        out["retrain_materialized"] = sorted({a for a, _ in mats})
        out["gate_checks"] = [c for c in checks if c["asset"] == "dpo_checkpoint"]
    out["pointer_after"] = pointer.read_text() if pointer.is_file() else None
    with defs.resources["warehouse"].connect(read_only=True) as conn:
        rows = conn.execute("select * from promotion_log order by 1").fetchall()
        columns = [d[0] for d in conn.description]
    out["promotion_log"] = [dict(zip(columns, map(str, r))) for r in rows]
    print("CHAIN " + json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("EMPATHY_DAG_RETRAIN_MIN_NEW_PAIRS", "1")
    main(sys.argv[1])
