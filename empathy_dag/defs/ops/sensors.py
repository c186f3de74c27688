"""Run history: one row per finished run (success, failure, cancel) in the warehouse table run_history,
with its trigger and cost tags, the assets and partitions it materialized and the root cause of a failure."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import (
    DagsterEventType,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunStatusSensorContext,
    run_status_sensor,
)

from empathy_dag.defs.warehouse.resource import Warehouse
from empathy_dag.warehouse.tables import upsert


def _step_error(event) -> str:
    """`step: root cause message` (the user's exception, not Dagster's wrapper around it)."""
    err = getattr(event.event_specific_data, "error", None)
    while err is not None and err.cause is not None:
        err = err.cause
    message = err.message.strip().splitlines()[0][:300] if err is not None and err.message else ""
    return f"{event.step_key}: {message}"


def run_history_row(instance, run, status: str) -> dict:
    record = instance.get_run_record_by_id(run.run_id)
    start = getattr(record, "start_time", None)
    end = getattr(record, "end_time", None)
    materializations = instance.get_records_for_run(
        run_id=run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=10_000
    ).records
    assets, partitions = set(), set()
    for rec in materializations:
        event = rec.event_log_entry.dagster_event
        if event is None:
            continue
        assets.add(event.asset_key.to_user_string())
        if event.partition:
            partitions.add(event.partition)
    error = None
    if status == "FAILURE":
        failures = instance.get_records_for_run(
            run_id=run.run_id, of_type=DagsterEventType.STEP_FAILURE, limit=5
        ).records
        error = "; ".join(_step_error(r.event_log_entry.dagster_event) for r in failures) or None

    def ts(v):
        return datetime.fromtimestamp(v, UTC).replace(tzinfo=None) if v else None

    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "status": status,
        "started_at": ts(start),
        "ended_at": ts(end),
        "duration_s": (end - start) if start and end else None,
        "assets": sorted(assets),
        "partitions": sorted(partitions),
        "n_materializations": len(materializations),
        "trigger": (run.tags or {}).get("trigger"),
        "tags": dict((run.tags or {}).items()),
        "error": error,
    }


def _build_run_history_sensor(status: DagsterRunStatus, name: str):
    @run_status_sensor(
        run_status=status,
        name=name,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=f"Writes one row per {status.value.lower()} run into the warehouse table run_history.",
    )
    def _sensor(context: RunStatusSensorContext, warehouse: Warehouse):
        row = run_history_row(context.instance, context.dagster_run, status.value)
        with warehouse.connect() as conn:
            upsert(conn, "run_history", [row])

    return _sensor


run_history_success_sensor = _build_run_history_sensor(DagsterRunStatus.SUCCESS, "run_history_success_sensor")
run_history_failure_sensor = _build_run_history_sensor(DagsterRunStatus.FAILURE, "run_history_failure_sensor")
run_history_canceled_sensor = _build_run_history_sensor(
    DagsterRunStatus.CANCELED, "run_history_canceled_sensor"
)
RUN_HISTORY_SENSORS = [run_history_success_sensor, run_history_failure_sensor, run_history_canceled_sensor]
