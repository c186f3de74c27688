"""Command line: `python -m empathy_dag demo` runs the main job end to end on the embedded defaults
and leaves the materializations in the $DAGSTER_HOME instance that `dagster dev` shows;
`python -m empathy_dag dev` (`make dev`) is that `dagster dev`, stopping cleanly (devserver.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from empathy_dag.chat import run_chat
from empathy_dag.definitions import defs
from empathy_dag.defs.partitions import ALL_EMOTIONS_TAGS
from empathy_dag.demo import demo_run_config, demo_selection, print_summary
from empathy_dag.devserver import dagster_dev_command, run_supervised
from empathy_dag.settings import data_root, shared_data_dir


def run_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("DAGSTER_HOME", os.path.abspath(".dagster_home"))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    import warnings

    from dagster import BetaWarning, DagsterInstance

    # backfill_policy is beta in Dagster 1.13; the demo's terminal is for progress, not that notice.
    warnings.filterwarnings("ignore", category=BetaWarning)

    instance = DagsterInstance.get()
    job = defs.resolve_job_def("main_job")
    # One run over every emotion partition (the per-emotion assets have a single-run backfill policy).
    tags = {**ALL_EMOTIONS_TAGS, "trigger": "demo"}
    start = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        tags=tags,
        run_config=demo_run_config(args.profile),
        asset_selection=demo_selection(job, shared_data_dir()),
        raise_on_error=False,
    )
    elapsed = time.perf_counter() - start
    print_summary(result, instance, elapsed, defs.resources["warehouse"].database)
    return 0 if result.success else 1


def run_chat_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    store = Path(args.store or (data_root() / "models"))
    return run_chat(args.model, store, args.emotion, args.max_new_tokens)


def run_dev(args: argparse.Namespace) -> int:
    code = run_supervised(dagster_dev_command(args.workspace, args.host, args.port), grace_s=args.grace_s)
    return 128 - code if code < 0 else code  # killed by a signal: the shell's convention


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empathy_dag")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job end to end on the embedded default models")
    demo.add_argument(
        "--profile",
        choices=["tiny", "demo"],
        default="demo",
        help="tiny: a couple of items per emotion (CI); demo: the README's defaults",
    )
    demo.set_defaults(func=run_demo)
    chat = sub.add_parser("chat", help="chat in the terminal with a checkpoint (reads turns from stdin)")
    chat.add_argument(
        "--model",
        default="promoted",
        help="base | sft | dpo | promoted | path to a model or PEFT adapter folder",
    )
    chat.add_argument("--emotion", default=None, help="optional emotion hint, e.g. grief")
    chat.add_argument("--max-new-tokens", type=int, default=96)
    chat.add_argument("--store", default=None, help="model store folder (default $DAGSTER_HOME/data/models)")
    chat.set_defaults(func=run_chat_command)
    dev = sub.add_parser(
        "dev", help="dagster dev (the UI) that stops cleanly on Ctrl-C / SIGTERM, children included"
    )
    dev.add_argument("--workspace", default="workspace.yaml")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument(
        "--grace-s",
        type=float,
        default=30.0,
        help="seconds the processes get to stop after Ctrl-C / SIGTERM before they are killed",
    )
    dev.set_defaults(func=run_dev)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
