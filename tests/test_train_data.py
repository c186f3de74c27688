"""Pure helpers that decide what a training run sees (no model, no Dagster)."""

import polars as pl

from empathy_dag.train.data import capped_pairs, train_pairs


def _pairs(ids):
    return pl.DataFrame({"pair_id": ids, "split": ["train"] * len(ids), "prompt": [f"p{i}" for i in ids]})


def test_capped_pairs_is_a_stable_sample_in_the_original_order():
    ids = [f"pair-{i:03d}" for i in range(50)]
    frame = train_pairs({"joy": _pairs(ids[:25]), "anger": _pairs(ids[25:])})
    assert capped_pairs(frame, 0).equals(frame) and capped_pairs(frame, 50).equals(frame)
    sample = capped_pairs(frame, 10)
    assert sample.height == 10
    assert sample["pair_id"].to_list() == sorted(sample["pair_id"].to_list())  # train_pairs' order kept
    assert sample.equals(capped_pairs(frame.reverse(), 10).sort("pair_id"))  # input order does not matter
    assert set(sample["pair_id"]) != set(ids[:10])  # a hash sample, not the first rows
    # New pairs displace only members that rank after them: most of the sample survives growth.
    grown = capped_pairs(train_pairs({"joy": _pairs(ids + [f"new-{i}" for i in range(10)])}), 10)
    kept = set(sample["pair_id"]) & set(grown["pair_id"])
    assert len(kept) + sum(i.startswith("new-") for i in grown["pair_id"]) == 10
