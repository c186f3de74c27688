"""Heavy steps through Dagster Pipes, end to end with the subprocess client (local profile): a real
entry point hashes the embedded MiniLM model folder in another process and its logs and metadata come
back into the asset's materialization. The ECS client's configuration is built and checked without AWS."""

import pytest
from dagster import AssetExecutionContext, DagsterInstance, MaterializeResult, asset, materialize
from dagster_aws.pipes import PipesECSClient, PipesS3MessageReader

from empathy_dag.defs.pipes import EcsStepSettings, local_command, run_heavy_step
from empathy_dag.models import embedded_minilm_dir, sha256_tree

STEP = "empathy_dag.pipes_steps:model_folder_checksum"


def _checksum_asset(folder: str):
    @asset(name="minilm_checksum")
    def minilm_checksum(context: AssetExecutionContext) -> MaterializeResult:
        return run_heavy_step(context, STEP, {"folder": folder}, profile="local")

    return minilm_checksum


def test_heavy_step_runs_in_a_subprocess_and_reports_back(monkeypatch):
    monkeypatch.delenv("EMPATHY_DAG_PROFILE", raising=False)
    folder = embedded_minilm_dir()
    instance = DagsterInstance.ephemeral()
    result = materialize([_checksum_asset(str(folder))], instance=instance)
    assert result.success
    mat = result.asset_materializations_for_node("minilm_checksum")[0]
    assert mat.metadata["sha256"].value == sha256_tree(folder)
    assert mat.metadata["has_config"].value is True
    assert mat.metadata["files"].value >= 2
    logs = [r.user_message for r in instance.all_logs(result.run_id)]
    assert any("hashing" in m and str(folder) in m for m in logs)  # the child's log, streamed through Pipes
    assert any("heavy step empathy_dag.pipes_steps:model_folder_checksum starting" in m for m in logs)
    version = instance.get_latest_materialization_event(mat.asset_key).asset_materialization.tags
    assert version.get("dagster/data_version") == sha256_tree(folder)


def test_a_failing_heavy_step_fails_the_asset_with_its_error(tmp_path):
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [_checksum_asset(str(tmp_path / "missing"))], raise_on_error=False, instance=instance
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "DagsterPipesExecutionError" in failure.to_string()
    # The child's exception is reported back through Pipes, into the run's log.
    logs = " ".join(str(r.dagster_event or r.user_message) for r in instance.all_logs(result.run_id))
    assert "does not exist" in logs


def test_ecs_step_settings_and_client_from_the_environment():
    env = {
        "EMPATHY_DAG_ECS_CLUSTER": "empathy-dag",
        "EMPATHY_DAG_ECS_GPU_TASK_DEFINITION": "empathy-dag-gpu:3",
        "EMPATHY_DAG_ECS_SUBNETS": "subnet-a, subnet-b",
        "EMPATHY_DAG_ECS_SECURITY_GROUPS": "sg-1",
        "EMPATHY_DAG_S3_BUCKET": "bucket-x",
        "EMPATHY_DAG_S3_PREFIX": "prod",
        "AWS_REGION": "eu-west-1",
    }
    settings = EcsStepSettings.from_env(env)
    params = settings.run_task_params(STEP)
    assert params["taskDefinition"] == "empathy-dag-gpu:3" and params["cluster"] == "empathy-dag"
    assert params["launchType"] == "EC2"  # GPUs are not available on Fargate
    override = params["overrides"]["containerOverrides"][0]
    assert override == {"name": "heavy", "command": ["python", "-m", "empathy_dag.pipes", STEP]}
    assert params["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == ["subnet-a", "subnet-b"]
    client = settings.client()
    assert isinstance(client, PipesECSClient)
    assert isinstance(client._message_reader, PipesS3MessageReader)
    assert settings.messages_prefix == "prod/pipes-messages"
    with_provider = EcsStepSettings.from_env({**env, "EMPATHY_DAG_ECS_GPU_CAPACITY_PROVIDER": "gpu-asg"})
    assert "launchType" not in with_provider.run_task_params(STEP)
    with pytest.raises(ValueError, match="EMPATHY_DAG_ECS_CLUSTER"):
        EcsStepSettings.from_env({})
    assert local_command(STEP)[1:] == ["-m", "empathy_dag.pipes", STEP]


def test_heavy_step_launcher_follows_profile_and_configuration():
    from empathy_dag.defs.pipes import heavy_step_launcher

    assert heavy_step_launcher("local", {}) == "subprocess"
    assert heavy_step_launcher("aws", {}) == "subprocess"  # S3 storage, training beside the run
    assert heavy_step_launcher("aws", {"EMPATHY_DAG_ECS_CLUSTER": "c"}) == "ecs"
    assert (
        heavy_step_launcher("aws", {"EMPATHY_DAG_ECS_CLUSTER": "c", "EMPATHY_DAG_HEAVY_STEPS": "subprocess"})
        == "subprocess"
    )
    assert heavy_step_launcher("local", {"EMPATHY_DAG_HEAVY_STEPS": "ECS"}) == "ecs"
    with pytest.raises(ValueError, match="expected one of"):
        heavy_step_launcher("aws", {"EMPATHY_DAG_HEAVY_STEPS": "lambda"})
