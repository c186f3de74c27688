"""A non-editable install (`pip install .`) carries the design card's folders: the definitions loaded from the
installed wheel alone, far from the source tree, have every SQL model, prompt and taxonomy file."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, empathy_dag
from empathy_dag.settings import assets_dir, shipped_dir
from empathy_dag.definitions import defs
keys = sorted(k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys())
print(json.dumps({"package": empathy_dag.__file__, "assets": str(assets_dir()), "sql": str(shipped_dir("dbt_like_sql")),
                  "keys": keys}))
"""


def test_wheel_install_loads_every_sql_model_and_asset_file(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(wheels.glob("empathy_dag-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )

    # Every file of the shipped folders is in the installed package, byte for byte.
    for name in ("assets", "dbt_like_sql", "resources"):
        source_files = {p.relative_to(ROOT / name) for p in (ROOT / name).rglob("*") if p.is_file()}
        installed = target / "empathy_dag" / "_shipped" / name
        assert source_files, name
        for rel in source_files:
            assert (installed / rel).read_bytes() == (ROOT / name / rel).read_bytes(), f"{name}/{rel}"

    env = {k: v for k, v in os.environ.items() if not k.startswith("EMPATHY_DAG_")}
    env.update(PYTHONPATH=str(target), DAGSTER_HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["package"].startswith(str(target)), probe["package"]  # the wheel's copy, not the checkout
    assert probe["assets"].startswith(str(target)) and probe["sql"].startswith(str(target))

    from empathy_dag.definitions import defs  # the checkout's definitions, for comparison

    checkout_keys = sorted(
        k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys()
    )
    assert probe["keys"] == checkout_keys
    sql_models = {p.stem for p in (ROOT / "dbt_like_sql").glob("*.sql")}
    assert sql_models <= set(probe["keys"]) and "leaderboard" in sql_models
