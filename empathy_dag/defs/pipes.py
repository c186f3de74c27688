"""The launching side of heavy steps through Dagster Pipes (the external side, what the step's process
runs, is `empathy_dag/pipes.py`): `run_heavy_step` runs "package.module:function" with JSON params in a
subprocess (`PipesSubprocessClient`) or, in the `aws` profile with an ECS cluster configured, as a task on
the GPU task definition (`PipesECSClient`), and returns the `MaterializeResult` the step reported."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from empathy_dag.pipes import ENTRY_MODULE, PARAMS_EXTRA, STEP_EXTRA
from empathy_dag.settings import active_profile
from empathy_dag.storage_s3 import s3_client


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
            "overrides": {
                "containerOverrides": [
                    {"name": self.container_name, "command": ["python", "-m", ENTRY_MODULE, step]}
                ]
            },
        }
        if self.capacity_provider:
            params["capacityProviderStrategy"] = [{"capacityProvider": self.capacity_provider, "weight": 1}]
        else:
            params["launchType"] = "EC2"
        if self.subnets:
            params["networkConfiguration"] = {
                "awsvpcConfiguration": {
                    "subnets": self.subnets,
                    "securityGroups": self.security_groups,
                    "assignPublicIp": "DISABLED",
                }
            }
        return params

    def client(self):
        """PipesECSClient whose messages travel through S3 (no dependency on the task's log
        configuration), context through the container's environment."""
        import boto3
        from dagster_aws.pipes import PipesECSClient, PipesS3MessageReader

        ecs = boto3.client("ecs", region_name=self.region_name or None)
        reader = PipesS3MessageReader(
            bucket=self.messages_bucket, client=s3_client(self.endpoint_url), interval=5
        )
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


def run_heavy_step(
    context,
    step: str,
    params: dict,
    *,
    profile: str | None = None,
    env: dict[str, str] | None = None,
    ecs: EcsStepSettings | None = None,
):
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
            context=context,
            run_task_params=settings.run_task_params(step),
            extras=extras,
            pipes_container_name=settings.container_name,
        )
    else:
        from dagster import PipesSubprocessClient

        child_env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        invocation = PipesSubprocessClient(env=child_env).run(
            context=context, command=local_command(step), extras=extras
        )
    return invocation.get_materialize_result()


def store_params(model_store) -> dict:
    """The fields a step rebuilds the run's `ModelStore` from (they travel in the step's params)."""
    return {
        "root": model_store.root,
        "s3_prefix": model_store.s3_prefix,
        "endpoint_url": model_store.endpoint_url,
    }
