"""Command line: `python -m empathy_dag demo` runs the main job end to end on the embedded defaults
and leaves the materializations in the $DAGSTER_HOME instance that `dagster dev` shows."""

from __future__ import annotations

import argparse
import os
import sys
import time


def run_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("DAGSTER_HOME", os.path.abspath(".dagster_home"))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    from dagster import DagsterInstance

    from empathy_dag.definitions import defs
    from empathy_dag.demo import demo_run_config, print_summary
    from empathy_dag.taxonomy import EMOTIONS

    instance = DagsterInstance.get()
    job = defs.resolve_job_def("main_job")
    tags = {
        # One run over every emotion partition (the per-emotion assets have a single-run backfill policy).
        "dagster/asset_partition_range_start": EMOTIONS[0],
        "dagster/asset_partition_range_end": EMOTIONS[-1],
        "trigger": "demo",
    }
    start = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, tags=tags, run_config=demo_run_config(args.profile), raise_on_error=False
    )
    elapsed = time.perf_counter() - start
    print_summary(result, instance, elapsed)
    return 0 if result.success else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empathy_dag")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job end to end on the embedded default models")
    demo.add_argument("--profile", choices=["tiny", "demo"], default="demo",
                      help="tiny: a couple of items per emotion (CI); demo: the README's defaults")
    demo.set_defaults(func=run_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
