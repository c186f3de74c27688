"""Scoring external predictions with every metric but the LLM judge, through materialize():
external_predictions -> evaluation_items -> BERTScore, Epitome (ER/IP/EX levels, diff-Epitome),
valence (VADER), diversity, and optionally emotional alignment (an LLM call per item), then the
leaderboard SQL. The Epitome classifiers are trained first and not timed (they are trained once,
not per scoring run).

    .venv/bin/python bench/bench_external_scoring.py --items 2500 [--alignment]"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2500)
    ap.add_argument("--alignment", action="store_true", help="include the LLM emotion-naming metric")
    ap.add_argument("--epitome-rows", type=int, default=0, help="0 = train on all Epitome rows")
    ap.add_argument(
        "--classifiers-from",
        default=None,
        help="a models folder of an earlier run: copy its epitome_*_classifier folders instead of training",
    )
    args = ap.parse_args()

    import torch
    from _eval_bench_data import ed_external_predictions  # bench/ is on sys.path as the script folder
    from dagster import materialize

    from empathy_dag.defs.evaluate import assets as ev
    from empathy_dag.defs.evaluate.resources import EvaluationConfig
    from empathy_dag.defs.profiles import local_resources
    from empathy_dag.defs.warehouse.definitions import sql_assets

    root = Path(tempfile.mkdtemp(prefix="bench_external_"))
    csv_path = ed_external_predictions(args.items, root / "external.csv")
    resources = local_resources(root / "data")
    resources["evaluation"] = EvaluationConfig(
        systems=[],
        baseline_system="shifted",
        external_prediction_files=[str(csv_path)],
        judge_enabled=False,
        alignment_enabled=args.alignment,
        epitome_max_rows=args.epitome_rows,
    )
    timings = {}
    start = time.perf_counter()
    prep = [] if args.classifiers_from else [ev.epitome_classifiers]
    if args.classifiers_from:
        for key in ev.EPITOME_KEYS.values():
            shutil.copytree(Path(args.classifiers_from) / key, resources["model_store"].folder(key))
    if args.alignment:
        prep.append(__import__("empathy_dag.defs.generate.assets", fromlist=["base_model"]).base_model)
    if prep:
        assert materialize(prep, resources=resources).success
    timings["untimed_preparation_s"] = round(time.perf_counter() - start, 1)

    steps = [
        ev.external_predictions,
        ev.evaluation_items,
        ev.metric_bertscore,
        ev.metric_epitome,
        ev.metric_valence,
        ev.metric_diversity,
        ev.metric_judge,
        ev.metric_alignment,
        ev.metric_retention,
        ev.scorecard_tables,
        *[a for a in sql_assets if a.key.path[-1] in ("leaderboard", "leaderboard_overall")],
    ]
    start, cpu_start = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    result = materialize(steps, resources=resources)
    assert result.success
    total = time.perf_counter() - start
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of this process (in-process executor: every step) next to the wall time: on a shared
    # machine the wall time also counts the time other processes held the 2 cores.
    cpu_s = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    load = os.getloadavg()
    per_step = {}
    for event in result.get_step_success_events():
        per_step[event.step_key] = round(event.event_specific_data.duration_ms / 1000, 1)
    print(
        json.dumps(
            {
                "items": args.items,
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "alignment": args.alignment,
                "total_s": round(total, 1),
                "cpu_s": round(cpu_s, 1),
                "load_average_1_5_15": [round(x, 1) for x in load],
                "per_step_s": per_step,
                **timings,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
