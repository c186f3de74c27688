"""A plain-data picture of the project's `Definitions`: what a refactor of the code layout must not change.

Asset keys with group, kinds, owners, partitions, upstream keys, code version and automation condition;
asset checks (blocking or not); each job's selected assets; sensors; schedules; resource keys. Written as
sorted JSON so a diff of the snapshot file reads as a diff of the pipeline.

    python -m tests.definitions_snapshot --write   # after an intended change to the definitions
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _partitions(partitions_def) -> dict | None:
    if partitions_def is None:
        return None
    picture = {"type": type(partitions_def).__name__}
    name = getattr(partitions_def, "name", None)  # DynamicPartitionsDefinition
    if name:
        picture["name"] = name
    else:
        keys = partitions_def.get_partition_keys()
        picture["count"], picture["first"], picture["last"] = len(keys), keys[0], keys[-1]
    return picture


def _condition(condition) -> str | None:
    return None if condition is None else condition.get_label() or type(condition).__name__


def definitions_snapshot(defs) -> dict:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "partitions": _partitions(node.partitions_def),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "code_version": node.code_version,
            "automation_condition": _condition(node.automation_condition),
            "executable": node.is_executable,
        }
    checks = {}
    for check_key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(check_key)
        checks[f"{check_key.asset_key.to_user_string()}:{check_key.name}"] = {"blocking": spec.blocking}
    jobs = {
        job.name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
        for job in repo.get_all_jobs()
        if not job.name.startswith("__")
    }
    sensors = {
        s.name: {
            "type": s.sensor_type.value,
            "targets": sorted(str(t.resolvable_to_job) for t in s.targets),
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
        }
        for s in sorted(repo.sensor_defs, key=lambda s: s.name)
    }
    schedules = {
        s.name: {
            "cron": s.cron_schedule,
            "job": s.job_name,
            "timezone": s.execution_timezone,
            "default_status": s.default_status.value,
        }
        for s in sorted(repo.schedule_defs, key=lambda s: s.name)
    }
    return {
        "assets": assets,
        "asset_checks": checks,
        "jobs": jobs,
        "sensors": sensors,
        "schedules": schedules,
        "resources": sorted(defs.resources or {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {SNAPSHOT.name}")
    args = parser.parse_args()
    from empathy_dag.definitions import defs

    text = json.dumps(definitions_snapshot(defs), indent=1, sort_keys=True) + "\n"
    if args.write:
        SNAPSHOT.write_text(text)
        print(f"wrote {SNAPSHOT}")
    else:
        print(text)


if __name__ == "__main__":
    main()
