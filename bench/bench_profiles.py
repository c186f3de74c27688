"""The tiny pipeline (the README's demo command, `--profile tiny`) in both deployment profiles, side by
side in one session: `local` (Parquet, models and DuckDB on disk, SQLite instance) and `aws` (everything
on S3 through moto_server on loopback, the instance in a real PostgreSQL server, training as Dagster Pipes
steps in a subprocess with its own cache that fetches from and publishes to S3). Same command, same
machine; only the environment differs.

Reports the whole command's wall time and the job's own time (what `main_job succeeded in N s` prints:
the run without interpreter start and imports). Prints a Markdown table (BENCHMARKS.md "Scale-out")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.aws_stack import aws_stack, aws_stack_available, clean_environment


def run_demo(env: dict[str, str], log: Path) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "empathy_dag", "demo", "--profile", "tiny"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - start
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({log}):\n{proc.stdout[-2000:]}")
    job = float(re.search(r"main_job succeeded in (\d+) s", proc.stdout).group(1))
    return wall, job


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-profiles-"))
    logs = ROOT / "test-artifacts"
    logs.mkdir(exist_ok=True)
    rows = {}
    try:
        home = work / "local_home"
        home.mkdir()
        shutil.copy(ROOT / "resources" / "dagster.yaml", home / "dagster.yaml")
        rows["local (disk, SQLite)"] = run_demo(
            {**clean_environment(), "DAGSTER_HOME": str(home)}, logs / "bench_profiles_local.log"
        )
        why_not = aws_stack_available()
        if why_not:
            print(f"aws profile skipped: {why_not}", file=sys.stderr)
        else:
            with aws_stack(work / "aws", bucket="empathy-bench", prefix="tiny") as env:
                rows["aws (S3 on loopback, Postgres, Pipes steps)"] = run_demo(
                    {**clean_environment(), **env}, logs / "bench_profiles_aws.log"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n## Tiny pipeline in both profiles ({os.cpu_count()} CPU cores)\n")
    print("| profile | command wall time (s) | main_job (s) | relative (job) |")
    print("|---|---:|---:|---:|")
    base = next(iter(rows.values()))[1]
    for name, (wall, job) in rows.items():
        print(f"| {name} | {wall:.0f} | {job:.0f} | {job / base:.2f}x |")


if __name__ == "__main__":
    main()
