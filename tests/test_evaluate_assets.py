"""External predictions scored end to end through materialize(): every metric table, judge-human
agreement, retention, the SQL leaderboard and its chart, on real EmpatheticDialogues turns and the
real embedded models (SmolLM2 as judge and emotion namer, MiniLM for BERTScore and Epitome)."""

import base64
import csv

import duckdb
import polars as pl
import pytest
from dagster import AssetKey, materialize

from empathy_dag.defs.evaluate import assets as ev
from empathy_dag.defs.evaluate.resources import EvaluationConfig
from empathy_dag.evaluate.items import item_id
from empathy_dag.taxonomy import default_taxonomy
from tests.conftest import shared_file

EMOTIONS_ED = ["afraid", "proud", "sad"]
PER_EMOTION = 3


def _ed_rows():
    path = shared_file("empathetic_dialogues", "utterance_pairs_valid.csv")
    df = pl.read_csv(path, infer_schema_length=0).filter(
        (pl.col("level") == "1") & pl.col("context").is_in(EMOTIONS_ED)
    )
    df = df.with_columns(pl.col(c).str.replace_all("_comma_", ",") for c in ("sp1", "sp2", "prompt"))
    return pl.concat([df.filter(pl.col("context") == e).head(PER_EMOTION) for e in EMOTIONS_ED])


@pytest.fixture
def external_file(tmp_path):
    """Two outside systems on the same real items: `oracle` answers with the reference itself,
    `shuffled` with another conversation's reply (a bad system)."""
    rows = _ed_rows()
    replies = rows["sp2"].to_list()
    path = tmp_path / "external.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["system", "emotion", "situation", "context", "reference", "prediction"])
        for i, r in enumerate(rows.iter_rows(named=True)):
            w.writerow(
                ["shuffled", r["context"], r["prompt"], r["sp1"], r["sp2"], replies[(i + 4) % len(replies)]]
            )
            w.writerow(["oracle", r["context"], r["prompt"], r["sp1"], r["sp2"], r["sp2"]])
    return path, rows


def _sql_assets(*names):
    from empathy_dag.defs.warehouse.definitions import sql_assets

    return [a for a in sql_assets if a.key.path[-1] in names]


@pytest.mark.slow
@pytest.mark.shared_data
def test_external_predictions_end_to_end(resources, data_root, base_model_dir, external_file, tmp_path):
    path, rows = external_file
    tax = default_taxonomy()
    # human ratings for every (item, system): the oracle rated high, the shuffled replies low
    human = tmp_path / "human.csv"
    with open(human, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "system", "dimension", "rater", "score"])
        for k, r in enumerate(rows.iter_rows(named=True)):
            iid = item_id(tax.normalize_label(r["context"]), r["sp1"], r["sp2"])
            for rater in ("r1", "r2"):
                for dim in ("fluency", "general_empathy"):
                    w.writerow([iid, "oracle", dim, rater, 4 + (k + len(rater)) % 2])
                    w.writerow([iid, "shuffled", dim, rater, 1 + k % 3])
    model_dir = resources["model_store"].folder("base_model")
    model_dir.symlink_to(base_model_dir, target_is_directory=True)
    resources["evaluation"] = EvaluationConfig(
        systems=["base"],
        baseline_system="shuffled",
        external_prediction_files=[str(path)],
        epitome_max_rows=300,
        epitome_max_length=64,
        epitome_max_steps=2,
        epitome_batch_size=8,
        judge_max_items=2,
        alignment_max_items=3,
        human_ratings_path=str(human),
        agreement_bootstrap=200,
    )
    assets = [
        ev.external_predictions,
        ev.evaluation_items,
        ev.epitome_classifiers,
        ev.metric_bertscore,
        ev.metric_epitome,
        ev.metric_valence,
        ev.metric_diversity,
        ev.metric_judge,
        ev.metric_alignment,
        ev.judge_human_agreement,
        ev.metric_retention,
        ev.scorecard_tables,
        *_sql_assets("leaderboard", "leaderboard_overall"),
        ev.leaderboard_chart,
    ]
    result = materialize(assets, resources=resources)
    assert result.success

    n_items = rows.height
    db = duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True)
    items = db.execute("SELECT * FROM evaluation_items").pl()
    assert items.height == 2 * n_items and set(items["system"]) == {"oracle", "shuffled"}
    assert set(items["emotion"]) == {tax.normalize_label(e) for e in EMOTIONS_ED}

    # BERTScore equals bert_score called directly on the same pairs
    from bert_score import score as bert_score_direct

    from empathy_dag.models import embedded_minilm_dir

    bs = db.execute(
        "SELECT b.system, b.bertscore_f1, i.prediction, i.reference FROM metric_bertscore b "
        "JOIN evaluation_items i USING (system, item_id) ORDER BY b.system, b.item_id"
    ).pl()
    _, _, f = bert_score_direct(
        bs["prediction"].to_list(),
        bs["reference"].to_list(),
        model_type=str(embedded_minilm_dir()),
        num_layers=6,
        batch_size=64,
    )
    # bert_score batches by length, so batch shapes (and float rounding) can differ by ~1e-5
    assert bs["bertscore_f1"].to_list() == pytest.approx(f.tolist(), abs=1e-4)
    assert bs.filter(pl.col("system") == "oracle")["bertscore_f1"].min() == pytest.approx(1.0, abs=1e-4)

    # Epitome: the oracle has the reference's levels, so diff-Epitome is 0 for it
    ep = db.execute("SELECT * FROM metric_epitome").pl()
    assert ep.height == 2 * n_items
    assert (
        ep.filter(pl.col("system") == "oracle")
        .select(pl.sum_horizontal(pl.col("^.*_squared_diff$")).sum())
        .item()
        == 0
    )
    for m in ("er", "ip", "ex"):
        clf_meta = [
            m_
            for m_ in result.get_asset_materialization_events()
            if m_.asset_key == AssetKey(f"epitome_{m}_classifier")
        ]
        md = clf_meta[0].materialization.metadata
        # 2 Trainer steps on 300 rows here for time; bench/bench_metric_models.py measures quality
        assert (
            0 < md["heldout_macro_f1"].value <= 1 and md["heldout_rows"].value + md["train_rows"].value == 300
        )
        assert md["train_test_overlap_seeker_posts"].value == 0 and md["model"].value == "cross_encoder"
        assert len(md["sha256"].value) == 64

    assert db.execute("SELECT count(*) FROM metric_valence WHERE vader_response IS NULL").fetchone()[0] == 0
    div = db.execute("SELECT * FROM metric_diversity WHERE emotion = 'all' ORDER BY system").pl()
    assert div["system"].to_list() == ["oracle", "shuffled"]
    # the shuffled system answers with the same replies, rotated: identical diversity
    assert div["distinct_2"][0] == pytest.approx(div["distinct_2"][1])

    judge = db.execute("SELECT * FROM metric_judge").pl()
    assert judge.height == 2 * 2 * 3  # 2 items x 2 systems x 3 dimensions
    judge_md = result.asset_materializations_for_node("metric_judge")[0].metadata
    assert judge_md["parse_failures"].value == judge["score"].is_null().sum()
    assert judge["score"].drop_nulls().is_between(1, 5).all()

    al = db.execute("SELECT * FROM metric_alignment").pl()
    assert al.height == 2 * 3 and al["alignment_bertscore_f1"].is_not_null().all()

    agree = db.execute("SELECT * FROM judge_human_agreement ORDER BY dimension").pl()
    assert agree["dimension"].to_list() == ["fluency", "general_empathy"]
    judged = judge.filter(
        pl.col("score").is_not_null() & pl.col("dimension").is_in(["fluency", "general_empathy"])
    )
    assert agree["pairs"].sum() == judged.height

    ret = db.execute("SELECT * FROM metric_retention").pl()
    assert ret["system"].to_list() == ["base"] and 1 < ret["perplexity"][0] < 1000

    board = db.execute("SELECT * FROM leaderboard").pl()
    overall = board.filter((pl.col("emotion") == "all") & (pl.col("language") == "all"))
    f1 = {r["system"]: r for r in overall.filter(pl.col("metric") == "bertscore_f1").iter_rows(named=True)}
    # the baseline has no comparison with itself; the oracle (the reference itself) is better on every
    # item, which the paired test (n = 9: exact permutation p = 2/512) says with confidence
    assert f1["shuffled"]["delta"] is None and f1["shuffled"]["verdict"] == "baseline"
    assert f1["oracle"]["delta"] > 0.2 and f1["oracle"]["paired_n"] == n_items
    assert f1["oracle"]["delta_ci_low"] > 0 and f1["oracle"]["verdict"] == "better"
    assert f1["oracle"]["regression"] is False
    assert (
        f1["oracle"]["ci_low"] <= f1["oracle"]["value"] <= f1["oracle"]["ci_high"]
        and f1["oracle"]["n"] == n_items
    )
    assert set(board["emotion"]) == {"all", *items["emotion"].unique()}
    assert {"perplexity", "distinct_2", "diff_epitome_er", "judge_fluency", "alignment_exact"} <= set(
        board["metric"]
    )
    headline = db.execute("SELECT * FROM leaderboard_overall").pl()
    assert headline.height == overall.height

    chart = result.asset_materializations_for_node("leaderboard_chart")[0].metadata["chart"].value
    png = base64.b64decode(chart.split("base64,")[1].rstrip(")"))
    assert png.startswith(b"\x89PNG")

    # what the demo prints at the end: metrics as rows, the baseline's column first
    from empathy_dag.evaluate.report import leaderboard_text

    db.close()
    text = leaderboard_text(data_root / "warehouse.duckdb")
    header = next(line for line in text.splitlines() if line.startswith("| metric"))
    columns = [c.strip() for c in header.split("|")[1:-1]]
    assert columns[:4] == ["metric", "better", "n", "shuffled"] and "oracle" in columns
    oracle_f1 = next(line for line in text.splitlines() if line.startswith("| bertscore_f1")).split("|")[
        1 + columns.index("oracle")
    ]
    assert "[" in oracle_f1 and oracle_f1.strip().endswith("+")  # mean [interval], confidently better
    assert "| bertscore_f1" in text and "| perplexity" in text
