"""The README's demo command end to end (tiny profile), then the web UI in a real browser and the
lineage through the webserver's GraphQL API, on the instance the demo wrote.

One run of the demo is shared by every test here (module fixture): it is the slowest thing in the
suite, and everything after it only reads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from empathy_dag.taxonomy import EMOTIONS
from tests.loopback import free_port, wait_for_http

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(Path(__file__).resolve().parent.parent / "resources" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    for var in (
        "EMPATHY_DAG_DATA_DIR",
        "EMPATHY_DAG_DUCKDB",
        "EMPATHY_DAG_PARQUET_DIR",
        "EMPATHY_DAG_MODEL_DIR",
    ):
        env.pop(var, None)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "empathy_dag", "demo", "--profile", "tiny"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    seconds = time.perf_counter() - start
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "demo_tiny.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"home": home, "stdout": proc.stdout, "seconds": seconds}


def test_demo_runs_the_main_job_and_prints_the_leaderboard(demo):
    out = demo["stdout"]
    assert "main_job succeeded" in out
    assert "Leaderboard" in out
    for asset in (
        "situations",
        "dialogues",
        "synthetic_dialogues",
        "curated_dialogues",
        "preference_pairs",
        "sft_checkpoint",
        "dpo_checkpoint",
        "test_generations",
        "leaderboard",
        "dataset_export",
        "reviewed_dialogues",
        "promoted_model",
    ):
        assert f"  {asset} " in out, asset
    db = demo["home"] / "data" / "warehouse.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        systems = {r[0] for r in conn.execute("select distinct system from main.leaderboard").fetchall()}
        per_emotion = conn.execute("select count(distinct emotion) from main.situations").fetchone()[0]
        ja_rows = conn.execute("select count(*) from main.leaderboard where language = 'ja'").fetchone()[0]
    assert {"base", "sft", "dpo"} <= systems
    assert per_emotion == 28
    # The Japanese seed items are evaluated and reported on their own, after the overall leaderboard.
    assert ja_rows > 0 and "Language 'ja' only" in out


@pytest.fixture(scope="module")
def webserver(demo):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(demo["home"])}
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(root / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_http(f"{base}/server_info"):
            pytest.fail("dagster dev did not answer within 180 s")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        payload = json.loads(resp.read())
    assert "errors" not in payload, payload.get("errors")
    return payload["data"]


ASSET_QUERY = """
query Asset($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      groupName
      dependencyKeys { path }
      partitionKeys
      assetMaterializations(limit: 1) {
        partition
        metadataEntries { label __typename ... on JsonMetadataEntry { jsonString } ... on TextMetadataEntry { text } }
      }
    }
  }
}
"""


def test_lineage_of_the_dpo_checkpoint_reaches_the_preference_pair_partitions(webserver):
    dpo = graphql(webserver, ASSET_QUERY, {"path": ["dpo_checkpoint"]})["assetNodeOrError"]
    upstream = {tuple(k["path"]) for k in dpo["dependencyKeys"]}
    assert ("preference_pairs",) in upstream and ("sft_checkpoint",) in upstream
    meta = {e["label"]: e for e in dpo["assetMaterializations"][0]["metadataEntries"]}
    inputs = json.loads(meta["input_versions"]["jsonString"])
    assert set(inputs["preference_pairs"]) == set(EMOTIONS)  # a content hash per emotion partition
    pairs = graphql(webserver, ASSET_QUERY, {"path": ["preference_pairs"]})["assetNodeOrError"]
    assert pairs["partitionKeys"] == EMOTIONS
    splits = {tuple(k["path"]) for k in pairs["dependencyKeys"]}
    assert ("dataset_splits",) in splits or ("reviewed_dialogues",) in splits


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs Debian's chromium)")
def test_web_ui_in_a_real_browser(webserver, demo):
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # The community sign-up dialog may open at any moment of the first visit; Playwright dismisses it
        # whenever it would cover an element the test acts on.
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())

        def visit(path: str, expect: str) -> str:
            page.goto(f"{webserver}{path}", wait_until="domcontentloaded", timeout=90_000)
            page.wait_for_selector(f"text={expect}", timeout=90_000)
            return page.inner_text("body")

        text = visit("/asset-groups", "ingest")
        for group in ("taxonomy", "ingest", "generate", "curate", "pairs", "train", "evaluate", "warehouse"):
            assert group in text, group
        page.screenshot(path=str(ARTIFACTS / "ui_asset_groups.png"), full_page=True)

        text = visit("/assets/situations?view=partitions", "Materialized (28)")
        assert "28 Partitions" in text
        page.screenshot(path=str(ARTIFACTS / "ui_situations_partitions.png"))

        visit("/assets/dpo_checkpoint", "sha256")
        # The loss curve is a markdown metadata value (a data: PNG) that the metadata table shows behind
        # "[Show Markdown]"; waiting for the image itself, not for text, keeps this independent of how fast
        # the page fills in.
        loss_row = page.locator("tr").filter(has=page.get_by_text("loss_curve", exact=True)).first
        loss_row.get_by_text("[Show Markdown]").click(timeout=90_000)
        page.locator("img[src^='data:image/png']").first.wait_for(state="visible", timeout=90_000)
        page.screenshot(path=str(ARTIFACTS / "ui_dpo_checkpoint.png"), animations="disabled")
        page.get_by_role("dialog").get_by_role("button", name="Close").click()

        # Which data made this model: the checkpoint's consumed_materializations table links each
        # preference-pair partition it read to that partition's materialization events.
        consumed = (
            page.locator("tr").filter(has=page.get_by_text("consumed_materializations", exact=True)).first
        )
        consumed.get_by_text("[Show Markdown]").click(timeout=90_000)
        links = page.get_by_role("dialog").locator("a", has_text="preference_pairs")
        # One row per emotion partition DPO trained on. `expect` retries until the new dialog has rendered;
        # a bare `count()` does not wait, so it can run while the loss-curve dialog is still closing.
        playwright.expect(links).to_have_count(len(EMOTIONS), timeout=90_000)
        page.screenshot(path=str(ARTIFACTS / "ui_dpo_consumed_materializations.png"), animations="disabled")
        href = links.first.get_attribute("href")
        assert href.startswith("/assets/preference_pairs?view=events&partition="), href
        partition = href.rsplit("=", 1)[1]
        links.first.click()
        page.wait_for_url(f"**/assets/preference_pairs?view=events&partition={partition}", timeout=90_000)
        page.get_by_text(partition, exact=True).first.wait_for(timeout=90_000)
        page.screenshot(
            path=str(ARTIFACTS / "ui_preference_pairs_partition_events.png"), animations="disabled"
        )

        # ... and what that data is: the Columns section from the asset's dagster/column_schema.
        text = visit("/assets/preference_pairs", "Columns")
        columns = text[text.index("Columns") :]
        for column in ("pair_id", "emotion", "rejected_emotion", "chosen", "rejected"):
            assert column in columns, column
        page.get_by_text("Columns", exact=True).first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "ui_preference_pairs_columns.png"), animations="disabled")
        browser.close()


def test_landing_file_to_partitions_to_retraining_to_gate(demo, tmp_path):
    """The automation chain on the demo's instance: a file for one emotion is ingested for exactly that
    emotion (plus the opposite-emotion pairs that read it), its new train pairs trigger retraining, and
    the retrained checkpoint goes through the promotion gate."""
    new = tmp_path / "relief_from_clinic.jsonl"
    rows = [
        {
            "emotion": "relief",
            "situation": f"My {what} results came back normal after weeks of waiting.",
            "speaker_utterance": f"The {what} was normal. I slept through the night for the first time in weeks.",
            "listener_reply": f"Weeks of waiting on {what} results is exhausting; I'm so glad you could finally rest.",
        }
        for what in (
            "biopsy",
            "echocardiogram",
            "kidney function",
            "MRI",
            "colonoscopy",
            "thyroid",
            "liver panel",
            "bone density",
            "lung function",
            "eye exam",
            "hearing test",
            "skin check",
        )
    ]
    new.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = {**os.environ, "DAGSTER_HOME": str(demo["home"]), "EMPATHY_DAG_RETRAIN_MIN_NEW_PAIRS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.automation_chain", str(new)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    (ARTIFACTS / "automation_chain.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    chain = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("CHAIN "))[6:])
    landed = chain["landing_materialized"]
    assert "situations[relief]" in landed and "dialogues[relief]" in landed
    assert not [
        m for m in landed if m.startswith(("situations[", "dialogues[")) and not m.endswith("[relief]")
    ]
    assert chain["second_tick_requests"] == 0  # the same file is not ingested twice
    assert chain["retrain_requests"], "new train pairs did not trigger retraining"
    assert int(chain["retrain_requests"][0]["empathy_dag/new_train_pairs"]) >= 1
    assert {"sft_checkpoint", "dpo_checkpoint"} <= set(chain["retrain_materialized"])
    # The gate decided, one way or the other, and a refused candidate never moved the pointer.
    gate = {c["check"]: c["passed"] for c in chain["gate_checks"]}
    assert "dpo_checkpoint_no_regression" in gate
    if not gate["dpo_checkpoint_no_regression"]:  # blocked: promoted_model did not run
        assert "promoted_model" not in chain["retrain_materialized"]
        assert chain["pointer_after"] == chain["pointer_before"]
    else:  # passed the training-metric check: promoted_model compared the leaderboards and logged it
        assert len(chain["promotion_log"]) == chain["decisions_before"] + 1
        last = chain["promotion_log"][-1]
        if last["promoted"] == "False":
            assert chain["pointer_after"] == chain["pointer_before"]
