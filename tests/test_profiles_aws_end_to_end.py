"""The README's demo command (tiny profile) in the `aws` profile: the same command, with only the
environment changed, against S3 on loopback (moto_server) and a real PostgreSQL server holding the Dagster
instance. Data, checkpoints, the warehouse file and the landing zone live in the bucket; training runs as
a Dagster Pipes step in a subprocess that shares no disk with the run (as an ECS task would), so it has to
fetch its inputs from S3 and publish its adapter there.

One demo run is shared by the tests of this module (it is the slowest thing here)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from empathy_dag.taxonomy import EMOTIONS
from tests.aws_stack import aws_stack, aws_stack_available, clean_environment
from tests.postgres_server import pg_query

pytestmark = pytest.mark.skipif(aws_stack_available() is not None, reason=str(aws_stack_available()))

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BUCKET, PREFIX = "empathy-e2e", "tiny"


@pytest.fixture(scope="module")
def aws_demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("aws_profile")
    with aws_stack(work, bucket=BUCKET, prefix=PREFIX) as env:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "empathy_dag", "demo", "--profile", "tiny"],
            env={**clean_environment(), **env},
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        seconds = time.perf_counter() - start
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "demo_tiny_aws.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield {"env": env, "work": work, "stdout": proc.stdout, "seconds": seconds}


def _s3(env):
    from empathy_dag.storage_s3 import s3_client

    return s3_client(env["EMPATHY_DAG_S3_ENDPOINT_URL"])


def _keys(env, prefix: str) -> list[str]:
    pages = _s3(env).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}")
    return sorted(o["Key"][len(PREFIX) + 1 :] for p in pages for o in p.get("Contents", []))


def _pg(env, query: str, *args):
    settings = {
        "host": env["DAGSTER_PG_HOST"],
        "port": env["DAGSTER_PG_PORT"],
        "user": env["DAGSTER_PG_USERNAME"],
        "db_name": env["DAGSTER_PG_DB"],
    }
    return pg_query(settings, query, *args)


def test_tiny_pipeline_runs_in_the_aws_profile(aws_demo):
    out = aws_demo["stdout"]
    assert "main_job succeeded" in out and "Leaderboard" in out
    env = aws_demo["env"]
    # Every per-emotion asset has one Parquet object per emotion in the bucket ...
    for asset in ("situations", "dialogues", "curated_dialogues", "dataset_splits", "preference_pairs"):
        assert _keys(env, f"parquet/{asset}/") == sorted(f"parquet/{asset}/{e}.parquet" for e in EMOTIONS), (
            asset
        )
    # ... and none on the run's disk but inside model-store folders (working copies of what is on S3).
    cache = aws_demo["work"] / "run_cache"
    assert not [p for p in cache.rglob("*.parquet") if p.relative_to(cache).parts[0] != "models"]
    assert "models/reference_logprobs/cache.parquet" in _keys(env, "models/reference_logprobs/")
    # Checkpoints are published folders with a manifest (and the adapters with their model card).
    models = _keys(env, "models/")
    for name in ("base_model", "sft_checkpoint", "dpo_checkpoint"):
        assert f"models/{name}/_manifest.json" in models, name
        assert f"models/{name}/README.md" in models or name == "base_model"
    # The warehouse is one object on S3; a fresh download has the leaderboard of all three systems.
    db = aws_demo["work"] / "downloaded.duckdb"
    _s3(env).download_file(BUCKET, f"{PREFIX}/warehouse/warehouse.duckdb", str(db))
    with duckdb.connect(str(db), read_only=True) as conn:
        systems = {r[0] for r in conn.execute("select distinct system from main.leaderboard").fetchall()}
    assert {"base", "sft", "dpo"} <= systems


def test_dataset_export_lands_on_s3_and_loads(aws_demo):
    """With no destination configured the export goes beside the models: on S3 in this profile, with a
    manifest written last. A download of it loads with `datasets`, adapters and card included."""
    env, work = aws_demo["env"], aws_demo["work"]
    name = "empathy_dag_dialogues"
    keys = _keys(env, f"export/{name}/")
    for part in (
        "_manifest.json",
        "README.md",
        "provenance.json",
        "dialogues/train-00000-of-00001.parquet",
        "preference_pairs/train-00000-of-00001.parquet",
        "adapters/dpo_checkpoint/adapter_model.safetensors",
    ):
        assert f"export/{name}/{part}" in keys, part
    home = Path(env["DAGSTER_HOME"])
    assert not list(home.rglob("export")), "the export was also written to the run's disk"
    from datasets import load_dataset

    from empathy_dag.storage_s3 import download_folder

    folder = work / "export_download"
    manifest = download_folder(_s3(env), BUCKET, f"{PREFIX}/export/{name}", folder)
    assert set(manifest["files"]) == {k.removeprefix(f"export/{name}/") for k in keys} - {"_manifest.json"}
    dialogues = load_dataset("parquet", data_dir=str(folder / "dialogues"))
    assert dialogues["train"].num_rows > 0
    pairs = load_dataset("parquet", data_dir=str(folder / "preference_pairs"))
    assert {"prompt", "chosen", "rejected"} <= set(pairs["train"].column_names)
    provenance = json.loads((folder / "provenance.json").read_text())
    from empathy_dag.models import sha256_tree

    assert provenance["adapters"]["dpo_checkpoint"] == sha256_tree(
        work / "run_cache" / "models" / "dpo_checkpoint"
    )


def test_training_ran_through_pipes_without_the_runs_disk(aws_demo):
    """The SFT and DPO steps fetched the base model and their records from S3 into their own cache, and
    the adapters they published are the ones the run recorded (sha256 in the manifest = metadata)."""
    env, work = aws_demo["env"], aws_demo["work"]
    step_cache = work / "step_cache"
    assert (step_cache / "base_model" / "config.json").is_file()
    assert (step_cache / "work" / "sft_checkpoint_records" / "records.jsonl").is_file()
    assert (step_cache / "dpo_checkpoint" / "adapter_model.safetensors").is_file()
    rows = _pg(env, "select event from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")
    published = {}
    for (raw,) in rows:
        event = json.loads(raw)
        mat = event["dagster_event"]["event_specific_data"]["materialization"]
        key = mat["asset_key"]["path"][-1]
        if key in ("sft_checkpoint", "dpo_checkpoint"):
            meta = {e["label"]: e["entry_data"] for e in mat.get("metadata_entries", [])} or mat.get(
                "metadata", {}
            )
            published[key] = meta
    assert set(published) == {"sft_checkpoint", "dpo_checkpoint"}
    from empathy_dag.models import sha256_tree

    for key in published:
        manifest = json.loads(
            _s3(env).get_object(Bucket=BUCKET, Key=f"{PREFIX}/models/{key}/_manifest.json")["Body"].read()
        )
        assert "adapter_model.safetensors" in manifest["files"]
        assert sha256_tree(step_cache / key) == sha256_tree(work / "run_cache" / "models" / key)
    # The step's own log lines came back through Pipes into the run's event log (in Postgres).
    logs = [
        json.loads(r[0])["user_message"]
        for r in _pg(env, "select event from event_logs where dagster_event_type is null")
    ]
    assert any("heavy step empathy_dag.train.steps:train_sft starting" in m for m in logs)
    assert any(m.startswith("dpo: ") and "steps on cpu" in m for m in logs)


def test_the_instance_is_postgres(aws_demo):
    env = aws_demo["env"]
    runs = _pg(env, "select status from runs")
    assert [r[0] for r in runs] == ["SUCCESS"]
    n = _pg(env, "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")[0][0]
    assert n >= 28 * 5
