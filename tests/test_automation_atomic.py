"""A run killed with SIGKILL while it writes a partition leaves no partial Parquet readable as complete,
and the next run completes the partition (EmotionParquetIOManager writes temp file + rename)."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from empathy_dag.ingest.records import CORPUS_SCHEMA

CHILD = textwrap.dedent("""
    import io, sys, time
    import polars as pl
    from dagster import DagsterInstance, asset, materialize
    from empathy_dag.defs.io_managers import EmotionParquetIOManager
    from empathy_dag.defs.partitions import emotion_partitions, single_run

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
""")


def _run(base_dir: Path, version: int, stall: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(base_dir), str(version), "stall" if stall else "normal"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parent.parent,
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
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
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


INGEST_CHILD = textwrap.dedent("""
    import os, signal, sys
    from dagster import DagsterInstance, materialize
    from empathy_dag.defs import io_managers
    from empathy_dag.defs.profiles import local_resources
    from empathy_dag.defs.ingest.assets import emotion_taxonomy, ingest_corpus

    root, mode = sys.argv[1], sys.argv[2]

    def kill(where):
        print("KILLING", where, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "kill_staged":  # corpus_rows staged, quarantine and the file log not yet
        real = io_managers._AllOrNothing.handle_output
        def staged_then_killed(self, context, obj):
            if context.name == "quarantine":
                kill("after staging corpus_rows")
            return real(self, context, obj)
        io_managers._AllOrNothing.handle_output = staged_then_killed
    elif mode == "kill_applying":  # committed; corpus_rows renamed into place, DuckDB not yet written
        real = io_managers.EmotionParquetIOManager.handle_output
        def applied_then_killed(self, context, obj):
            real(self, context, obj)
            kill("between the Parquet rename and the DuckDB transaction")
        io_managers.EmotionParquetIOManager.handle_output = applied_then_killed
    resources = local_resources(root)
    assert materialize([emotion_taxonomy, ingest_corpus], resources=resources,
                       instance=DagsterInstance.ephemeral()).success
    print("DONE", flush=True)
""")

# corpus_rows' column holding the landing file (by name: columns may be added to the corpus schema)
SOURCE_FILE = list(CORPUS_SCHEMA).index("source_file")

FILE_A = '{"emotion": "joy", "situation": "We won the league after ten years."}\n'
FILE_B = (
    '{"emotion": "anger", "situation": "Someone keyed my car at the clinic."}\n'
    '{"emotion": "hangry", "situation": "not a label"}\n'
)


def _ingest_state(root: Path) -> dict[str, list]:
    """The three outputs as readers see them, with the data root taken out of file names (so that two
    roots compare), rows sorted."""
    import duckdb

    def rows(frame: pl.DataFrame) -> list:
        frame = frame.with_columns(pl.col(pl.String).str.replace_all(str(root), "<root>", literal=True))
        return sorted(frame.iter_rows(), key=repr)

    state = {"corpus_rows": rows(pl.read_parquet(root / "parquet" / "corpus_rows.parquet"))}
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as conn:
        for table in ("quarantine", "ingest_file_log"):
            state[table] = rows(conn.execute(f"select * from main.{table}").pl())
    return state


def _names(rows: list, column: int) -> list[str]:
    """The landing files named in `column` of `rows` (the shipped seed files are ingested too)."""
    return sorted(Path(r[column]).name for r in rows if "/landing/" in r[column])


def _ingest_in_process(root: Path) -> bool:
    from dagster import DagsterInstance, materialize

    from empathy_dag.defs.ingest.assets import emotion_taxonomy, ingest_corpus
    from empathy_dag.defs.profiles import local_resources

    return materialize(
        [emotion_taxonomy, ingest_corpus],
        resources=local_resources(root),
        raise_on_error=False,
        instance=DagsterInstance.ephemeral(),
    ).success


@pytest.mark.timeout(300)
def test_ingest_outputs_are_all_or_nothing_under_sigkill_and_the_rerun_equals_a_clean_run(tmp_path):
    """Real SIGKILLs at the two write points of the three ingest outputs: after one output is staged
    (nothing visible changes) and after the commit, between the Parquet rename and the DuckDB transaction
    (the journal is finished by the next user); the re-run equals a clean run, no row lost or doubled."""
    from dagster import DagsterInstance, asset, materialize

    from empathy_dag.defs.ingest.assets import emotion_taxonomy, ingest_corpus
    from empathy_dag.defs.io_managers import STAGING_COMMIT
    from empathy_dag.defs.profiles import local_resources

    root = tmp_path / "data"
    landing = root / "landing"
    landing.mkdir(parents=True)

    def killed_run(mode: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", INGEST_CHILD, str(root), mode],
            check=False,
            capture_output=True,
            text=True,
            timeout=240,
            cwd=Path(__file__).parent.parent,
        )
        assert proc.returncode == -signal.SIGKILL and "KILLING" in proc.stdout, proc.stderr[-2000:]

    (landing / "a.jsonl").write_text(FILE_A)
    assert _ingest_in_process(root)
    before = _ingest_state(root)
    assert _names(before["ingest_file_log"], 0) == ["a.jsonl"] and before["quarantine"] == []

    # 1. Killed with corpus_rows staged: the previous materialization is exactly what readers see.
    (landing / "b.jsonl").write_text(FILE_B)
    killed_run("kill_staged")
    assert _ingest_state(root) == before
    staging = root / "staging"
    assert [p.name for p in staging.iterdir()] and not list(staging.glob(f"*/{STAGING_COMMIT}"))

    # 2. Killed after the commit point, half applied. The next user of the IO manager (here a step that
    # loads corpus_rows) finishes the dead run's journal and drops the uncommitted one, so all three agree.
    killed_run("kill_applying")
    assert len(list(staging.glob(f"*/{STAGING_COMMIT}"))) == 1
    half = _ingest_state(root)
    assert half["quarantine"] == [] and "b.jsonl" in _names(
        half["corpus_rows"], SOURCE_FILE
    )  # the torn state
    loaded = {}

    @asset
    def reads_corpus_rows(corpus_rows: pl.DataFrame) -> None:
        loaded["rows"] = corpus_rows.height

    assert materialize(
        [emotion_taxonomy, ingest_corpus, reads_corpus_rows],
        selection="reads_corpus_rows",
        resources=local_resources(root),
        instance=DagsterInstance.ephemeral(),
    ).success
    recovered = _ingest_state(root)
    assert loaded["rows"] == len(recovered["corpus_rows"])
    assert [r[3] for r in recovered["quarantine"]] == ["unknown_emotion"]
    assert (
        _names(recovered["corpus_rows"], SOURCE_FILE) == ["a.jsonl", "b.jsonl"]
        and list(staging.iterdir()) == []
    )

    # 3. The re-run after the faults gives exactly what a clean run over the same files gives.
    assert _ingest_in_process(root)
    clean = tmp_path / "clean"
    shutil.copytree(landing, clean / "landing")
    assert _ingest_in_process(clean)
    rerun = _ingest_state(root)
    assert rerun == _ingest_state(clean) == recovered
    landed = [r for r in rerun["corpus_rows"] if "/landing/" in r[SOURCE_FILE]]
    assert len(landed) == 2 and len({r[0] for r in rerun["corpus_rows"]}) == len(rerun["corpus_rows"])


def test_an_exception_while_staging_the_ingest_outputs_changes_nothing(tmp_path, monkeypatch):
    """A writer raising half-way (disk full on the second output) fails the run and leaves the previous
    three outputs and no staging folder; the next run lands all three."""
    import errno

    root = tmp_path / "data"
    (root / "landing").mkdir(parents=True)
    (root / "landing" / "a.jsonl").write_text(FILE_A)

    def ingest() -> bool:
        return _ingest_in_process(root)

    assert ingest()
    before = _ingest_state(root)
    (root / "landing" / "b.jsonl").write_text(FILE_B)
    real, calls = pl.DataFrame.write_parquet, []

    def disk_full_on_second(self, target, *args, **kwargs):
        calls.append(str(target))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)", str(target))
        return real(self, target, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", disk_full_on_second)
    assert not ingest()
    assert "staging" in calls[1] and _ingest_state(root) == before
    assert list((root / "staging").iterdir()) == []
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real)
    assert ingest()
    after = _ingest_state(root)
    assert _names(after["corpus_rows"], SOURCE_FILE) == ["a.jsonl", "b.jsonl"]
    assert [r[3] for r in after["quarantine"]] == ["unknown_emotion"]
