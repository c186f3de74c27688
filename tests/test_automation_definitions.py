"""The automation definitions (jobs, sensors, schedules of every stage) load with the project's, and carry
the documented policies."""

from dagster import DefaultScheduleStatus

from empathy_dag.definitions import defs
from empathy_dag.defs.ingest.jobs import LANDING_JOB_NAME
from empathy_dag.defs.run_policies import TRAINING_POOL, TRANSIENT_RETRY
from empathy_dag.defs.selections import TRAINING_CHECKPOINT_KEYS
from empathy_dag.defs.train.jobs import RETRAIN_JOB_NAME


def test_jobs_sensors_schedules_resolve_in_the_project_definitions():
    names = {j.name for j in defs.jobs}
    assert {
        LANDING_JOB_NAME,
        RETRAIN_JOB_NAME,
        "review_decisions_job",
        "nightly_eval_job",
        "main_job",
    } <= names
    landing = defs.resolve_job_def(LANDING_JOB_NAME)
    selected = {k.to_user_string() for k in landing.asset_layer.executable_asset_keys}
    assert {"corpus_rows", "quarantine", "situations", "dialogues", "curated_dialogues"} <= selected
    # Only per-emotion data work: no checkpoint, no evaluation of a checkpoint.
    assert not selected & {"sft_checkpoint", "dpo_checkpoint", "test_generations"}
    assert landing.partitions_def is not None and len(landing.partitions_def.get_partition_keys()) == 28
    schedules = list(defs.schedules)
    assert {s.name for s in schedules} == {"nightly_eval_schedule", "weekly_retrain_schedule"}
    for schedule in schedules:
        assert schedule.default_status == DefaultScheduleStatus.STOPPED
        # cost-attribution tags ride on each run request (see the next test), with the partition range
    sensors = {s.name for s in defs.sensors}
    assert {
        "landing_zone_sensor",
        "retraining_sensor",
        "run_history_success_sensor",
        "run_history_failure_sensor",
    } <= sensors
    retrain = defs.resolve_job_def(RETRAIN_JOB_NAME)
    nodes = {n.name: n for n in retrain.graph.node_dict.values()}
    for key in TRAINING_CHECKPOINT_KEYS:
        assert nodes[key].definition.pool == TRAINING_POOL, key
    assert retrain.op_retry_policy == TRANSIENT_RETRY


def test_schedules_request_runs_over_every_emotion():
    """Their jobs mix per-emotion and unpartitioned assets: without a partition range a per-emotion
    step (test_generations) has nothing to work on and the run fails."""
    from dagster import build_schedule_context

    from empathy_dag.taxonomy import EMOTIONS

    for sched in defs.schedules:
        request = sched.evaluate_tick(build_schedule_context()).run_requests[0]
        assert request.tags["dagster/asset_partition_range_start"] == EMOTIONS[0]
        assert request.tags["dagster/asset_partition_range_end"] == EMOTIONS[-1]
        assert request.tags["trigger"].startswith("schedule:")
        assert {"team", "cost_center"} <= set(request.tags)
