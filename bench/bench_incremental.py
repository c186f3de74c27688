"""Incremental cost of the landing zone: a file for one emotion vs a full run.

Partition counts are exact for the whole landing job (every per-emotion data asset, generation and
pairs included), from the partition mappings of the asset graph. Wall time is measured on the model-free
part of the job (ingest_corpus + situations + dialogues) so the bench runs in a minute on a laptop:
full = one single-run backfill over the 28 emotions; incremental = the run the sensor requests for a
one-emotion file (same job, one partition).

    .venv/bin/python bench/bench_incremental.py [--emotion joy] [--repeats 3]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dagster import DagsterInstance, Definitions, build_sensor_context, materialize

from empathy_dag.defs.ingest.jobs import LANDING_JOB_NAME, landing_ingest_job
from empathy_dag.defs.ingest.sensors import affected_partitions, build_landing_sensor
from empathy_dag.defs.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from empathy_dag.settings import AutomationSettings
from empathy_dag.taxonomy import EMOTIONS
from tests.stages import project_asset_graph, stage_assets

TIMED_KEYS = ["corpus_rows", "quarantine", "ingest_file_log", "situations", "dialogues"]


def partition_counts(emotion: str) -> dict:
    per_asset = affected_partitions(project_asset_graph(), [emotion])
    full = {k: len(EMOTIONS) for k in per_asset}
    return {
        "assets": len(per_asset),
        "full": sum(full.values()),
        "incremental": sum(len(v) for v in per_asset.values()),
        "per_asset": {k: sorted(v) for k, v in per_asset.items()},
    }


def per_emotion_step_seconds(result) -> float:
    """Seconds spent in the per-emotion steps (situations, dialogues): the data work a partition costs,
    without the run's fixed overhead and the unpartitioned ingest_corpus step that every run has."""
    return (
        sum(
            e.event_specific_data.duration_ms
            for e in result.get_step_success_events()
            if e.step_key in ("situations", "dialogues")
        )
        / 1000
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emotion", default="joy")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    counts = partition_counts(args.emotion)
    fractions = {e: partition_counts(e) for e in EMOTIONS}
    worst = max(fractions.items(), key=lambda kv: kv[1]["incremental"])
    best = min(fractions.items(), key=lambda kv: kv[1]["incremental"])

    from empathy_dag.defs.profiles import local_resources

    root = Path(tempfile.mkdtemp(prefix="bench_incremental_"))
    resources = local_resources(root)
    assets = stage_assets()
    instance = DagsterInstance.ephemeral()
    full_times, inc_times, full_steps, inc_steps = [], [], [], []
    landing = Path(resources["corpus_sources"].landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    sensor = build_landing_sensor(AutomationSettings(settle_seconds=0))
    defs = Definitions(assets=assets, jobs=[landing_ingest_job], sensors=[sensor], resources=resources)
    job = defs.resolve_job_def(LANDING_JOB_NAME)
    cursor = None
    for i in range(args.repeats):
        t = time.perf_counter()
        r = materialize(
            assets,
            selection=TIMED_KEYS,
            resources=resources,
            instance=instance,
            tags={PARTITION_RANGE_START_TAG: EMOTIONS[0], PARTITION_RANGE_END_TAG: EMOTIONS[-1]},
        )
        assert r.success
        full_times.append(time.perf_counter() - t)
        full_steps.append(per_emotion_step_seconds(r))

        (landing / f"new_{i}.jsonl").write_text(
            json.dumps(
                {
                    "emotion": args.emotion,
                    "situation": f"Bench situation number {i} about a happy day at the park.",
                }
            )
            + "\n"
        )
        tick = sensor.evaluate_tick(
            build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
        )
        cursor = tick.cursor
        main_req = [q for q in tick.run_requests if not q.asset_selection]
        assert [q.partition_key for q in main_req] == [args.emotion], main_req
        t = time.perf_counter()
        res = job.execute_in_process(
            instance=instance,
            partition_key=args.emotion,
            tags=main_req[0].tags,
            asset_selection=[
                k for k in job.asset_layer.executable_asset_keys if k.to_user_string() in TIMED_KEYS
            ],
        )
        assert res.success
        inc_times.append(time.perf_counter() - t)
        inc_steps.append(per_emotion_step_seconds(res))
        written = {
            (
                e.event_specific_data.materialization.asset_key.to_user_string(),
                e.event_specific_data.materialization.partition,
            )
            for e in res.get_asset_materialization_events()
        }
        assert {p for k, p in written if k == "situations"} == {args.emotion}

    out = {
        "emotion": args.emotion,
        "landing_job_partitioned_assets": counts["assets"],
        "partitions_full": counts["full"],
        "partitions_incremental": counts["incremental"],
        "partition_fraction": round(counts["incremental"] / counts["full"], 4),
        "one_over_28": round(1 / 28, 4),
        "per_asset_incremental": counts["per_asset"],
        "best_emotion": [best[0], best[1]["incremental"]],
        "worst_emotion": [worst[0], worst[1]["incremental"]],
        "timed_assets": TIMED_KEYS,
        "wall_full_s_median": round(statistics.median(full_times), 2),
        "wall_incremental_s_median": round(statistics.median(inc_times), 2),
        "wall_fraction": round(statistics.median(inc_times) / statistics.median(full_times), 3),
        "per_emotion_steps_full_s_median": round(statistics.median(full_steps), 3),
        "per_emotion_steps_incremental_s_median": round(statistics.median(inc_steps), 3),
        "per_emotion_steps_fraction": round(statistics.median(inc_steps) / statistics.median(full_steps), 3),
        "repeats": args.repeats,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
