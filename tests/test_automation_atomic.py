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

    # 4. And the next run replaces it whole.
    proc = _run(tmp_path, 2, stall=False)
    assert "DONE" in proc.communicate(timeout=120)[0]
    assert pl.read_parquet(target)["version"].unique().to_list() == [2]
