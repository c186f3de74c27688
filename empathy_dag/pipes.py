"""Heavy steps (training, large generation runs) through Dagster Pipes: the asset stays a thin
orchestration wrapper; the work runs in another process, locally a subprocess (`PipesSubprocessClient`)
and in the `aws` profile a task on the GPU task definition (`PipesECSClient`, dagster-aws). Logs and
metadata come back through Pipes in both cases, so the asset's materialization looks the same.

A heavy step is a plain function `fn(params: dict, pipes: PipesContext) -> dict` named
"package.module:function". Params are JSON (they travel as a Pipes extra); the returned dict becomes
the asset's materialization metadata. The external side runs

    python -m empathy_dag.pipes package.module:function

which opens the Pipes session (`open_pipes()`), calls the function and reports the materialization.

Asset side:

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
from dataclasses import dataclass, field
from typing import Any

from empathy_dag.resources import ModelStore
from empathy_dag.settings import active_profile  # Dagster-free: the external side needs only dagster_pipes
from empathy_dag.storage_s3 import s3_client

ENTRY_MODULE = "empathy_dag.pipes"
PARAMS_EXTRA = "empathy_dag_params"
STEP_EXTRA = "empathy_dag_step"


# --- asset side ---------------------------------------------------------------------------------------


@dataclass
class EcsStepSettings:
    """Where the aws profile runs heavy steps; from the environment (resources/aws/.env.example)."""

    cluster: str
    task_definition: str
    container_name: str = "heavy"
    subnets: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    messages_bucket: str = ""
    messages_prefix: str = "pipes-messages"
    endpoint_url: str = ""
    region_name: str = ""
    # GPUs on ECS need the EC2 launch type (Fargate has none): a capacity provider of GPU instances.
    capacity_provider: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EcsStepSettings:
        env = dict(os.environ if env is None else env)

        def required(name: str) -> str:
            if not env.get(name):
                raise ValueError(f"heavy steps in the aws profile need {name} (resources/aws/.env.example)")
            return env[name]

        split = lambda v: [s.strip() for s in v.split(",") if s.strip()]
        prefix = env.get("EMPATHY_DAG_S3_PREFIX", "empathy-dag").strip("/")
        return cls(
            cluster=required("EMPATHY_DAG_ECS_CLUSTER"),
            task_definition=required("EMPATHY_DAG_ECS_GPU_TASK_DEFINITION"),
            container_name=env.get("EMPATHY_DAG_ECS_GPU_CONTAINER", "heavy"),
            subnets=split(env.get("EMPATHY_DAG_ECS_SUBNETS", "")),
            security_groups=split(env.get("EMPATHY_DAG_ECS_SECURITY_GROUPS", "")),
            messages_bucket=required("EMPATHY_DAG_S3_BUCKET"),
            messages_prefix=f"{prefix}/pipes-messages" if prefix else "pipes-messages",
            endpoint_url=env.get("EMPATHY_DAG_S3_ENDPOINT_URL", ""),
            region_name=env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "")),
            capacity_provider=env.get("EMPATHY_DAG_ECS_GPU_CAPACITY_PROVIDER", ""),
        )

    def run_task_params(self, step: str) -> dict:
        """boto3 `ecs.run_task` arguments for one heavy step (PipesECSClient adds the Pipes env)."""
        params: dict[str, Any] = {
            "cluster": self.cluster,
            "taskDefinition": self.task_definition,
            "count": 1,
            "overrides": {"containerOverrides": [
                {"name": self.container_name, "command": ["python", "-m", ENTRY_MODULE, step]}
            ]},
        }
        if self.capacity_provider:
            params["capacityProviderStrategy"] = [{"capacityProvider": self.capacity_provider, "weight": 1}]
        else:
            params["launchType"] = "EC2"
        if self.subnets:
            params["networkConfiguration"] = {"awsvpcConfiguration": {
                "subnets": self.subnets, "securityGroups": self.security_groups, "assignPublicIp": "DISABLED",
            }}
        return params

    def client(self):
        """PipesECSClient whose messages travel through S3 (no dependency on the task's log
        configuration), context through the container's environment."""
        import boto3
        from dagster_aws.pipes import PipesECSClient, PipesS3MessageReader

        ecs = boto3.client("ecs", region_name=self.region_name or None)
        reader = PipesS3MessageReader(bucket=self.messages_bucket, client=s3_client(self.endpoint_url),
                                      interval=5)
        return PipesECSClient(client=ecs, message_reader=reader)


LAUNCHER_ENV = "EMPATHY_DAG_HEAVY_STEPS"
LAUNCHERS = ("subprocess", "ecs")


def heavy_step_launcher(profile: str, env: dict[str, str] | None = None) -> str:
    """`subprocess` or `ecs`: $EMPATHY_DAG_HEAVY_STEPS when set; else `ecs` in the aws profile when an ECS
    cluster is configured (EMPATHY_DAG_ECS_CLUSTER), otherwise `subprocess` (the local profile, or the
    aws profile on one machine with a GPU: data on S3, training beside the run)."""
    env = os.environ if env is None else env
    chosen = env.get(LAUNCHER_ENV, "").strip().lower()
    if chosen:
        if chosen not in LAUNCHERS:
            raise ValueError(f"{LAUNCHER_ENV}={chosen!r}: expected one of {LAUNCHERS}")
        return chosen
    return "ecs" if profile == "aws" and env.get("EMPATHY_DAG_ECS_CLUSTER") else "subprocess"


def local_command(step: str) -> list[str]:
    return [sys.executable, "-m", ENTRY_MODULE, step]


def run_heavy_step(context, step: str, params: dict, *, profile: str | None = None,
                   env: dict[str, str] | None = None, ecs: EcsStepSettings | None = None):
    """Run `step` ("module:function") with JSON `params` in a separate process and return the
    `MaterializeResult` it reported (metadata from the function's return value, logs already streamed
    to the run's log). `profile` defaults to EMPATHY_DAG_PROFILE; `heavy_step_launcher` picks the client."""
    json.dumps(params)  # params must survive the trip: fail here, not in the remote process
    extras = {PARAMS_EXTRA: params, STEP_EXTRA: step}
    launcher = heavy_step_launcher(profile or active_profile())
    context.log.info(f"heavy step {step} through Dagster Pipes ({launcher})")
    if launcher == "ecs":
        settings = ecs or EcsStepSettings.from_env()
        invocation = settings.client().run(
            context=context, run_task_params=settings.run_task_params(step), extras=extras,
            pipes_container_name=settings.container_name,
        )
    else:
        from dagster import PipesSubprocessClient

        child_env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        invocation = PipesSubprocessClient(env=child_env).run(
            context=context, command=local_command(step), extras=extras
        )
    return invocation.get_materialize_result()


# --- what a step shares with the run: its model store and JSON-lines files in it ---------------------

STEP_CACHE_ENV = "EMPATHY_DAG_STEP_CACHE_DIR"


def store_params(model_store) -> dict:
    """The fields a step rebuilds the run's `ModelStore` from (they travel in the step's params)."""
    return {"root": model_store.root, "s3_prefix": model_store.s3_prefix,
            "endpoint_url": model_store.endpoint_url}


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
