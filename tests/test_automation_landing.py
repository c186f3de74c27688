"""The landing-zone sensor against a real instance: the bad-input corpus, the same file twice, two
files for two emotions, and an end-to-end tick -> runs -> partitions check."""

import json
import os
import shutil
from pathlib import Path

import polars as pl
from dagster import (
    Definitions,
    RunRequest,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from empathy_dag.defs.ingest.jobs import LANDING_JOB_NAME, landing_ingest_job
from empathy_dag.defs.ingest.sensors import build_landing_sensor
from empathy_dag.defs.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from empathy_dag.defs.selections import LANDING_DATA
from empathy_dag.ingest.landing import LandingCursor, contiguous_ranges
from empathy_dag.settings import LANDING_SHA_TAG, TRIGGER_TAG, AutomationSettings
from empathy_dag.taxonomy import EMOTIONS
from empathy_dag.warehouse.tables import read_table
from tests.stages import project_asset_graph, stage_assets

BAD_INPUTS = Path(__file__).parent / "fixtures" / "bad_inputs"
SETTINGS = AutomationSettings(settle_seconds=0, team="t", cost_center="cc")
# Assets these tests execute from each requested run: the ingest stage, model-free (seconds on 2
# cores). The rest of the landing job (generation, curation, pairs) is checked in the requests.
DATA_KEYS = {"corpus_rows", "quarantine", "ingest_file_log", "situations", "dialogues"}

# file -> (valid rows, {reason_code: rows quarantined}) of the bad-input corpus (see the fixture files).
EXPECTED = {
    "good_gratitude.jsonl": (3, {}),
    "truncated.jsonl": (1, {"invalid_json": 1}),
    "wrong_columns.csv": (0, {"missing_columns": 1}),
    "missing_field.jsonl": (1, {"missing_columns": 1}),
    "unknown_emotion.jsonl": (1, {"unknown_emotion": 1}),
    "binary.jsonl": (0, {"binary_file": 1}),
    "empty.jsonl": (0, {"empty_file": 1}),
    "mixed_encoding.jsonl": (1, {"bad_encoding": 1}),
    "duplicated_rows.jsonl": (1, {"duplicate_id": 1}),
}
BAD_CORPUS_EMOTIONS = ["caring", "gratitude", "pride", "relief", "remorse"]


def _stage_assets():
    return stage_assets()


def _landing_job(resources):
    defs = Definitions(assets=_stage_assets(), jobs=[landing_ingest_job], resources=resources)
    return defs.resolve_job_def(LANDING_JOB_NAME)


def _baseline(resources, instance):
    """Every landing data asset over all 28 emotions, from the seed corpus (one single-run backfill)."""
    landing = LANDING_DATA.resolve(project_asset_graph())
    keys = [k.to_user_string() for k in landing if k.to_user_string() in DATA_KEYS]
    result = materialize(
        _stage_assets(),
        selection=keys,
        resources=resources,
        instance=instance,
        tags={PARTITION_RANGE_START_TAG: EMOTIONS[0], PARTITION_RANGE_END_TAG: EMOTIONS[-1]},
    )
    assert result.success


def _partitions_of(request: RunRequest) -> list[str]:
    if request.partition_key:
        return [request.partition_key]
    start, end = request.tags[PARTITION_RANGE_START_TAG], request.tags[PARTITION_RANGE_END_TAG]
    return EMOTIONS[EMOTIONS.index(start) : EMOTIONS.index(end) + 1]


def _execute(job, request: RunRequest, instance):
    keys = request.asset_selection or list(job.asset_layer.executable_asset_keys)
    selection = [k for k in keys if k.to_user_string() in DATA_KEYS]
    if not selection:
        return set()
    tags = {**request.tags, "dagster/run_key": request.run_key}
    result = job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=tags,
        asset_selection=selection,
    )
    assert result.success
    return {
        (e.asset_key.to_user_string(), e.partition)
        for e in (ev.event_specific_data.materialization for ev in result.get_asset_materialization_events())
    }


def _tick(sensor, instance, resources, cursor=None):
    # The definitions let Dagster resolve a partition_key request against the landing job.
    defs = Definitions(
        assets=_stage_assets(), jobs=[landing_ingest_job], sensors=[sensor], resources=resources
    )
    ctx = build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
    result = sensor.evaluate_tick(ctx)
    return result.run_requests or [], result.cursor


def test_contiguous_ranges_follow_taxonomy_order():
    assert contiguous_ranges(["remorse", "caring", "relief", "gratitude", "pride"]) == [
        ("caring", "caring"),
        ("gratitude", "gratitude"),
        ("pride", "pride"),
        ("relief", "remorse"),
    ]
    assert contiguous_ranges(EMOTIONS) == [(EMOTIONS[0], EMOTIONS[-1])]
    assert contiguous_ranges([]) == []


def test_bad_input_corpus_lands_good_rows_once_and_quarantines_the_rest(resources, data_root, tmp_path):
    # A 20 MB hard cap (the default is 2048 MB: JSONL is read in blocks), so the 50 MB file below is over it.
    resources = {
        **resources,
        "corpus_sources": type(resources["corpus_sources"])(
            **{**resources["corpus_sources"].model_dump(), "max_file_mb": 20.0}
        ),
    }
    landing = Path(resources["corpus_sources"].landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    parquet = Path(resources["warehouse"].parquet_base_dir)
    sensor = build_landing_sensor(SETTINGS)
    with instance_for_test() as instance:
        _baseline(resources, instance)
        untouched = {
            p.name: p.read_bytes()
            for p in (parquet / "situations").glob("*.parquet")
            if p.stem not in BAD_CORPUS_EMOTIONS
        }
        assert len(untouched) == 28 - len(BAD_CORPUS_EMOTIONS)
        mats_before = _materialization_counts(instance)

        for f in BAD_INPUTS.iterdir():
            shutil.copy(f, landing / f.name)
        # The same content under another name, and a 50 MB file (over the 20 MB cap set above).
        shutil.copy(BAD_INPUTS / "good_gratitude.jsonl", landing / "good_gratitude_again.jsonl")
        big = landing / "huge.jsonl"
        line = json.dumps({"emotion": "joy", "situation": "x" * 1000}) + "\n"
        with open(big, "w") as fh:
            fh.writelines(line for _ in range(50 * 1024 * 1024 // len(line) + 1))
        assert big.stat().st_size >= 50 * 1024 * 1024

        requests, cursor = _tick(sensor, instance, resources)

        # Decisions recorded per file, with outcome and reasons.
        with resources["warehouse"].connect() as conn:
            log = read_table(conn, "landing_log")
        outcomes = dict(zip(log["file"], log["outcome"]))
        assert outcomes["good_gratitude_again.jsonl"] == "duplicate_content"
        assert outcomes["huge.jsonl"] == "rejected"
        assert json.loads(log.filter(pl.col("file") == "huge.jsonl")["reasons"][0]) == {"file_too_large": 1}
        for name, (valid, reasons) in EXPECTED.items():
            row = log.filter(pl.col("file") == name).row(0, named=True)
            assert row["outcome"] == ("accepted" if valid else "rejected"), name
            if name != "duplicated_rows.jsonl":  # duplicates within a file are found per file too
                assert json.loads(row["reasons"]) == reasons, name
            assert row["valid_rows"] == valid or name == "duplicated_rows.jsonl", name

        # Runs only for the emotions with valid rows; run_key = content sha256 (+ range when split).
        main = [r for r in requests if not r.asset_selection]
        covered = sorted({e for r in main for e in _partitions_of(r)})
        assert covered == BAD_CORPUS_EMOTIONS
        assert all(r.tags[TRIGGER_TAG] == "landing_zone" and r.tags["team"] == "t" for r in requests)
        assert all(r.run_key.startswith(r.tags[LANDING_SHA_TAG]) for r in requests)
        # Spill-over runs: only preference_pairs of emotions whose opposite was touched.
        for r in requests:
            if r.asset_selection:
                assert {k.to_user_string() for k in r.asset_selection} <= {"preference_pairs"}
                assert not set(_partitions_of(r)) & set(BAD_CORPUS_EMOTIONS)

        job = _landing_job(resources)
        materialized, executed = set(), set()
        for r in requests:
            done = _execute(job, r, instance)
            if done:
                executed.add(r.run_key)
            materialized |= done
        per_emotion = {p for k, p in materialized if k == "situations"}
        assert per_emotion == set(BAD_CORPUS_EMOTIONS)

        # Every good row landed once; every bad row is in the quarantine with its reason.
        corpus = pl.read_parquet(parquet / "corpus_rows.parquet")
        landed = corpus.filter(pl.col("source_file").str.contains("/landing/"))
        assert landed.height == sum(v for v, _ in EXPECTED.values())
        assert landed["situation_id"].n_unique() == landed.height
        with resources["warehouse"].connect() as conn:
            quarantine = conn.execute("SELECT * FROM quarantine").pl()
        by_file = {}
        for row in quarantine.iter_rows(named=True):
            by_file.setdefault(Path(row["file"]).name, {}).setdefault(row["reason_code"], 0)
            by_file[Path(row["file"]).name][row["reason_code"]] += 1
        for name, (_, reasons) in EXPECTED.items():
            assert by_file.get(name, {}) == reasons, name
        assert by_file["huge.jsonl"] == {"file_too_large": 1}
        # The copy's rows are duplicates of the first file's: quarantined, not landed twice.
        assert by_file["good_gratitude_again.jsonl"] == {"duplicate_id": 3}
        gratitude = pl.read_parquet(parquet / "situations" / "gratitude.parquet")
        assert gratitude.filter(pl.col("source_file").str.contains("landing")).height == 3

        # Nothing else changed: untouched partitions are byte-identical and were not re-materialized.
        for name, data in untouched.items():
            assert (parquet / "situations" / name).read_bytes() == data
        mats_after = _materialization_counts(instance)
        changed = {k for k in mats_after if mats_after[k] != mats_before.get(k)}
        assert {e for a, e in changed if a == "situations"} == set(BAD_CORPUS_EMOTIONS)

        # A repeated tick sees nothing new; a replay from the old cursor asks for the same run keys,
        # which Dagster deduplicates against the runs already launched with them.
        again, _ = _tick(sensor, instance, resources, cursor=cursor)
        assert again == []
        replay, _ = _tick(sensor, instance, resources, cursor=None)
        assert sorted(r.run_key for r in replay) == sorted(r.run_key for r in requests)
        from dagster import RunsFilter

        assert executed
        for r in replay:
            if r.run_key in executed:
                assert instance.get_runs(filters=RunsFilter(tags={"dagster/run_key": r.run_key}))


def _materialization_counts(instance) -> dict[tuple[str, str], int]:
    from dagster import AssetKey

    counts: dict[tuple[str, str], int] = {}
    for rec in instance.fetch_materializations(AssetKey("situations"), limit=1000).records:
        key = ("situations", rec.partition_key)
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_two_files_for_two_emotions_request_exactly_those_partitions(resources):
    landing = Path(resources["corpus_sources"].landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "a.jsonl").write_text(
        json.dumps(
            {"emotion": "anger", "situation": "The landlord kept our deposit for a wall he damaged himself."}
        )
        + "\n"
    )
    (landing / "b.jsonl").write_text(
        json.dumps(
            {
                "emotion": "surprise",
                "situation": "My estranged brother showed up at my graduation with flowers.",
            }
        )
        + "\n"
    )
    sensor = build_landing_sensor(SETTINGS)
    with instance_for_test() as instance:
        requests, cursor = _tick(sensor, instance, resources)
        main = [r for r in requests if not r.asset_selection]
        assert sorted((_partitions_of(r)[0], r.tags["empathy_dag/landing_file"]) for r in main) == [
            ("anger", "a.jsonl"),
            ("surprise", "b.jsonl"),
        ]
        assert all(len(_partitions_of(r)) == 1 for r in main)
        assert len({r.run_key for r in requests}) == len(requests)
        # A third file later: only it is seen.
        (landing / "c.jsonl").write_text(
            json.dumps({"emotion": "anger", "situation": "Someone keyed my car in the hospital car park."})
            + "\n"
        )
        later, _ = _tick(sensor, instance, resources, cursor=cursor)
        assert {r.tags["empathy_dag/landing_file"] for r in later} == {"c.jsonl"}
        assert set(LandingCursor.load(cursor).seen) == {"a.jsonl", "b.jsonl"}


def test_files_still_being_written_wait_for_the_next_tick(resources):
    landing = Path(resources["corpus_sources"].landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "fresh.jsonl").write_text(
        json.dumps({"emotion": "joy", "situation": "We won the league."}) + "\n"
    )
    (landing / "upload.jsonl.part").write_text("{")
    sensor = build_landing_sensor(AutomationSettings(settle_seconds=3600))
    with instance_for_test() as instance:
        requests, cursor = _tick(sensor, instance, resources)
        # The unsettled file is left for later; the partial upload is recorded as skipped (once).
        assert requests == [] and LandingCursor.load(cursor).seen == {
            "upload.jsonl.part": "skip:partial_upload"
        }
        with resources["warehouse"].connect() as conn:
            log = read_table(conn, "landing_log")
        assert log.select("file", "outcome", "reasons").rows() == [
            ("upload.jsonl.part", "skipped", '{"partial_upload": 1}')
        ]
        (landing / "upload.jsonl.part").write_text('{"emotion"')  # still growing: no new row
        again, _ = _tick(sensor, instance, resources, cursor=cursor)
        assert again == []
        with resources["warehouse"].connect() as conn:
            assert read_table(conn, "landing_log").height == 1


def _write(path: Path, emotion: str, text: str) -> None:
    path.write_text(json.dumps({"emotion": emotion, "situation": text}) + "\n")
    # A distinct version stamp even within one mtime tick of the file system.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000 * len(text)))


def test_replaced_reverted_deleted_restored_and_copied_files(tmp_path):
    """The events of one name over time, decided by the pure scan: what each rebuilds and how it is keyed."""
    from empathy_dag.ingest.landing import LocalLandingZone, scan_landing_zone
    from empathy_dag.ingest.records import ValidationLimits
    from empathy_dag.taxonomy import default_taxonomy

    tax, limits = default_taxonomy(), ValidationLimits()
    zone_dir = tmp_path / "landing"
    zone_dir.mkdir()
    zone = LocalLandingZone(zone_dir)
    cursor = LandingCursor()
    keys: list[str] = []

    def scan():
        nonlocal cursor
        decisions, cursor = scan_landing_zone(zone, cursor, taxonomy=tax, limits=limits)
        keys.extend(d.run_key_base for d in decisions if d.rebuild)
        return [(d.file.name, d.event, d.outcome, d.rebuild) for d in decisions]

    a = zone_dir / "a.jsonl"
    _write(a, "joy", "We won the league after ten years of trying.")
    assert scan() == [("a.jsonl", "added", "accepted", ["joy"])]
    _write(a, "anger", "The landlord kept our deposit for a wall he damaged himself.")
    assert scan() == [("a.jsonl", "replaced", "accepted", ["anger", "joy"])]  # the old rows must go
    _write(a, "joy", "We won the league after ten years of trying.")
    assert scan() == [("a.jsonl", "replaced", "duplicate_content", ["anger", "joy"])]  # reverted
    shutil.copy(a, zone_dir / "b.jsonl")
    assert scan() == [("b.jsonl", "copied", "duplicate_content", [])]
    _write(zone_dir / "c.jsonl", "pride", "My daughter walked across the stage today.")
    shutil.copy(zone_dir / "c.jsonl", zone_dir / "d.jsonl")  # new content twice in one tick: one rebuild
    assert scan() == [
        ("c.jsonl", "added", "accepted", ["pride"]),
        ("d.jsonl", "copied", "duplicate_content", []),
    ]
    (zone_dir / "c.jsonl").unlink()
    (zone_dir / "d.jsonl").unlink()
    assert [e for _, e, _, _ in scan()] == ["deleted", "deleted"]
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 5))  # re-dropped, same content
    assert scan() == [("a.jsonl", "touched", "duplicate_content", [])]
    a.unlink()
    (zone_dir / "b.jsonl").unlink()
    assert scan() == [("a.jsonl", "deleted", "deleted", ["joy"]), ("b.jsonl", "deleted", "deleted", ["joy"])]
    _write(a, "joy", "We won the league after ten years of trying.")
    assert scan() == [("a.jsonl", "restored", "duplicate_content", ["joy"])]  # its rows must come back
    assert scan() == []
    # Every change has its own run key (Dagster would skip a repeated one); the first is the content sha.
    assert len(keys) == len(set(keys)) == 9
    assert keys[0] == cursor.sha_of("a.jsonl")


def test_replaced_and_deleted_file_rows_leave_their_partitions(resources):
    """Through the sensor and the landing job: the old content's rows leave `situations` when the file
    is replaced, and the file's rows leave when it is deleted."""
    landing = Path(resources["corpus_sources"].landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    parquet = Path(resources["warehouse"].parquet_base_dir)
    sensor = build_landing_sensor(SETTINGS)
    job = _landing_job(resources)
    joy_text, anger_text = (
        "We won the league after ten years of trying.",
        "Someone keyed my car at the clinic.",
    )
    a = landing / "a.jsonl"

    def landed(emotion: str) -> set[str]:
        frame = pl.read_parquet(parquet / "situations" / f"{emotion}.parquet")
        return set(frame.filter(pl.col("source_file").str.contains("/landing/"))["situation"])

    with instance_for_test() as instance:
        cursor = None
        for content, expect in (
            (("joy", joy_text), {"joy": {joy_text}}),
            (("anger", anger_text), {"joy": set(), "anger": {anger_text}}),
            (None, {"anger": set()}),
        ):
            if content is None:
                a.unlink()
            else:
                _write(a, *content)
            requests, cursor = _tick(sensor, instance, resources, cursor=cursor)
            assert requests
            for r in requests:
                _execute(job, r, instance)
            for emotion, texts in expect.items():
                assert landed(emotion) == texts, (content, emotion)
        with resources["warehouse"].connect() as conn:
            log = read_table(conn, "landing_log").sort("detected_at")
        assert log["event"].to_list() == ["added", "replaced", "deleted"]


def test_landing_log_is_append_only_and_migrates_the_old_table():
    import duckdb

    from empathy_dag.warehouse.tables import append_landing_log

    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE main.landing_log (file VARCHAR NOT NULL, uri VARCHAR, sha256 VARCHAR NOT NULL, "
        "outcome VARCHAR, PRIMARY KEY (file, sha256))"
    )
    conn.execute("INSERT INTO main.landing_log VALUES ('old.jsonl', 'u', 'abc', 'accepted')")
    row = {"file": "a.jsonl", "sha256": "s1", "version": "1", "outcome": "accepted", "event": "added"}
    append_landing_log(conn, [row])
    append_landing_log(conn, [row])  # a replayed tick: nothing twice
    append_landing_log(conn, [{**row, "version": "2", "event": "touched"}])  # a re-drop: one more row
    got = conn.execute("SELECT file, version, event FROM main.landing_log ORDER BY file, version").fetchall()
    assert got == [("a.jsonl", "1", "added"), ("a.jsonl", "2", "touched"), ("old.jsonl", "v1", None)]
    assert conn.execute("SELECT count(*) FROM main.landing_log_v1").fetchone()[0] == 1


def test_s3_sync_drops_the_cached_copy_of_a_deleted_object(tmp_path):
    """aws profile: ingest reads a local copy of the landing prefix; an object deleted there must leave
    that copy too, or its rows would stay in the corpus after the sensor asked for the rebuild."""
    import pytest

    from tests.moto_server import moto_endpoint, moto_server_command

    if moto_server_command() is None:
        pytest.skip("moto[server] not installed")
    from empathy_dag.storage_s3 import s3_client, sync_landing_zone

    with moto_endpoint() as url:
        client = s3_client(url)
        client.create_bucket(Bucket="landing-sync")
        client.put_object(Bucket="landing-sync", Key="landing/a.jsonl", Body=b"1")
        client.put_object(Bucket="landing-sync", Key="landing/reviews/r.jsonl", Body=b"2")
        cache = tmp_path / "cache"
        (cache / "mine.jsonl").parent.mkdir(parents=True)
        (cache / "mine.jsonl").write_text("put here by hand, no sidecar")
        sync_landing_zone(client, "s3://landing-sync/landing/", cache)
        assert (cache / "a.jsonl").is_file() and (cache / "reviews" / "r.jsonl").is_file()
        client.delete_object(Bucket="landing-sync", Key="landing/a.jsonl")
        client.delete_object(Bucket="landing-sync", Key="landing/reviews/r.jsonl")
        sync_landing_zone(client, "s3://landing-sync/landing/", cache)
        assert not (cache / "a.jsonl").exists() and not (cache / "reviews" / "r.jsonl").exists()
        assert (cache / "mine.jsonl").is_file()


def test_a_read_file_turned_into_a_symlink_is_refused_and_its_rows_rebuilt(tmp_path):
    from empathy_dag.ingest.landing import LocalLandingZone, scan_landing_zone
    from empathy_dag.ingest.records import ValidationLimits
    from empathy_dag.taxonomy import default_taxonomy

    zone_dir, outside = tmp_path / "landing", tmp_path / "outside.jsonl"
    zone_dir.mkdir()
    _write(zone_dir / "a.jsonl", "grief", "My grandmother's garden was sold this spring.")
    outside.write_text('{"emotion": "joy", "situation": "A file outside the zone, never to be read."}\n')
    zone, tax, limits = LocalLandingZone(zone_dir), default_taxonomy(), ValidationLimits()
    first, cursor = scan_landing_zone(zone, LandingCursor(), taxonomy=tax, limits=limits)
    assert [(d.outcome, d.rebuild) for d in first] == [("accepted", ["grief"])]
    (zone_dir / "a.jsonl").unlink()
    (zone_dir / "a.jsonl").symlink_to(outside)
    second, _ = scan_landing_zone(zone, cursor, taxonomy=tax, limits=limits)
    assert [(d.outcome, d.reasons, d.rebuild, d.emotions) for d in second] == [
        ("refused", {"symlink": 1}, ["grief"], [])
    ]  # the old rows leave; joy (outside) is never read


# A landing-sensor scan of one large file, in a fresh interpreter. Its peak is read from /proc (VmHWM, reset
# before the scan through clear_refs): ru_maxrss would carry the peak of the forked test process over exec.
_SCAN_MEMORY = """
import json, sys
from pathlib import Path
from empathy_dag.ingest.corpus import validate_bytes
from empathy_dag.ingest.landing import LandingCursor, LocalLandingZone, scan_landing_zone
from empathy_dag.ingest.records import ValidationLimits
from empathy_dag.taxonomy import default_taxonomy

def status_mib(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024

tax = default_taxonomy()
limits = ValidationLimits(detect_declared_language=False, stream_block_mb=float(sys.argv[2]))
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak to the resident size now
except OSError:
    pass  # then the peak so far is the interpreter's start and imports, which only overstates the growth
before = status_mib("VmRSS")
if sys.argv[3] == "scan":
    decisions, _ = scan_landing_zone(LocalLandingZone(sys.argv[1]), LandingCursor(), taxonomy=tax, limits=limits)
    result = [(d.outcome, d.rows_in, d.valid_rows, d.quarantined_rows, d.reasons, d.emotions) for d in decisions]
else:  # what a tick did before: the file read whole, then validated
    path = next(Path(sys.argv[1]).iterdir())
    outcome = validate_bytes(path.read_bytes(), str(path), taxonomy=tax, limits=limits)
    result = [outcome.rows_in, outcome.n_valid, len(outcome.quarantined)]
print(json.dumps({"growth_mib": status_mib("VmHWM") - before, "result": result}))
"""


def test_a_tick_over_a_large_file_holds_one_block_not_the_file(tmp_path):
    """A ~100 MB JSONL file in the landing zone: the scan streams it (sha256 and validation in blocks of
    1 MB here; rows of ~1 KB) and keeps only the emotions of its valid rows, so the tick's peak memory grows
    by less than the file's size (a fixed working set plus ~150 bytes a row for the duplicate index); the same scan reading the file whole (a block larger than the file) grows by more than
    the file, which shows that the measurement would see it. The rows are
    distinct and declare "en" with the identifier off for declared rows (the identifier's memory does not
    depend on the file; its time would make this test minutes); one duplicate row at the end is still
    found across blocks."""
    import subprocess
    import sys

    zone = tmp_path / "landing"
    zone.mkdir()
    path = zone / "big.jsonl"
    emotions = ["joy", "sadness", "fear", "gratitude"]
    filler = "and then we talked for a long while about everything that had happened since the spring " * 11
    with open(path, "w", encoding="utf-8") as fh:
        n = 0
        while fh.tell() < 100 * 1024 * 1024:
            fh.write(
                json.dumps(
                    {
                        "emotion": emotions[n % 4],
                        "situation": f"Row {n}: my friend called me {filler}",
                        "language": "en",
                    }
                )
                + "\n"
            )
            n += 1
        fh.write(
            json.dumps(
                {"emotion": "joy", "situation": f"Row 0: my friend called me {filler}", "language": "en"}
            )
            + "\n"
        )
    size_mib = path.stat().st_size / 1024 / 1024

    def measure(stream_block_mb: int, how: str) -> dict:
        child = subprocess.run(
            [sys.executable, "-c", _SCAN_MEMORY, str(zone), str(stream_block_mb), how],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        return json.loads(child.stdout.strip().splitlines()[-1])

    try:
        streamed = measure(1, "scan")
        whole = measure(1024, "whole")  # the control: the file read whole, as a tick did before
    finally:
        path.unlink()
    touched = [e for e in EMOTIONS if e in emotions]  # taxonomy order
    assert streamed["result"] == [["accepted", n + 1, n, 1, {"duplicate_id": 1}, touched]]
    assert whole["result"] == [n + 1, n, 1]
    assert whole["growth_mib"] > size_mib, (
        whole["growth_mib"],
        size_mib,
    )  # the measurement sees a file's worth
    # ~60 MB of polars' and the regexes' working memory, one block's rows, ~150 bytes a row of duplicate index
    assert streamed["growth_mib"] < min(size_mib, whole["growth_mib"] / 5), (streamed["growth_mib"], size_mib)
