"""The aws profile against a real S3 endpoint on loopback (moto_server): the ingest assets write their
Parquet to the bucket, the warehouse file and the landing zone live there, model folders round-trip
through ModelStore.publish/fetch with sha256 verification. Skips when moto[server] is not installed."""

import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from empathy_dag.defs.ingest.assets import dialogues, emotion_taxonomy, ingest_corpus, situations
from empathy_dag.defs.warehouse.assets import SQL_DIR, build_sql_model_assets
from empathy_dag.taxonomy import EMOTIONS
from tests.moto_server import moto_endpoint, moto_server_command

pytestmark = pytest.mark.skipif(moto_server_command() is None, reason="moto[server] not installed")

BUCKET = "empathy-test"
TWO = EMOTIONS[:2]
RANGE_TWO = {"dagster/asset_partition_range_start": TWO[0], "dagster/asset_partition_range_end": TWO[1]}


@pytest.fixture(scope="module")
def endpoint():
    with moto_endpoint() as url:
        yield url


@pytest.fixture
def s3(endpoint):
    from empathy_dag.storage_s3 import s3_client

    client = s3_client(endpoint)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET in existing:  # a clean bucket per test
        keys = [
            o["Key"]
            for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in p.get("Contents", [])
        ]
        for k in keys:
            client.delete_object(Bucket=BUCKET, Key=k)
    else:
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def aws_env(endpoint):
    return {
        "EMPATHY_DAG_S3_BUCKET": BUCKET,
        "EMPATHY_DAG_S3_PREFIX": "run1",
        "EMPATHY_DAG_S3_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
    }


def _keys(client, prefix: str) -> list[str]:
    return sorted(
        o["Key"]
        for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for o in p.get("Contents", [])
    )


def test_profile_variable_picks_the_resources(monkeypatch, aws_env, tmp_path):
    from empathy_dag.defs.profiles import S3SyncedDuckDBPolarsIOManager, active_profile, resources_for

    monkeypatch.delenv("EMPATHY_DAG_PROFILE", raising=False)
    assert active_profile() == "local"
    monkeypatch.setenv("EMPATHY_DAG_DATA_DIR", str(tmp_path))
    assert resources_for()["parquet_io_manager"].base_dir == str(tmp_path / "parquet")
    monkeypatch.setenv("EMPATHY_DAG_PROFILE", "aws")
    for k, v in aws_env.items():
        monkeypatch.setenv(k, v)
    res = resources_for()
    assert res["parquet_io_manager"].base_dir == f"s3://{BUCKET}/run1/parquet"
    assert isinstance(res["warehouse_io_manager"], S3SyncedDuckDBPolarsIOManager)
    assert res["model_store"].s3_prefix == f"s3://{BUCKET}/run1/models"
    assert res["corpus_sources"].landing_s3_uri == f"s3://{BUCKET}/run1/landing/"
    monkeypatch.setenv("EMPATHY_DAG_PROFILE", "gcp")
    with pytest.raises(ValueError, match="expected one of"):
        active_profile()


def test_ingest_in_the_aws_profile_writes_everything_to_s3(s3, aws_env, tmp_path):
    from empathy_dag.defs.profiles import aws_resources

    # A file dropped in the landing zone with boto3, as a producer would.
    marker = "The harvest festival volunteers rebuilt the clinic garden in one weekend."
    row = {
        "emotion": TWO[0],
        "situation": marker,
        "speaker_utterance": "They did it in one weekend!",
        "listener_reply": "That is remarkable work; you must be proud of them.",
        "language": "en",
    }
    s3.put_object(Bucket=BUCKET, Key="run1/landing/drop/new.jsonl", Body=(json.dumps(row) + "\n").encode())
    s3.put_object(Bucket=BUCKET, Key="run1/landing/drop/half.jsonl.part", Body=b"{")  # still uploading

    resources = aws_resources(tmp_path / "task1", env=aws_env)
    instance = DagsterInstance.ephemeral()
    sql_dir = tmp_path / "sql"  # only the ingest stage's model; other stages add theirs to SQL_DIR
    sql_dir.mkdir()
    shutil.copy(SQL_DIR / "rows_per_emotion_source.sql", sql_dir)
    sql_assets = build_sql_model_assets(
        parquet_assets={"situations", "dialogues", "corpus_rows"},
        warehouse_tables={"emotion_taxonomy", "quarantine", "ingest_file_log"},
        sql_dir=sql_dir,
    )
    result = materialize(
        [emotion_taxonomy, ingest_corpus, situations, dialogues, *sql_assets],
        resources=resources,
        instance=instance,
        tags=RANGE_TWO,
    )
    assert result.success
    for key in ("situations", "dialogues"):
        mats = [m for m in result.get_asset_materialization_events() if m.asset_key == AssetKey(key)]
        assert sorted(m.partition for m in mats) == sorted(TWO)
        assert _keys(s3, f"run1/parquet/{key}/") == sorted(f"run1/parquet/{key}/{e}.parquet" for e in TWO)
    assert "run1/parquet/corpus_rows.parquet" in _keys(s3, "run1/parquet/")

    # Read back from the bucket, not from any local file.
    opts = {"aws_endpoint_url": aws_env["EMPATHY_DAG_S3_ENDPOINT_URL"]}
    first = pl.read_parquet(f"s3://{BUCKET}/run1/parquet/situations/{TWO[0]}.parquet", storage_options=opts)
    assert (first["emotion"] == TWO[0]).all() and marker in first["situation"].to_list()
    assert not list((tmp_path / "task1").rglob("*.parquet"))
    assert (tmp_path / "task1" / "landing" / "drop__new.jsonl").is_file()
    assert not (tmp_path / "task1" / "landing" / "drop__half.jsonl.part").exists()

    # The warehouse file is on S3: a fresh download holds the tables and the SQL model.
    got = tmp_path / "downloaded.duckdb"
    s3.download_file(BUCKET, "run1/warehouse/warehouse.duckdb", str(got))
    with duckdb.connect(str(got), read_only=True) as conn:
        assert conn.execute("select count(*) from main.emotion_taxonomy").fetchone()[0] == 28
        table = conn.execute("select * from main.rows_per_emotion_source").pl()
    assert set(table["emotion"]) == set(TWO)
    assert table.filter((pl.col("source") == "seed") & (pl.col("language") == "en"))["situations"].min() >= 10

    # A fresh task (empty cache) continues from S3 alone: dialogues re-read corpus_rows and situations.
    fresh = aws_resources(tmp_path / "task2", env=aws_env)
    again = materialize(
        [emotion_taxonomy, ingest_corpus, situations, dialogues],
        selection=[dialogues],
        resources=fresh,
        instance=instance,
        partition_key=TWO[1],
    )
    assert again.success


def _tiny_model_folder(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"hidden_size": 4}))
    (folder / "sub").mkdir()
    (folder / "sub" / "tokenizer.json").write_text("{}")


def test_model_store_publish_and_fetch_verify_sha256(s3, endpoint, tmp_path):
    from empathy_dag.models import sha256_tree
    from empathy_dag.resources import ModelStore
    from empathy_dag.storage_s3 import folder_manifest

    prefix = f"s3://{BUCKET}/models"
    writer = ModelStore(root=str(tmp_path / "a"), s3_prefix=prefix, endpoint_url=endpoint)
    _tiny_model_folder(writer.folder("adapter"))
    uri = writer.publish("adapter")
    assert uri == f"{prefix}/adapter"
    assert _keys(s3, "models/adapter/") == sorted(
        [
            "models/adapter/_manifest.json",
            "models/adapter/config.json",
            "models/adapter/model.safetensors",
            "models/adapter/sub/tokenizer.json",
        ]
    )
    manifest = folder_manifest(writer.folder("adapter"))
    assert writer.published_sha256("adapter") == manifest["sha256"]

    reader = ModelStore(root=str(tmp_path / "b"), s3_prefix=prefix, endpoint_url=endpoint)
    got = reader.fetch("adapter")
    assert got == tmp_path / "b" / "adapter"
    assert sha256_tree(got) == sha256_tree(writer.folder("adapter"))
    assert folder_manifest(got)["sha256"] == manifest["sha256"]

    # A corrupted or stray local file is repaired on the next fetch.
    (got / "config.json").write_text("corrupted")
    (got / "stray.bin").write_bytes(b"x")
    reader.fetch("adapter")
    assert json.loads((got / "config.json").read_text()) == {"hidden_size": 4}
    assert not (got / "stray.bin").exists()

    # An object altered on S3 behind the manifest's back is refused.
    s3.put_object(Bucket=BUCKET, Key="models/adapter/config.json", Body=b"tampered")
    shutil.rmtree(got)
    with pytest.raises(IOError, match="sha256"):
        reader.fetch("adapter")
    with pytest.raises(FileNotFoundError, match="nothing was published"):
        reader.fetch("never_published")

    # Local only: fetch is the folder itself, publish refuses.
    local = ModelStore(root=str(tmp_path / "c"))
    assert local.fetch("x") == tmp_path / "c" / "x"
    with pytest.raises(ValueError, match="local only"):
        local.publish("x")


def test_landing_listing_and_download(s3, tmp_path):
    from empathy_dag.storage_s3 import download_landing_object, list_landing_objects

    s3.put_object(Bucket=BUCKET, Key="landing/a.jsonl", Body=b"1")
    s3.put_object(Bucket=BUCKET, Key="landing/sub/b.csv", Body=b"22")
    s3.put_object(Bucket=BUCKET, Key="landing/c.jsonl.tmp", Body=b"3")
    s3.put_object(Bucket=BUCKET, Key="landing/.hidden", Body=b"4")
    s3.put_object(Bucket=BUCKET, Key="elsewhere/d.jsonl", Body=b"5")
    objects = list_landing_objects(s3, BUCKET, "landing/")
    assert [(k, size) for k, _, size in objects] == [("landing/a.jsonl", 1), ("landing/sub/b.csv", 2)]
    key, etag, _ = objects[1]
    path = download_landing_object(s3, BUCKET, key, "landing/", tmp_path, etag)
    assert path == tmp_path / "sub__b.csv" and path.read_bytes() == b"22"
    mtime = path.stat().st_mtime_ns
    assert download_landing_object(s3, BUCKET, key, "landing/", tmp_path, etag).stat().st_mtime_ns == mtime
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"333")
    _, new_etag, _ = list_landing_objects(s3, BUCKET, "landing/")[1]
    assert download_landing_object(s3, BUCKET, key, "landing/", tmp_path, new_etag).read_bytes() == b"333"

    # Review decisions under landing/reviews/ land in the reviews subfolder, never among corpus files.
    s3.put_object(Bucket=BUCKET, Key="landing/reviews/alice.jsonl", Body=b"{}")
    key, etag, _ = next(
        o for o in list_landing_objects(s3, BUCKET, "landing/") if o[0].endswith("alice.jsonl")
    )
    path = download_landing_object(s3, BUCKET, key, "landing/", tmp_path, etag)
    assert path == tmp_path / "reviews" / "alice.jsonl"


def test_landing_sensor_on_s3_requests_the_emotion_of_a_file_put_with_boto3(s3, aws_env, tmp_path):
    """The aws profile's landing zone is the S3 prefix: a file a producer uploads with boto3 is picked up
    by the sensor on its next tick, which asks for a run of exactly that file's emotion (run_key = the
    content sha256); the run ingests it from S3 and writes that partition to the bucket."""
    import hashlib

    from dagster import Definitions, build_sensor_context, instance_for_test

    from empathy_dag.defs.ingest.jobs import LANDING_JOB_NAME, landing_ingest_job
    from empathy_dag.defs.ingest.sensors import build_landing_sensor
    from empathy_dag.defs.profiles import aws_resources
    from empathy_dag.defs.review.jobs import review_decisions_job
    from empathy_dag.defs.review.sensors import build_review_inbox_sensor
    from empathy_dag.settings import REVIEW_FILES_TAG, AutomationSettings
    from empathy_dag.warehouse.tables import read_table
    from tests.stages import stage_assets

    resources = aws_resources(tmp_path / "task", env=aws_env)
    stage_assets = stage_assets()
    sensor = build_landing_sensor(AutomationSettings(settle_seconds=0))
    inbox = build_review_inbox_sensor(AutomationSettings(settle_seconds=0))
    defs = Definitions(
        assets=stage_assets,
        jobs=[landing_ingest_job, review_decisions_job],
        sensors=[sensor, inbox],
        resources=resources,
    )

    def tick(instance, cursor=None, which=sensor):
        ctx = build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
        result = which.evaluate_tick(ctx)
        return result.run_requests or [], result.cursor

    body = (
        json.dumps(
            {
                "emotion": "remorse",
                "situation": "I snapped at my mother during her chemo week.",
                "speaker_utterance": "I was so short with her.",
                "listener_reply": "That weighs on you; you can still tell her you are sorry.",
            }
        )
        + "\n"
    ).encode()
    with instance_for_test() as instance:
        requests, cursor = tick(instance)
        assert requests == []  # empty landing zone
        s3.put_object(Bucket=BUCKET, Key="run1/landing/clinic/remorse.jsonl", Body=body)
        s3.put_object(Bucket=BUCKET, Key="run1/landing/reviews/alice.jsonl", Body=b'{"item_id": "x"}\n')
        requests, cursor = tick(instance, cursor)
        main = [r for r in requests if not r.asset_selection]
        assert [r.partition_key for r in main] == ["remorse"]
        assert main[0].run_key == hashlib.sha256(body).hexdigest()
        assert (
            main[0].tags["empathy_dag/landing_file"] == "clinic/remorse.jsonl"
        )  # reviews/ is not a corpus file
        with resources["warehouse"].connect() as conn:
            log = read_table(conn, "landing_log")
        assert log["file"].to_list() == ["clinic/remorse.jsonl"] and log["outcome"].to_list() == ["accepted"]

        # The requested run (its ingest assets) reads the file from S3 and writes that partition there.
        job = defs.resolve_job_def(LANDING_JOB_NAME)
        keys = [
            k
            for k in job.asset_layer.executable_asset_keys
            if k.to_user_string() in {"corpus_rows", "quarantine", "ingest_file_log", "situations"}
        ]
        tags = {**main[0].tags, "dagster/run_key": main[0].run_key}
        assert job.execute_in_process(
            instance=instance, partition_key="remorse", tags=tags, asset_selection=keys
        ).success
        opts = {"aws_endpoint_url": aws_env["EMPATHY_DAG_S3_ENDPOINT_URL"]}
        rows = pl.read_parquet(f"s3://{BUCKET}/run1/parquet/situations/remorse.parquet", storage_options=opts)
        assert "I snapped at my mother during her chemo week." in rows["situation"].to_list()
        assert (tmp_path / "task" / "landing" / "reviews" / "alice.jsonl").is_file()
        assert not list((tmp_path / "task" / "landing").glob("reviews__*"))

        # The same tick again finds nothing new.
        again, _ = tick(instance, cursor)
        assert again == []

        # The review inbox is the reviews/ prefix: the decision file is the review sensor's, and only its.
        reviews, inbox_cursor = tick(instance, None, inbox)
        assert len(reviews) == 1 and list(json.loads(reviews[0].tags[REVIEW_FILES_TAG])["changed"]) == [
            "alice.jsonl"
        ]
        assert tick(instance, inbox_cursor, inbox)[0] == []


def test_warehouse_file_on_s3_refuses_lost_updates(s3, endpoint, tmp_path):
    from empathy_dag.defs.warehouse.resource import Warehouse
    from empathy_dag.storage_s3 import ConcurrentUpdateError

    uri = f"s3://{BUCKET}/wh/warehouse.duckdb"
    a = Warehouse(
        database=str(tmp_path / "a.duckdb"), parquet_base_dir=str(tmp_path), s3_uri=uri, endpoint_url=endpoint
    )
    b = Warehouse(
        database=str(tmp_path / "b.duckdb"), parquet_base_dir=str(tmp_path), s3_uri=uri, endpoint_url=endpoint
    )
    with a.connect() as conn:
        conn.execute("create table t as select 1 as x")
    with b.connect() as conn:  # b downloads a's version, adds a row, uploads
        conn.execute("insert into t values (2)")
    # b downloads the current version and changes its working copy while a writes and uploads.
    synced_b = b._synced_file()
    synced_b.pull()
    with duckdb.connect(str(tmp_path / "b.duckdb")) as conn:
        conn.execute("insert into t values (99)")
    with a.connect() as conn:
        conn.execute("insert into t values (3)")
    with pytest.raises(ConcurrentUpdateError):
        synced_b.push()  # b started from the version before a's upload: it must not overwrite it
    with a.connect(read_only=True) as conn:
        assert sorted(r[0] for r in conn.execute("select x from t").fetchall()) == [1, 2, 3]


def test_landing_decision_streams_a_large_s3_object_like_a_local_file(s3, tmp_path):
    """A landing file over one block is validated from the S3 body block by block (never downloaded whole):
    the same decision as the same file in a local landing folder."""
    from empathy_dag.ingest.landing import LocalLandingZone, S3LandingZone, decide_file
    from empathy_dag.ingest.records import ValidationLimits
    from empathy_dag.taxonomy import default_taxonomy

    rows = [
        {"emotion": EMOTIONS[i % 5], "situation": f"Day {i % 700} of waiting for the scan results, again."}
        for i in range(900)
    ]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode() + b"not json\n"
    s3.put_object(Bucket=BUCKET, Key="landing/big.jsonl", Body=body)
    (tmp_path / "big.jsonl").write_bytes(body)
    limits, tax = ValidationLimits(stream_block_mb=4096 / 1024 / 1024), default_taxonomy()  # 4 KB blocks
    decisions = []
    for zone in (S3LandingZone(s3, BUCKET, "landing/"), LocalLandingZone(tmp_path)):
        (file,) = zone.list_files()
        decisions.append(decide_file(zone, file, zone.sha256(file), taxonomy=tax, limits=limits))
    s3_decision, local = decisions
    assert s3_decision.outcome == local.outcome == "accepted" and s3_decision.sha256 == local.sha256
    assert (
        (s3_decision.rows_in, s3_decision.valid_rows, s3_decision.reasons, s3_decision.emotions)
        == (local.rows_in, local.valid_rows, local.reasons, local.emotions)
        == (
            901,
            700,
            {"duplicate_id": 200, "invalid_json": 1},
            [e for e in EMOTIONS if e in set(EMOTIONS[:5])],
        )
    )
