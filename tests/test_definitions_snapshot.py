"""The definitions, as the UI and the daemon see them, equal the committed snapshot.

A change of layout (moving modules, assembling `Definitions` another way) must leave this unchanged; a change
of the pipeline itself shows up here as a reviewable diff: regenerate with
`python -m tests.definitions_snapshot --write` and commit the new snapshot with the change."""

import json

from tests.definitions_snapshot import SNAPSHOT, definitions_snapshot


def test_definitions_equal_the_snapshot():
    from empathy_dag.definitions import defs

    expected = json.loads(SNAPSHOT.read_text())
    actual = json.loads(json.dumps(definitions_snapshot(defs)))
    for section in expected:
        missing = (
            sorted(set(expected[section]) - set(actual[section]))
            if isinstance(expected[section], dict)
            else []
        )
        added = (
            sorted(set(actual[section]) - set(expected[section])) if isinstance(actual[section], dict) else []
        )
        assert not missing and not added, f"{section}: missing {missing}, added {added}"
        assert actual[section] == expected[section], f"{section} differs from {SNAPSHOT.name}"
    assert set(actual) == set(expected)
    # The snapshot is of a real pipeline, not an empty one.
    assert len(actual["assets"]) > 40 and "main_job" in actual["jobs"] and actual["sensors"]
