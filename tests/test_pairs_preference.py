"""EmPO pairs: always against the opposite emotion, never the same one, traceable and deterministic;
lineage through the opposite-emotion partition mapping."""

from __future__ import annotations

import polars as pl
from dagster import materialize

from empathy_dag.defs.metadata import content_data_version
from empathy_dag.pairs.build import PAIR_SCHEMA
from empathy_dag.taxonomy import default_taxonomy
from tests.test_pairs_splits import all_emotions_tags, curated_stand_in, read_partition, seed_dialogues


def _splits():
    from empathy_dag.pairs.splits import assign_splits

    return assign_splits(seed_dialogues())


def test_pairs_use_the_opposite_emotion_and_are_deterministic():
    from empathy_dag.pairs.build import build_preference_pairs

    tax = default_taxonomy()
    df = _splits()
    by_id = {r["dialogue_id"]: r for r in df.iter_rows(named=True)}
    total = 0
    for emotion in tax.labels:
        opposite = tax.opposite(emotion)
        pairs, stats = build_preference_pairs(
            df, df, emotion=emotion, opposite=opposite, k=3, seed=7, same_split=False
        )
        again, _ = build_preference_pairs(
            df, df, emotion=emotion, opposite=opposite, k=3, seed=7, same_split=False
        )
        assert pairs.equals(again)
        total += pairs.height
        for row in pairs.iter_rows(named=True):
            src, neg = by_id[row["prompt_dialogue_id"]], by_id[row["rejected_dialogue_id"]]
            assert src["emotion"] == emotion and neg["emotion"] == opposite != emotion
            assert row["rejected_emotion"] == opposite
            assert row["prompt"] == src["speaker_utterance"] and row["chosen"] == src["listener_reply"]
            assert row["rejected"] == neg["listener_reply"] and neg["language"] == src["language"]
        # k distinct draws per prompt, indexed 0..k-1
        per_prompt = pairs.group_by("prompt_dialogue_id").agg(
            pl.len().alias("n"), pl.col("rejected_dialogue_id").n_unique().alias("u"), pl.col("draw").max()
        )
        assert (per_prompt["n"] == per_prompt["u"]).all() and per_prompt["n"].max() <= 3
        assert (per_prompt["draw"] == per_prompt["n"] - 1).all()
        assert stats.prompts == df.filter(pl.col("emotion") == emotion).height
        assert stats.prompts_without_opposite + per_prompt.height == stats.prompts
    assert total > 500
    other_seed, _ = build_preference_pairs(
        df, df, emotion="joy", opposite=tax.opposite("joy"), k=2, seed=8, same_split=False
    )
    same_seed, _ = build_preference_pairs(
        df, df, emotion="joy", opposite=tax.opposite("joy"), k=2, seed=7, same_split=False
    )
    assert other_seed["rejected_dialogue_id"].to_list() != same_seed["rejected_dialogue_id"].to_list()


def test_same_split_keeps_held_out_replies_out_of_training_pairs():
    from empathy_dag.pairs.build import build_preference_pairs

    tax = default_taxonomy()
    df = _splits()
    split_of = dict(zip(df["dialogue_id"], df["split"]))
    pairs, _ = build_preference_pairs(df, df, emotion="joy", opposite=tax.opposite("joy"), k=3, seed=0)
    assert pairs.height > 0
    for row in pairs.iter_rows(named=True):
        assert split_of[row["rejected_dialogue_id"]] == split_of[row["prompt_dialogue_id"]] == row["split"]


def test_preference_pairs_asset_reads_the_opposite_partition(resources):
    from empathy_dag.defs.pairs.assets import dataset_splits, preference_pairs

    tax = default_taxonomy()
    result = materialize(
        [curated_stand_in(seed_dialogues()), dataset_splits, preference_pairs],
        resources=resources,
        tags=all_emotions_tags(),
    )
    assert result.success
    # lineage: pairs[joy] depends on splits[joy] and splits[opposite(joy)]
    from empathy_dag.defs.pairs.assets import opposite_partition_mapping

    mapping = opposite_partition_mapping()
    upstream = [
        u for u, ds in mapping.downstream_partition_keys_by_upstream_partition_key.items() if "joy" in ds
    ]
    assert sorted(upstream) == sorted({"joy", tax.opposite("joy")})
    events = result.asset_materializations_for_node("preference_pairs")
    md = events[0].metadata
    assert md["train_pairs"].value > 0 and "prompts_without_opposite" in md
    # Each partition's event carries its own content hash; the data version Dagster records is derived
    # from them (one version per output in a single-run backfill: see metadata.content_data_version).
    hashes = {m.partition: m.metadata["content_hash"].value for m in events}
    assert set(hashes) == set(tax.labels) and hashes == md["content_hashes"].value
    assert {m.tags["dagster/data_version"] for m in events} == {content_data_version(hashes)}
    columns = {c.name: c for c in md["dagster/column_schema"].schema.columns}
    assert list(columns) == list(PAIR_SCHEMA) and columns["rejected"].description
    splits = {e: read_partition(resources, "dataset_splits", e) for e in tax.labels}
    emotion_of = {d: e for e, df in splits.items() for d in df["dialogue_id"].to_list()}
    for emotion in ("joy", "anger", "fear", "neutral"):
        pairs = read_partition(resources, "preference_pairs", emotion)
        assert pairs.height > 0 and set(pairs["split"].unique()) <= {"train", "validation", "test"}
        assert {emotion_of[d] for d in pairs["rejected_dialogue_id"]} == {tax.opposite(emotion)}
        assert {emotion_of[d] for d in pairs["prompt_dialogue_id"]} == {emotion}


def _reference_rejected(prompts, candidates, k, seed):
    """The pre-index algorithm (pool rebuilt per prompt by a full scan), kept here as the oracle."""
    from empathy_dag.pairs.build import _draw_rng

    pools = {}
    for c in candidates.sort("dialogue_id").iter_rows(named=True):
        pools.setdefault((c["split"], c["language"]), []).append(c)
    out = []
    for r in prompts.sort("dialogue_id").iter_rows(named=True):
        pool = [
            c for c in pools.get((r["split"], r["language"]), []) if c["situation_id"] != r["situation_id"]
        ]
        if pool:
            out += [
                (r["dialogue_id"], c["dialogue_id"])
                for c in _draw_rng(seed, r["dialogue_id"]).sample(pool, min(k, len(pool)))
            ]
    return out


def test_indexed_pairing_draws_exactly_what_the_full_scan_drew():
    """Linear-time pairing is the same function of (prompts, pool, seed) as before, including the rare
    prompt whose situation also occurs in the opposite pool (it must never draw its own situation)."""
    import time

    from empathy_dag.pairs.build import build_preference_pairs

    n = 3000
    prompts = pl.DataFrame(
        {
            "dialogue_id": [f"p{i:05d}" for i in range(n)],
            "situation_id": [f"s{i % 700}" for i in range(n)],
            "emotion": ["joy"] * n,
            "split": ["train", "validation", "test"] * (n // 3),
            "language": ["en"] * n,
            "speaker_utterance": ["u"] * n,
            "listener_reply": ["r"] * n,
        }
    )
    # Candidates share some situation ids with the prompts (s0..s99), the case the index must still honour.
    candidates = prompts.with_columns(
        pl.col("dialogue_id").str.replace("p", "c"),
        pl.lit("sadness").alias("emotion"),
        pl.when(pl.col("dialogue_id").str.slice(1).cast(pl.Int64) % 7 == 0)
        .then(pl.col("situation_id"))
        .otherwise(pl.lit("x") + pl.col("dialogue_id"))
        .alias("situation_id"),
    )
    t = time.perf_counter()
    pairs, stats = build_preference_pairs(prompts, candidates, emotion="joy", opposite="sadness", k=3, seed=5)
    seconds = time.perf_counter() - t
    got = list(zip(pairs["prompt_dialogue_id"], pairs["rejected_dialogue_id"]))
    assert got == _reference_rejected(prompts, candidates, 3, 5)
    assert stats.pairs == 3 * n
    situation = dict(zip(candidates["dialogue_id"], candidates["situation_id"]))
    assert all(situation[c] != s for s, c in zip(pairs["prompt_situation_id"], pairs["rejected_dialogue_id"]))
    assert seconds < 10  # the full scan was ~n^2/3 = 3e6 comparisons; the index makes it ~n
