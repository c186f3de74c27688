"""The `aws` profile's whole stack on loopback, for the end-to-end test and bench/bench_profiles.py: an S3
endpoint (moto_server) with a bucket, a PostgreSQL server (throwaway cluster), and a DAGSTER_HOME whose
dagster.yaml is resources/aws/dagster.yaml's storage section. Yields the environment a process needs to
run in that profile; nothing in the code under test knows it is not AWS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml

from empathy_dag.settings import PROJECT_ROOT
from tests.moto_server import FAKE_CREDENTIALS, moto_endpoint, moto_server_command
from tests.postgres_server import postgres_bin_dir, postgres_cluster

AWS_YAML = PROJECT_ROOT / "resources" / "aws" / "dagster.yaml"
# What the instance needs from resources/aws/dagster.yaml here. Left out: the ECS run launcher (runs are
# launched in-process by the demo, and an ECS cluster cannot exist on loopback) and S3 compute logs
# (in-process runs capture none); both are validated in test_profiles_config.py.
INSTANCE_SECTIONS = ("storage", "concurrency", "telemetry")
PROFILE_VARS = (
    "EMPATHY_DAG_PROFILE",
    "EMPATHY_DAG_S3_BUCKET",
    "EMPATHY_DAG_S3_PREFIX",
    "EMPATHY_DAG_S3_ENDPOINT_URL",
    "EMPATHY_DAG_CACHE_DIR",
    "EMPATHY_DAG_HEAVY_STEPS",
    "EMPATHY_DAG_STEP_CACHE_DIR",
    "EMPATHY_DAG_ECS_CLUSTER",
    "EMPATHY_DAG_DATA_DIR",
    "EMPATHY_DAG_DUCKDB",
    "EMPATHY_DAG_PARQUET_DIR",
    "EMPATHY_DAG_MODEL_DIR",
)


def aws_stack_available() -> str | None:
    """None when the stack can start here, else why not (a skip reason)."""
    if moto_server_command() is None:
        return "moto[server] not installed"
    if postgres_bin_dir() is None:
        return "PostgreSQL server not installed (apt-get install -y postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 not installed"
    return None


def clean_environment() -> dict[str, str]:
    """os.environ without this project's location variables (so a profile starts from its defaults)."""
    env = dict(os.environ)
    for var in PROFILE_VARS:
        env.pop(var, None)
    return env


def instance_yaml() -> str:
    config = yaml.safe_load(AWS_YAML.read_text())
    return yaml.safe_dump({k: config[k] for k in INSTANCE_SECTIONS if k in config})


@contextmanager
def aws_stack(work: Path, bucket: str = "empathy-dag", prefix: str = "e2e") -> Iterator[dict[str, str]]:
    """Start moto + Postgres, create the bucket and DAGSTER_HOME; yield the process environment of the
    aws profile (profile variable, bucket, endpoint, Postgres settings, fake credentials)."""
    from empathy_dag.storage_s3 import s3_client

    work = Path(work)
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml())
    with ExitStack() as stack:
        endpoint = stack.enter_context(moto_endpoint(log_path=work / "moto.log"))
        pg = stack.enter_context(postgres_cluster())
        s3_client(endpoint).create_bucket(Bucket=bucket)
        yield {
            **FAKE_CREDENTIALS,
            "DAGSTER_HOME": str(home),
            "EMPATHY_DAG_PROFILE": "aws",
            "EMPATHY_DAG_S3_BUCKET": bucket,
            "EMPATHY_DAG_S3_PREFIX": prefix,
            "EMPATHY_DAG_S3_ENDPOINT_URL": endpoint,
            "EMPATHY_DAG_CACHE_DIR": str(work / "run_cache"),
            # Heavy steps (training) run as a subprocess that shares no disk with the run, as an ECS task
            # would: they fetch their inputs from S3 into their own cache and publish what they write.
            "EMPATHY_DAG_STEP_CACHE_DIR": str(work / "step_cache"),
            "DAGSTER_PG_HOST": pg["host"],
            "DAGSTER_PG_PORT": str(pg["port"]),
            "DAGSTER_PG_DB": pg["db_name"],
            "DAGSTER_PG_USERNAME": pg["user"],
            "DAGSTER_PG_PASSWORD": pg["password"],
        }
