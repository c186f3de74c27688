"""Scale-out on one machine: the per-emotion ingest assets (situations, dialogues) over all 28 emotion
partitions as ONE run (BackfillPolicy.single_run(), a partition-range run as the demo and the daemon's
backfills launch it) versus 28 runs of one partition each, sequentially and two at a time (what the
daemon does with max_concurrent_runs: 2 from resources/dagster.yaml). Then the same ingest pipeline in
both profiles: local disk vs the aws profile against an S3 endpoint on loopback (moto_server).

Every run goes through a real on-disk Dagster instance (SQLite under a temp DAGSTER_HOME), so run
bookkeeping is counted as it is in `dagster dev`. Prints a Markdown table (BENCHMARKS.md "Scale-out")."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dagster import DagsterInstance, materialize
from dagster._core.instance.ref import InstanceRef

from empathy_dag.defs.ingest.assets import dialogues, emotion_taxonomy, ingest_corpus, situations
from empathy_dag.defs.profiles import local_resources
from empathy_dag.taxonomy import EMOTIONS

ASSETS = [emotion_taxonomy, ingest_corpus, situations, dialogues]
RANGE_ALL = {
    "dagster/asset_partition_range_start": EMOTIONS[0],
    "dagster/asset_partition_range_end": EMOTIONS[-1],
}


def _instance(home: Path) -> DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def _one_partition(args: tuple[str, str, str]) -> float:
    home, data, emotion = args
    instance = _instance(Path(home))
    start = time.perf_counter()
    result = materialize(
        ASSETS,
        selection=[situations, dialogues],
        resources=local_resources(Path(data)),
        instance=instance,
        partition_key=emotion,
    )
    assert result.success
    return time.perf_counter() - start


def bench_backfill(work: Path) -> dict[str, float]:
    home, data = work / "home", work / "data"
    data.mkdir(parents=True)
    instance = _instance(home)
    assert materialize(
        [emotion_taxonomy, ingest_corpus], resources=local_resources(data), instance=instance
    ).success
    out = {}

    start = time.perf_counter()
    result = materialize(
        ASSETS,
        selection=[situations, dialogues],
        resources=local_resources(data),
        instance=instance,
        tags=RANGE_ALL,
    )
    assert result.success
    out["single run, 28 partitions"] = time.perf_counter() - start

    start = time.perf_counter()
    for e in EMOTIONS:
        _one_partition((str(home), str(data), e))
    out["28 runs, one after another"] = time.perf_counter() - start

    start = time.perf_counter()
    # spawn, not fork: Polars' thread pool does not survive a fork (the child deadlocks on first read).
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_one_partition, [(str(home), str(data), e) for e in EMOTIONS]))
    out["28 runs, 2 at a time"] = time.perf_counter() - start
    n_runs = len(instance.get_run_records())
    assert n_runs == 1 + 1 + 28 + 28, n_runs
    return out


def _pipeline(resources: dict, home: Path) -> float:
    instance = _instance(home)
    start = time.perf_counter()
    assert materialize(ASSETS, resources=resources, instance=instance, tags=RANGE_ALL).success
    return time.perf_counter() - start


def bench_profiles(work: Path) -> dict[str, float]:
    out = {"ingest pipeline, local profile (disk)": _pipeline(local_resources(work / "local"), work / "h1")}
    try:
        from tests.moto_server import moto_endpoint, moto_server_command
    except ImportError:
        return out
    if moto_server_command() is None:
        print("moto_server not installed: aws profile skipped", file=sys.stderr)
        return out
    from empathy_dag.defs.profiles import aws_resources
    from empathy_dag.storage_s3 import s3_client

    with moto_endpoint() as endpoint:
        s3_client(endpoint).create_bucket(Bucket="empathy-bench")
        env = {
            "EMPATHY_DAG_S3_BUCKET": "empathy-bench",
            "EMPATHY_DAG_S3_PREFIX": "bench",
            "EMPATHY_DAG_S3_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
        }
        resources = aws_resources(work / "aws_cache", env=env)
        out["ingest pipeline, aws profile (S3 on loopback)"] = _pipeline(resources, work / "h2")
    return out


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    try:
        backfill = bench_backfill(work / "backfill")
        profiles = bench_profiles(work / "profiles")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n## Scale-out ({os.cpu_count()} CPU cores)\n")
    print("| what | wall time (s) | relative |")
    print("|---|---:|---:|")
    base = backfill["single run, 28 partitions"]
    for name, seconds in backfill.items():
        print(f"| {name} (situations + dialogues) | {seconds:.1f} | {seconds / base:.1f}x |")
    base = next(iter(profiles.values()))
    for name, seconds in profiles.items():
        print(f"| {name}: taxonomy + corpus + 28 partitions | {seconds:.1f} | {seconds / base:.1f}x |")


if __name__ == "__main__":
    main()
