"""Where the time of a `main_job` run goes: one row per step, from the run's own event log.

    DAGSTER_HOME=/path/to/instance .venv/bin/python bench/bench_demo_steps.py [--run-id ID] [--json out.json]

Reads the last `main_job` run of the instance in $DAGSTER_HOME (or the run given), takes each step's
STEP_START and its STEP_SUCCESS / STEP_FAILURE / STEP_SKIPPED event timestamps, and prints a markdown
table (step, seconds, share of the run, status) sorted by time, then the run's wall time from the run
record (start to end) and the time no step was running (job start-up, between steps, job teardown).
It runs no model: it reads what a run already measured, so it can be run on any instance afterwards.
The CPU (lscpu model and flags) and the load average *now* are printed with it. The load average during
the run has to be recorded by whoever ran it: `--load-log FILE` reads lines of `HH:MM:SS <1-min load> ...`
(UTC, e.g. `echo "$(date -u +%T) $(cat /proc/loadavg)"` every 30 s) and adds each step's mean 1-min load."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datetime import UTC

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
            rows[event.step_key] = {
                "step": event.step_key,
                "start": start,
                "end": entry.timestamp,
                "seconds": entry.timestamp - start,
                "status": END_EVENTS[kind],
            }
    for step, start in starts.items():  # started, never ended (a killed run)
        rows.setdefault(
            step, {"step": step, "start": start, "end": None, "seconds": None, "status": "unfinished"}
        )
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


def read_load_log(path: Path, day_of: float) -> list[tuple[float, float]]:
    """(unix time, 1-min load average) from `HH:MM:SS load1 ...` lines, dated on the day of `day_of` (UTC)."""
    from datetime import datetime

    day = datetime.fromtimestamp(day_of, tz=UTC).date()
    samples = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        clock = datetime.strptime(parts[0], "%H:%M:%S").time()
        stamp = datetime.combine(day, clock, tzinfo=UTC).timestamp()
        samples.append((stamp, float(parts[1])))
    return samples


def mean_load(samples: list[tuple[float, float]], start: float, end: float | None) -> float | None:
    """Mean of the samples taken while the step ran; the nearest sample for a step shorter than the interval."""
    if not samples:
        return None
    end = end if end is not None else start
    inside = [v for t, v in samples if start <= t <= end]
    if inside:
        return sum(inside) / len(inside)
    return min(samples, key=lambda s: abs(s[0] - (start + end) / 2))[1]


def markdown(rows: list[dict], total: float | None, status: str) -> str:
    with_load = any("load" in r for r in rows)
    lines = [
        "| step | seconds | share | status |" + (" mean 1-min load |" if with_load else ""),
        "|---|---:|---:|---|" + ("---:|" if with_load else ""),
    ]
    for r in rows:
        secs = r["seconds"]
        share = f"{100 * secs / total:.1f}%" if secs is not None and total else "-"
        load = (f" {r['load']:.1f} |" if r.get("load") is not None else " - |") if with_load else ""
        lines.append(
            f"| {r['step']} | {secs:.1f} | {share} | {r['status']} |{load}"
            if secs is not None
            else f"| {r['step']} | - | - | {r['status']} |{load}"
        )
    busy = busy_seconds(rows)
    if total:
        lines.append(
            f"| (no step running: start-up, between steps, teardown) | {total - busy:.1f} | "
            f"{100 * (total - busy) / total:.1f}% | |"
        )
        lines.append(f"| **main_job total (run record)** | **{total:.1f}** | 100% | {status} |")
    return "\n".join(lines)


def main() -> None:
    from dagster import DagsterInstance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", default=None, help="default: the last main_job run of $DAGSTER_HOME")
    parser.add_argument("--json", default=None, help="also write the rows and the run's totals here")
    parser.add_argument("--load-log", default=None, help="HH:MM:SS <1-min load> lines sampled during the run")
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
    run_load = None
    if args.load_log and record.start_time:
        samples = read_load_log(Path(args.load_log), record.start_time)
        for r in rows:
            r["load"] = mean_load(samples, r["start"], r["end"])
        run_load = mean_load(samples, record.start_time, record.end_time)
    hw = cpu_info()
    print(
        f"run {run.run_id} ({run.job_name}, {run.status.value}), {len(rows)} steps; "
        f"CPU {hw['cpu']} ({hw['cores']} cores; flags {', '.join(hw['flags'])}); "
        f"load average now {hw['load_average']}"
        + (f"; mean 1-min load during the run {run_load:.1f}" if run_load is not None else "")
    )
    print()
    print(markdown(rows, total, run.status.value))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "run_id": run.run_id,
                    "status": run.status.value,
                    "total_s": total,
                    "busy_s": busy_seconds(rows),
                    "hardware": hw,
                    "run_mean_load": run_load,
                    "steps": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
