"""Review decisions in, stale emotions rebuilt: the two review sensors ticked against a real instance,
their runs executed on the real assets (the curate stage stood in for, as in test_review_flow).

- review_inbox_sensor asks for one review_decisions_job run per change of <landing>/reviews/: a file
  added, replaced or removed; a file rewritten with the same content, or a quiet inbox, asks for none.
- review_decisions_sensor then asks the landing job to rebuild reviewed_dialogues, the splits and the
  pairs of exactly the emotions whose decisions changed (plus the pairs of the emotions whose opposite
  changed), also when several review runs happened between two of its ticks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
from dagster import (
    AssetKey,
    Definitions,
    RunRequest,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from empathy_dag.defs.ingest.jobs import LANDING_JOB_NAME, landing_ingest_job
from empathy_dag.defs.pairs.assets import dataset_splits
from empathy_dag.defs.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from empathy_dag.defs.review.assets import review_agreement, review_decisions, reviewed_dialogues
from empathy_dag.defs.review.jobs import REVIEW_JOB_NAME, review_decisions_job
from empathy_dag.defs.review.sensors import build_review_decisions_sensor, build_review_inbox_sensor
from empathy_dag.settings import (
    LANDING_EMOTIONS_TAG,
    REVIEW_FILES_TAG,
    TRIGGER_TAG,
    AutomationSettings,
)
from empathy_dag.taxonomy import EMOTIONS, default_taxonomy
from tests.stages import stage_assets
from tests.test_review_flow import (
    TAGS,
    curate_stand_in,
    curated_frame,
    partition,
    report_frame,
    write_decisions,
)

SETTINGS = AutomationSettings(settle_seconds=0, team="t", cost_center="cc")
# What the review runs execute here: the stand-in has no upstream, and these read only it and the
# warehouse. Pairs need the generation stage; the requests for them are checked, not executed.
EXECUTED = {
    "review_decisions",
    "review_quarantine",
    "review_agreement",
    "reviewer_pair_agreement",
    "reviewer_acceptance",
    "reviewed_dialogues",
    "dataset_splits",
}


def _definitions(resources):
    """What the runs execute: the review and split assets over the curate stand-in."""
    stand_in = curate_stand_in(curated_frame(), report_frame())
    return Definitions(
        assets=[stand_in, review_decisions, review_agreement, reviewed_dialogues, dataset_splits],
        jobs=[review_decisions_job],
        resources=resources,
    )


def _tick(sensor, instance, resources, cursor):
    # The project's stage assets and jobs let Dagster resolve the requests against the real jobs.
    defs = Definitions(
        assets=stage_assets(),
        jobs=[landing_ingest_job, review_decisions_job],
        sensors=[sensor],
        resources=resources,
    )
    ctx = build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
    result = sensor.evaluate_tick(ctx)
    return result.run_requests or [], result.cursor


def _partitions(request: RunRequest) -> list[str]:
    if request.partition_key:
        return [request.partition_key]
    start, end = request.tags[PARTITION_RANGE_START_TAG], request.tags[PARTITION_RANGE_END_TAG]
    return EMOTIONS[EMOTIONS.index(start) : EMOTIONS.index(end) + 1]


def _run_review_job(resources, instance, request: RunRequest) -> dict:
    job = _definitions(resources).resolve_job_def(REVIEW_JOB_NAME)
    result = job.execute_in_process(
        instance=instance, tags={**request.tags, "dagster/run_key": request.run_key}
    )
    assert result.success
    event = next(
        e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("review_decisions")
    )
    return event.step_materialization_data.materialization.metadata["decision_fingerprints"].value


def _run_rebuild(resources, instance, request: RunRequest) -> set[tuple[str, str]]:
    """The executable part of a landing-job request: which (asset, partition) it materialized."""
    selection = [k for k in request.asset_selection if k.to_user_string() in EXECUTED]
    tags = {**request.tags, "dagster/run_key": request.run_key}
    result = materialize(
        _definitions(resources).assets,
        selection=selection,
        resources=resources,
        instance=instance,
        partition_key=request.partition_key,
        tags=tags,
    )
    assert result.success
    return {
        (e.asset_key.to_user_string(), e.partition)
        for e in (ev.event_specific_data.materialization for ev in result.get_asset_materialization_events())
    }


def _opposite_pairs(touched: set[str]) -> set[str]:
    """Pairs partitions that read a touched emotion's dialogues as their rejected side."""
    tax = default_taxonomy()
    return {e for e in EMOTIONS if tax.opposite(e) in touched} - touched


def _check_rebuild_requests(requests: list[RunRequest], touched: set[str]) -> RunRequest:
    main = [r for r in requests if set(_partitions(r)) & touched]
    spill = [r for r in requests if r not in main]
    assert len(main) == 1 and set(_partitions(main[0])) == touched
    selected = {k.to_user_string() for k in main[0].asset_selection}
    assert {"reviewed_dialogues", "dataset_splits", "preference_pairs"} <= selected
    # Nothing upstream of the decisions is rebuilt: not the corpus, not curation.
    assert not selected & {"corpus_rows", "situations", "dialogues", "curated_dialogues", "filter_report"}
    assert all({k.to_user_string() for k in r.asset_selection} == {"preference_pairs"} for r in spill)
    assert {p for r in spill for p in _partitions(r)} == _opposite_pairs(touched)
    for r in requests:
        assert r.tags[TRIGGER_TAG] == "review_decisions"
        assert r.tags[LANDING_EMOTIONS_TAG] == ",".join(sorted(touched))
    return main[0]


def test_decision_files_rebuild_only_the_emotions_whose_decisions_changed(resources):
    reviews = Path(resources["corpus_sources"].landing_dir) / "reviews"
    inbox, decided = build_review_inbox_sensor(SETTINGS), build_review_decisions_sensor(SETTINGS)
    with instance_for_test() as instance:
        defs = _definitions(resources)
        assert materialize(
            defs.assets,
            selection=[
                "curated_dialogues",
                "filter_report",
                "review_decisions",
                "review_quarantine",
                "reviewed_dialogues",
            ],
            resources=resources,
            instance=instance,
            tags=TAGS,
        ).success

        # No decisions yet: nothing to do, for either sensor.
        requests, inbox_cursor = _tick(inbox, instance, resources, None)
        assert requests == []
        requests, decided_cursor = _tick(decided, instance, resources, None)
        assert requests == [] and json.loads(decided_cursor) == {}

        # 1. Two reviewers answer about both emotions: one review run, then both emotions rebuilt.
        write_decisions(reviews)
        requests, inbox_cursor = _tick(inbox, instance, resources, inbox_cursor)
        assert len(requests) == 1 and requests[0].run_key.startswith("reviews:")
        assert set(json.loads(requests[0].tags[REVIEW_FILES_TAG])["changed"]) == {"alice.jsonl", "bob.csv"}
        assert _tick(inbox, instance, resources, inbox_cursor)[0] == []  # a quiet inbox asks for nothing
        fingerprints = _run_review_job(resources, instance, requests[0])
        assert set(fingerprints) == {"remorse", "sadness"}

        requests, decided_cursor = _tick(decided, instance, resources, decided_cursor)
        main = _check_rebuild_requests(requests, {"remorse", "sadness"})
        done = _run_rebuild(resources, instance, main)
        assert done == {
            (a, e) for a in ("reviewed_dialogues", "dataset_splits") for e in ("remorse", "sadness")
        }
        sadness = partition(resources, "reviewed_dialogues", "sadness")
        assert set(sadness["dialogue_id"]) == {"sad-c2", "sad-c3", "sad-c4", "sad-s2"}
        assert _tick(decided, instance, resources, decided_cursor)[0] == []

        # 2. A third reviewer rejects one sadness dialogue: sadness only.
        carol = reviews / "carol.jsonl"
        carol.write_text(
            json.dumps(
                {
                    "item_id": "sad-c2",
                    "reviewer": "carol",
                    "decision": "reject",
                    "reason": "medical_misinformation",
                }
            )
            + "\n"
        )
        requests, inbox_cursor = _tick(inbox, instance, resources, inbox_cursor)
        assert len(requests) == 1
        files = json.loads(requests[0].tags[REVIEW_FILES_TAG])
        assert list(files["changed"]) == ["carol.jsonl"] and files["removed"] == []
        after = _run_review_job(resources, instance, requests[0])
        assert after["remorse"] == fingerprints["remorse"] and after["sadness"] != fingerprints["sadness"]
        requests, decided_cursor = _tick(decided, instance, resources, decided_cursor)
        main = _check_rebuild_requests(requests, {"sadness"})
        assert _run_rebuild(resources, instance, main) == {
            ("reviewed_dialogues", "sadness"),
            ("dataset_splits", "sadness"),
        }
        # carol alone reviewed sad-c2: her reject removes it; remorse is untouched.
        assert "sad-c2" not in set(partition(resources, "reviewed_dialogues", "sadness")["dialogue_id"])
        assert "rem-c2" in set(partition(resources, "reviewed_dialogues", "remorse")["dialogue_id"])

        # 3. The same content written again (a re-upload) changes nothing.
        stat = carol.stat()
        carol.write_text(carol.read_text())
        os.utime(carol, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        requests, inbox_cursor = _tick(inbox, instance, resources, inbox_cursor)
        assert requests == []

        # 4. Two review runs between two ticks of the second sensor (carol withdraws her file, dave
        #    edits a remorse reply): both emotions are rebuilt, each once.
        carol.unlink()
        requests, inbox_cursor = _tick(inbox, instance, resources, inbox_cursor)
        assert len(requests) == 1 and json.loads(requests[0].tags[REVIEW_FILES_TAG])["removed"] == [
            "carol.jsonl"
        ]
        _run_review_job(resources, instance, requests[0])
        (reviews / "dave.jsonl").write_text(
            json.dumps(
                {
                    "item_id": "rem-c4",
                    "reviewer": "dave",
                    "decision": "edit",
                    "edited_reply": "That must have stayed with you. What would you want to say to them now?",
                }
            )
            + "\n"
        )
        requests, inbox_cursor = _tick(inbox, instance, resources, inbox_cursor)
        assert len(requests) == 1
        _run_review_job(resources, instance, requests[0])
        requests, decided_cursor = _tick(decided, instance, resources, decided_cursor)
        main = _check_rebuild_requests(requests, {"remorse", "sadness"})
        _run_rebuild(resources, instance, main)
        sadness = partition(resources, "reviewed_dialogues", "sadness")
        assert "sad-c2" in set(sadness["dialogue_id"])  # carol's veto withdrawn
        remorse = partition(resources, "reviewed_dialogues", "remorse")
        rem_c4 = remorse.filter(pl.col("dialogue_id") == "rem-c4")
        assert rem_c4["review_status"][0] == "edited" and rem_c4["listener_reply"][0].startswith("That must")

        # 5. A review run that changes no decision (re-run by hand) rebuilds nothing.
        _run_review_job(resources, instance, RunRequest(run_key="by-hand", tags={}))
        assert _tick(decided, instance, resources, decided_cursor)[0] == []


def test_review_sensors_are_in_the_project_definitions():
    from empathy_dag.definitions import defs

    inbox = defs.resolve_sensor_def("review_inbox_sensor")
    decided = defs.resolve_sensor_def("review_decisions_sensor")
    assert inbox.job_name == REVIEW_JOB_NAME and decided.job_name == LANDING_JOB_NAME
    job = defs.resolve_job_def(REVIEW_JOB_NAME)
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"review_decisions", "review_quarantine", "review_agreement"} <= keys
    assert "reviewed_dialogues" not in keys
    assert landing_ingest_job is not None
