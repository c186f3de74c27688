"""Where the time of a `main_job` run goes: one row per step, from the run's own event log.

    DAGSTER_HOME=/path/to/instance .venv/bin/python bench/bench_demo_steps.py [--run-id ID] [--json out.json]

Reads the last `main_job` run of the instance in $DAGSTER_HOME (or the run given), takes each step's
STEP_START and its STEP_SUCCESS / STEP_FAILURE / STEP_SKIPPED event timestamps, and prints a markdown
table (step, seconds, share of the run, status) sorted by time, then the run's wall time from the run
record (start to end) and the time no step was running (job start-up, between steps, job teardown).
It runs no model: it reads what a run already measured, so it can be run on any instance afterwards.
The CPU (lscpu model and flags) and the load average *now* are printed with it; the load average during
the run has to be recorded by whoever ran it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _hardware import cpu_info

JOB = "main_job"
END_EVENTS = {"STEP_SUCCESS": "ok", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}


def last_run(instance, job_name: str = JOB):
    from dagster import RunsFilter

    runs = instance.get_run_records(filters=RunsFilter(job_name=job_name), limit=1)
    if not runs:
        raise SystemExit(f"no {job_name} run in {instance.root_directory}")
    return runs[0]


def step_times(instance, run_id: str) -> list[dict]:
    """[{step, seconds, status, start, end}] from the run's STEP_START and step-end events."""
    starts: dict[str, float] = {}
    rows: dict[str, dict] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        kind = event.event_type_value
        if kind == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif kind in END_EVENTS:
            start = starts.get(event.step_key, entry.timestamp)
            rows[event.step_key] = {"step": event.step_key, "start": start, "end": entry.timestamp,
                                    "seconds": entry.timestamp - start, "status": END_EVENTS[kind]}
    for step, start in starts.items():  # started, never ended (a killed run)
        rows.setdefault(step, {"step": step, "start": start, "end": None, "seconds": None, "status": "unfinished"})
    return sorted(rows.values(), key=lambda r: -(r["seconds"] or 0))


def busy_seconds(rows: list[dict]) -> float:
    """Wall time during which at least one step was running (steps of one in-process run may overlap)."""
    spans = sorted((r["start"], r["end"]) for r in rows if r["end"] is not None)
    total, cur_start, cur_end = 0.0, None, None
    for s, e in spans:
        if cur_end is None or s > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def markdown(rows: list[dict], total: float | None, status: str) -> str:
    lines = ["| step | seconds | share | status |", "|---|---:|---:|---|"]
    for r in rows:
        secs = r["seconds"]
        share = f"{100 * secs / total:.1f}%" if secs is not None and total else "-"
        lines.append(f"| {r['step']} | {secs:.1f} | {share} | {r['status']} |" if secs is not None
                     else f"| {r['step']} | - | - | {r['status']} |")
    busy = busy_seconds(rows)
    if total:
        lines.append(f"| (no step running: start-up, between steps, teardown) | {total - busy:.1f} | "
                     f"{100 * (total - busy) / total:.1f}% | |")
        lines.append(f"| **main_job total (run record)** | **{total:.1f}** | 100% | {status} |")
    return "\n".join(lines)


def main() -> None:
    from dagster import DagsterInstance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", default=None, help="default: the last main_job run of $DAGSTER_HOME")
    parser.add_argument("--json", default=None, help="also write the rows and the run's totals here")
    args = parser.parse_args()
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("set DAGSTER_HOME to the instance the demo wrote to")
    instance = DagsterInstance.get()
    if args.run_id:
        record = instance.get_run_record_by_id(args.run_id)
        if record is None:
            raise SystemExit(f"no run {args.run_id} in {instance.root_directory}")
    else:
        record = last_run(instance)
    run = record.dagster_run
    rows = step_times(instance, run.run_id)
    total = (record.end_time - record.start_time) if record.start_time and record.end_time else None
    hw = cpu_info()
    print(f"run {run.run_id} ({run.job_name}, {run.status.value}), {len(rows)} steps; "
          f"CPU {hw['cpu']} ({hw['cores']} cores; flags {', '.join(hw['flags'])}); "
          f"load average now {hw['load_average']}")
    print()
    print(markdown(rows, total, run.status.value))
    if args.json:
        Path(args.json).write_text(json.dumps({"run_id": run.run_id, "status": run.status.value, "total_s": total,
                                               "busy_s": busy_seconds(rows), "hardware": hw, "steps": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
