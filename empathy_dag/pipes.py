"""The external side of a heavy step (training, large generation runs) run through Dagster Pipes: what the
step's process needs (`dagster_pipes` only, no Dagster). The launching side, `run_heavy_step`, is in
`empathy_dag/defs/pipes.py`: locally a subprocess (`PipesSubprocessClient`), in the `aws` profile a task on
the GPU task definition (`PipesECSClient`, dagster-aws). Logs and metadata come back through Pipes in both
cases, so the asset's materialization looks the same.

A heavy step is a plain function `fn(params: dict, pipes: PipesContext) -> dict` named
"package.module:function". Params are JSON (they travel as a Pipes extra); the returned dict becomes
the asset's materialization metadata. The external side runs

    python -m empathy_dag.pipes package.module:function

which opens the Pipes session (`open_pipes()`), calls the function and reports the materialization.

Asset side (`empathy_dag.defs.pipes.run_heavy_step`):

    @asset(pool="training")
    def sft_adapter(context: AssetExecutionContext, model_store: ModelStore) -> MaterializeResult:
        return run_heavy_step(context, "empathy_dag.train.steps:train_sft",
                              {"base_model": str(model_store.fetch("base_model")), ...})

In the aws profile the step's task writes its outputs to S3 itself (ModelStore.publish) since it
does not share a disk with the run."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from empathy_dag.resources import ModelStore

ENTRY_MODULE = "empathy_dag.pipes"
PARAMS_EXTRA = "empathy_dag_params"
STEP_EXTRA = "empathy_dag_step"


# --- what a step shares with the run: its model store and JSON-lines files in it ---------------------

STEP_CACHE_ENV = "EMPATHY_DAG_STEP_CACHE_DIR"


def step_cache_root(store: dict) -> str | None:
    """The step's own disk: $EMPATHY_DAG_STEP_CACHE_DIR when set and the store is on S3 (an ECS task, or
    a subprocess made to share no disk with the run); None: the step uses the run's folders."""
    own = os.environ.get(STEP_CACHE_ENV)
    return own if own and store.get("s3_prefix") else None


def step_store(params: dict):
    """The model store as the step sees it: the run's settings, rooted in the step's own cache if any."""

    fields = dict(params["store"])
    fields["root"] = step_cache_root(fields) or fields["root"]
    return ModelStore(**fields)


def write_jsonl(path, rows) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read_jsonl(path) -> list:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --- external side ------------------------------------------------------------------------------------


def open_pipes():
    """`open_dagster_pipes()` with the message writer the launching side chose: S3 chunks when the
    reader passed a bucket (aws profile), otherwise the default file/stdio writer (subprocess)."""
    from dagster_pipes import (
        PipesDefaultMessageWriter,
        PipesEnvVarParamsLoader,
        PipesS3MessageWriter,
        open_dagster_pipes,
    )

    loader = PipesEnvVarParamsLoader()
    writer = PipesDefaultMessageWriter()
    if loader.is_dagster_pipes_process() and "bucket" in loader.load_messages_params():
        import boto3

        endpoint = os.environ.get("EMPATHY_DAG_S3_ENDPOINT_URL") or None
        writer = PipesS3MessageWriter(client=boto3.client("s3", endpoint_url=endpoint), interval=5)
    return open_dagster_pipes(message_writer=writer, params_loader=loader)


def resolve_step(step: str) -> Callable[[dict, Any], dict]:
    module_name, _, function_name = step.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"a heavy step is 'package.module:function', got {step!r}")
    return getattr(importlib.import_module(module_name), function_name)


def run_step_in_pipes(step: str) -> None:
    with open_pipes() as pipes:
        params = pipes.get_extra(PARAMS_EXTRA)
        if pipes.get_extra(STEP_EXTRA) != step:
            raise ValueError(f"launched as {step!r} but the asset asked for {pipes.get_extra(STEP_EXTRA)!r}")
        pipes.log.info(f"heavy step {step} starting (pid {os.getpid()})")
        metadata = resolve_step(step)(params, pipes) or {}
        pipes.report_asset_materialization(metadata=metadata, data_version=metadata.get("sha256"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python -m {ENTRY_MODULE} package.module:function")
    run_step_in_pipes(sys.argv[1])
