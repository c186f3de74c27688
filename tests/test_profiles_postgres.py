"""A Postgres-backed Dagster instance against a real PostgreSQL server (Debian's `postgresql`, a
throwaway cluster on loopback): the instance is built from the `storage:` section of
resources/aws/dagster.yaml with only environment variables changed, runs one materialization and
records a sensor tick, and both are read back from Postgres with SQL. Skips when the server binaries
are missing (CI: `apt-get install -y postgresql`)."""

import time

import pytest
import yaml
from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter, materialize
from dagster._core.instance.ref import InstanceRef
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus

from empathy_dag.defs.ingest.assets import emotion_taxonomy
from empathy_dag.settings import PROJECT_ROOT
from tests.postgres_server import pg_query, postgres_bin_dir, postgres_cluster

pytestmark = pytest.mark.skipif(
    postgres_bin_dir() is None, reason="PostgreSQL server not installed (apt-get install -y postgresql)"
)

AWS_YAML = PROJECT_ROOT / "resources" / "aws" / "dagster.yaml"


@pytest.fixture(scope="module")
def postgres():
    pytest.importorskip("psycopg2")
    with postgres_cluster() as settings:
        yield settings


@pytest.fixture
def pg_instance(postgres, tmp_path, monkeypatch):
    """The aws profile's storage section, verbatim; ECS launcher and S3 compute logs are left out
    because they need AWS (their config is validated in test_profiles_config.py)."""
    config = yaml.safe_load(AWS_YAML.read_text())
    home = tmp_path / "dagster_home"
    home.mkdir()
    kept = {k: config[k] for k in ("storage", "concurrency", "telemetry")}
    (home / "dagster.yaml").write_text(yaml.safe_dump(kept))
    for var, key in [
        ("DAGSTER_PG_HOST", "host"),
        ("DAGSTER_PG_PORT", "port"),
        ("DAGSTER_PG_DB", "db_name"),
        ("DAGSTER_PG_USERNAME", "user"),
        ("DAGSTER_PG_PASSWORD", "password"),
    ]:
        monkeypatch.setenv(var, str(postgres[key]))
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    yield instance
    instance.dispose()


def test_runs_events_and_ticks_are_stored_in_postgres(pg_instance, postgres, resources):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pg_instance.schedule_storage, PostgresScheduleStorage)

    result = materialize([emotion_taxonomy], resources=resources, instance=pg_instance)
    assert result.success
    run_id = result.run_id
    assert pg_query(postgres, "select status from runs where run_id = %s", run_id) == [("SUCCESS",)]
    events = {
        r[0]
        for r in pg_query(postgres, "select dagster_event_type from event_logs where run_id = %s", run_id)
    }
    assert {"STEP_SUCCESS", "ASSET_MATERIALIZATION"} <= events
    assert events & {"RUN_SUCCESS", "PIPELINE_SUCCESS"}  # stored under its legacy name
    assert pg_query(
        postgres,
        "select count(*) from asset_keys where asset_key = %s",
        AssetKey("emotion_taxonomy").to_string(),
    ) == [(1,)]
    # And through Dagster's own API, as the webserver reads it.
    records = pg_instance.fetch_materializations(AssetKey("emotion_taxonomy"), limit=1).records
    assert records and records[0].run_id == run_id
    assert records[0].asset_materialization.metadata["dagster/row_count"].value == 28

    # A sensor tick, as the daemon records one, lands in the schedule storage (Postgres as well).
    tick = pg_instance.create_tick(
        TickData(
            instigator_origin_id="empathy_dag:landing_zone_sensor",
            instigator_name="landing_zone_sensor",
            instigator_type=InstigatorType.SENSOR,
            status=TickStatus.SUCCESS,
            timestamp=time.time(),
            run_ids=[run_id],
            selector_id="landing-selector",
            cursor='{"seen": {}}',
        )
    )
    ticks = pg_instance.get_ticks("empathy_dag:landing_zone_sensor", "landing-selector")
    assert [t.tick_id for t in ticks] == [tick.tick_id] and ticks[0].run_ids == [run_id]
    assert pg_query(postgres, "select status from job_ticks where id = %s", tick.tick_id) == [("SUCCESS",)]
    n = pg_instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION), limit=5)
    assert len(n) == 1
