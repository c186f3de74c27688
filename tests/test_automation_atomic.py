"""A run killed with SIGKILL while it writes a partition leaves no partial Parquet readable as complete,
and the next run completes the partition (EmotionParquetIOManager writes temp file + rename)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

CHILD = textwrap.dedent('''
    import io, sys, time
    import polars as pl
    from dagster import DagsterInstance, asset, materialize
    from empathy_dag.io_managers import EmotionParquetIOManager
    from empathy_dag.partitions import emotion_partitions, single_run

    base_dir, version, stall = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "stall"
    if stall:
        real = pl.DataFrame.write_parquet
        def half_then_hang(self, target, **kw):
            buf = io.BytesIO()
            real(self, buf)
            data = buf.getvalue()
            if hasattr(target, "write"):
                target.write(data[: len(data) // 2]); target.flush()
            else:
                with open(target, "wb") as fh:
                    fh.write(data[: len(data) // 2]); fh.flush()
            print("HALF_WRITTEN", flush=True)
            time.sleep(120)
        pl.DataFrame.write_parquet = half_then_hang

    @asset(partitions_def=emotion_partitions, backfill_policy=single_run, io_manager_key="parquet_io_manager")
    def frames(context):
        return {e: pl.DataFrame({"emotion": [e] * 20_000, "version": [version] * 20_000})
                for e in context.partition_keys}

    materialize([frames], partition_key="joy", instance=DagsterInstance.ephemeral(),
                resources={"parquet_io_manager": EmotionParquetIOManager(base_dir=base_dir)})
    print("DONE", flush=True)
''')


def _run(base_dir: Path, version: int, stall: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(base_dir), str(version), "stall" if stall else "normal"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).parent.parent,
    )


def _kill_when_half_written(proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        if "HALF_WRITTEN" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _complete_files(folder: Path) -> list[Path]:
    """What a reader of the asset sees: `<partition>.parquet` (the warehouse globs *.parquet)."""
    return sorted(folder.glob("*.parquet"))


@pytest.mark.timeout(240)
def test_sigkill_mid_write_leaves_no_partial_parquet_and_next_run_completes(tmp_path):
    target = tmp_path / "frames" / "joy.parquet"

    # 1. Killed during the first write: no file reads as the partition.
    _kill_when_half_written(_run(tmp_path, 1, stall=True))
    assert not target.exists()
    assert _complete_files(tmp_path / "frames") == []

    # 2. The next run completes it.
    proc = _run(tmp_path, 1, stall=False)
    assert "DONE" in proc.communicate(timeout=120)[0]
    assert pl.read_parquet(target)["version"].unique().to_list() == [1]

    # 3. Killed while overwriting: the previous complete version is still what readers get.
    _kill_when_half_written(_run(tmp_path, 2, stall=True))
    assert pl.read_parquet(target).height == 20_000
    assert pl.read_parquet(target)["version"].unique().to_list() == [1]
    assert [p.name for p in _complete_files(tmp_path / "frames")] == ["joy.parquet"]

    # The killed writes left their temp files (a SIGKILL runs no `finally`)...
    assert list((tmp_path / "frames").glob(".joy.parquet.*.tmp"))

    # 4. And the next run replaces it whole, and sweeps the dead writers' temp files.
    proc = _run(tmp_path, 2, stall=False)
    assert "DONE" in proc.communicate(timeout=120)[0]
    assert pl.read_parquet(target)["version"].unique().to_list() == [2]
    assert list((tmp_path / "frames").glob(".joy.parquet.*.tmp")) == []


def test_interrupted_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    from empathy_dag.models import STALE_TEMP_AFTER_S, remove_interrupted_temps, temp_name_for

    target = tmp_path / "joy.parquet"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = target.with_name(f".joy.parquet.{finished.stdout.strip()}-abc.tmp")
    live = temp_name_for(target)  # this process: alive
    old_format = target.with_name(".joy.parquet.0123456789abcdef.tmp")
    other = target.with_name(".sadness.parquet.1-abc.tmp")  # another target's: not ours to judge
    for p in (dead, live, old_format, other):
        p.write_bytes(b"partial")
    now = __import__("time").time()
    assert sorted(remove_interrupted_temps(target, now=now)) == [dead]
    assert sorted(remove_interrupted_temps(target, now=now + 120)) == [old_format]
    assert live.exists() and other.exists()
    assert remove_interrupted_temps(target, now=now + STALE_TEMP_AFTER_S + 1) == [live]


def test_run_monitoring_is_on_in_both_instance_configs():
    """A run whose worker died is failed by the daemon, so the landing queue moves (issue 18)."""
    import yaml
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema

    root = Path(__file__).parent.parent / "resources"
    for path in (root / "dagster.yaml", root / "aws" / "dagster.yaml"):
        config = yaml.safe_load(path.read_text())
        monitoring = config["run_monitoring"]
        assert monitoring["enabled"] is True, path
        assert monitoring["max_runtime_seconds"] > 0 and monitoring["free_slots_after_run_end_seconds"] > 0
        result = process_config(dagster_instance_config_schema(), {"run_monitoring": monitoring})
        assert result.success, result.errors


INGEST_CHILD = textwrap.dedent('''
    import os, signal, sys
    from dagster import DagsterInstance, materialize
    from dagster._core.storage.db_io_manager import DbIOManager
    from empathy_dag.definitions import local_resources
    from empathy_dag.ingest.assets import emotion_taxonomy, ingest_corpus

    root, kill = sys.argv[1], sys.argv[2] == "kill"
    if kill:
        real = DbIOManager.handle_output
        def killed_between_outputs(self, context, obj):
            if context.name == "quarantine":  # corpus_rows is written, quarantine and the log are not
                print("KILLING", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, context, obj)
        DbIOManager.handle_output = killed_between_outputs
    resources = local_resources(root)
    assert materialize([emotion_taxonomy, ingest_corpus], resources=resources,
                       instance=DagsterInstance.ephemeral()).success
    print("DONE", flush=True)
''')


@pytest.mark.timeout(300)
def test_sigkill_between_ingest_outputs_and_the_next_run_completes_consistently(tmp_path):
    """A real SIGKILL after corpus_rows is written and before quarantine / ingest_file_log: the next run
    completes, and its three outputs describe the same set of files."""
    import duckdb

    root = tmp_path / "data"
    landing = root / "landing"
    landing.mkdir(parents=True)

    def run(kill: bool) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", INGEST_CHILD, str(root), "kill" if kill else "ok"],
                              check=False, capture_output=True, text=True, timeout=240,
                              cwd=Path(__file__).parent.parent)

    (landing / "a.jsonl").write_text('{"emotion": "joy", "situation": "We won the league after ten years."}\n')
    assert "DONE" in run(kill=False).stdout
    (landing / "b.jsonl").write_text('{"emotion": "anger", "situation": "Someone keyed my car at the clinic."}\n'
                                     '{"emotion": "hangry", "situation": "not a label"}\n')
    killed = run(kill=True)
    assert killed.returncode == -signal.SIGKILL and "KILLING" in killed.stdout
    assert "DONE" in run(kill=False).stdout

    corpus = pl.read_parquet(root / "parquet" / "corpus_rows.parquet")
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as conn:
        log = conn.execute("select file, valid, quarantined from main.ingest_file_log").pl()
        quarantine = conn.execute("select file, reason_code from main.quarantine").pl()
    landed = corpus.filter(pl.col("source_file").str.contains("/landing/"))
    assert sorted(Path(f).name for f in landed["source_file"]) == ["a.jsonl", "b.jsonl"]
    assert set(quarantine["file"]) <= set(log["file"]) and set(corpus["source_file"]) <= set(log["file"])
    by_file = {Path(f).name: (v, q) for f, v, q in log.iter_rows() if "/landing/" in f}
    assert by_file == {"a.jsonl": (1, 0), "b.jsonl": (1, 1)}
    assert quarantine.filter(pl.col("file").str.ends_with("b.jsonl"))["reason_code"].to_list() == ["unknown_emotion"]
