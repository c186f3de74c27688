"""The instance configurations in resources/: both load as Dagster instance config; the aws one names
Postgres storage, the ECS run launcher and S3 compute logs, every class's own config schema accepts it
once the variables of resources/aws/.env.example are set, and no value in it is a literal credential."""

import importlib
import shutil

import yaml
from dagster._config import process_config
from dagster._core.instance.ref import InstanceRef

from empathy_dag.settings import PROJECT_ROOT

RESOURCES = PROJECT_ROOT / "resources"


def _example_env() -> dict[str, str]:
    env = {}
    for line in (RESOURCES / "aws" / ".env.example").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip() or f"example-{key.strip().lower()}"
    return env


def _ref(tmp_path, yaml_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(yaml_path, home / "dagster.yaml")
    return InstanceRef.from_dir(str(home))


def _class_config(data) -> dict:
    cls = getattr(importlib.import_module(data.module_name), data.class_name)
    result = process_config(cls.config_type(), yaml.safe_load(data.config_yaml))
    assert result.success, result.errors
    return result.value


def test_local_instance_config_loads(tmp_path):
    ref = _ref(tmp_path, RESOURCES / "dagster.yaml")
    assert ref.run_storage_data.class_name == "SqliteRunStorage"


def test_aws_instance_config_validates_with_the_example_environment(tmp_path, monkeypatch):
    env = _example_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ref = _ref(tmp_path, RESOURCES / "aws" / "dagster.yaml")
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == (
        "dagster_postgres",
        "DagsterPostgresStorage",
    )
    assert ref.run_launcher_data.class_name == "EcsRunLauncher"
    assert ref.compute_logs_data.class_name == "S3ComputeLogManager"

    storage = _class_config(ref.storage_data)["postgres_db"]
    assert storage["hostname"] == env["DAGSTER_PG_HOST"] and storage["password"] == env["DAGSTER_PG_PASSWORD"]
    launcher = _class_config(ref.run_launcher_data)
    # EcsRunLauncher resolves this one itself when it starts (ScalarUnion with an `env` key).
    assert launcher["task_definition"] == {"env": "DAGSTER_ECS_RUN_TASK_DEFINITION"}
    assert "EMPATHY_DAG_PROFILE" in launcher["env_vars"]
    # Every variable the runs need is either passed through or a secret; the password never is.
    assert "DAGSTER_PG_PASSWORD" not in launcher["env_vars"]
    logs = _class_config(ref.compute_logs_data)
    assert (
        logs["bucket"] == env["EMPATHY_DAG_S3_BUCKET"] and logs["prefix"] == env["DAGSTER_COMPUTE_LOG_PREFIX"]
    )


def test_aws_config_takes_every_deployment_value_from_the_environment(tmp_path, monkeypatch):
    for key in _example_env():
        monkeypatch.delenv(key, raising=False)
    ref = _ref(tmp_path, RESOURCES / "aws" / "dagster.yaml")  # the file itself names no host or secret
    data = ref.storage_data
    cls = getattr(importlib.import_module(data.module_name), data.class_name)
    result = process_config(cls.config_type(), yaml.safe_load(data.config_yaml))
    assert not result.success
    assert "DAGSTER_PG_HOST" in str(result.errors)
    values = yaml.safe_dump(yaml.safe_load((RESOURCES / "aws" / "dagster.yaml").read_text())).lower()
    assert "aws_secret_access_key" not in values and "aws_access_key_id" not in values
    assert "password:\n        env: dagster_pg_password" in values


def test_env_example_lists_every_variable_the_code_reads():
    env = _example_env()
    text = (RESOURCES / "aws" / "dagster.yaml").read_text()
    needed = {line.split("env:")[1].strip() for line in text.splitlines() if "env:" in line}
    needed |= {
        "EMPATHY_DAG_PROFILE",
        "EMPATHY_DAG_S3_BUCKET",
        "EMPATHY_DAG_S3_PREFIX",
        "EMPATHY_DAG_S3_ENDPOINT_URL",
        "EMPATHY_DAG_ECS_CLUSTER",
        "EMPATHY_DAG_ECS_GPU_TASK_DEFINITION",
        "EMPATHY_DAG_ECS_GPU_CONTAINER",
        "EMPATHY_DAG_ECS_SUBNETS",
        "EMPATHY_DAG_ECS_SECURITY_GROUPS",
        "EMPATHY_DAG_CACHE_DIR",
        "AWS_REGION",
    }
    assert needed <= set(env), needed - set(env)
