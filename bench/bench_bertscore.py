"""BERTScore through the pipeline (the `metric_bertscore` asset, materialized) versus calling
bert_score directly, same backbone (embedded MiniLM, 6 layers) and batch size, in one process.

    .venv/bin/python bench/bench_bertscore.py --pairs 1000

Pairs/s counts scoring only (the asset reports its model load separately). Direct calls and
pipeline runs alternate (`--rounds` pipeline runs between rounds+1 direct calls) and the medians are
compared, so warm-up and a busy shared machine hit both sides alike."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import duckdb
    import torch
    from _eval_bench_data import ed_external_predictions  # bench/ is on sys.path as the script folder
    from bert_score import BERTScorer
    from dagster import materialize

    from empathy_dag.defs.evaluate import assets as ev
    from empathy_dag.defs.evaluate.resources import EvaluationConfig
    from empathy_dag.defs.profiles import local_resources
    from empathy_dag.models import embedded_minilm_dir

    root = Path(tempfile.mkdtemp(prefix="bench_bertscore_"))
    csv_path = ed_external_predictions(args.pairs, root / "external.csv")
    resources = local_resources(root / "data")
    resources["evaluation"] = EvaluationConfig(
        external_prediction_files=[str(csv_path)], bertscore_batch_size=args.batch_size
    )
    assert materialize([ev.external_predictions, ev.evaluation_items], resources=resources).success
    db = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
    items = db.execute("SELECT prediction, reference FROM evaluation_items").pl()
    db.close()
    cands, refs = items["prediction"].to_list(), items["reference"].to_list()

    scorer = BERTScorer(model_type=str(embedded_minilm_dir()), num_layers=6, batch_size=args.batch_size)
    scorer.score(cands[:64], refs[:64])  # warm-up

    def direct() -> tuple[float, list[float]]:
        start = time.perf_counter()
        _, _, f = scorer.score(cands, refs, batch_size=args.batch_size)
        return len(cands) / (time.perf_counter() - start), f.tolist()

    # Alternate direct and pipeline runs and compare medians: the machine is shared, and a single
    # pair of runs mostly measures whoever else was busy at that moment.
    direct_rates, pipeline_rates, load_s = [], [], []
    rate, f_direct = direct()
    direct_rates.append(rate)
    for _ in range(args.rounds):
        result = materialize([ev.metric_bertscore], resources=resources)
        md = result.asset_materializations_for_node("metric_bertscore")[0].metadata
        pipeline_rates.append(md["pairs_per_s"].value)
        load_s.append(md["load_seconds"].value)
        direct_rates.append(direct()[0])
    db = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
    f_pipeline = db.execute("SELECT bertscore_f1 FROM metric_bertscore").pl()["bertscore_f1"].to_list()
    out = {
        "pairs": len(cands),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "direct_pairs_per_s": [round(r, 1) for r in direct_rates],
        "pipeline_pairs_per_s": pipeline_rates,
        "pipeline_scorer_load_s": load_s,
        "ratio_of_medians": round(statistics.median(pipeline_rates) / statistics.median(direct_rates), 3),
        "ratio_of_best": round(max(pipeline_rates) / max(direct_rates), 3),
        "max_abs_f1_difference": max(abs(a - b) for a, b in zip(sorted(f_pipeline), sorted(f_direct))),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
