"""The metric models at full size (or as close as the CPU allows): the three Epitome cross-encoders
(ER, IP, EX; optionally the linear model on the same split) and the GoEmotions multi-label emotion classifier, fine-tuned with transformers' Trainer
on the embedded all-MiniLM-L6-v2 (or --backbone), each reported as held-out macro-F1 with a bootstrap
95% interval over test items, next to the published figure, with the CPU training time.

    .venv/bin/python bench/bench_metric_models.py --epochs 1 --max-length 64 \
        --goemotions-train-rows 3000 --goemotions-eval-rows 1000 --out /tmp/metric_models.json

Epitome: a split grouped by seeker post (StratifiedGroupKFold, 20% test, zero seeker posts in both).
GoEmotions: train.tsv (subsampled by --goemotions-train-rows), thresholds tuned on dev.tsv, macro-F1 over
the 28 labels on test.tsv (subsampled by --goemotions-eval-rows; 0 = all)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except Exception:  # noqa: BLE001 - the name is for the record only
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="embedded:minilm")
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epitome-rows", type=int, default=0, help="0 = every row")
    ap.add_argument("--mechanisms", default="er,ip,ex", help="'' = skip Epitome")
    ap.add_argument(
        "--epitome-models", default="cross_encoder", help="cross_encoder,linear: both on the same split"
    )
    ap.add_argument(
        "--goemotions-train-rows", type=int, default=0, help="0 = all 43,410; -1 = skip GoEmotions"
    )
    ap.add_argument("--goemotions-eval-rows", type=int, default=0, help="dev and test rows, 0 = all")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from empathy_dag.curate.classifier import train_finetuned_emotion_classifier
    from empathy_dag.evaluate.metrics.epitome import train_epitome_from_options
    from empathy_dag.ingest.readers import read_goemotions_tsv
    from empathy_dag.settings import shared_data_dir
    from empathy_dag.taxonomy import default_taxonomy
    from empathy_dag.text_classifier import FineTuneSettings

    shared = shared_data_dir()
    settings = FineTuneSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        device=args.device,
    )
    record = {
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
        "args": vars(args),
        "epitome": {},
        "goemotions": None,
    }
    print(json.dumps({k: record[k] for k in ("cpu", "torch_threads", "load_average_start")}), flush=True)
    encoder = None
    for mechanism in filter(None, args.mechanisms.split(",")):
        for model in args.epitome_models.split(","):
            # the asset's own training path: same rows and the same grouped split for both models
            options = {
                "dir": str(shared / "epitome"),
                "model": model,
                "encoder": args.backbone,
                "max_length": args.max_length,
                "max_rows": args.epitome_rows,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "device": args.device,
            }
            if model == "linear" and encoder is None:
                from empathy_dag.evaluate.metrics.encoder import SentenceEncoder

                encoder = SentenceEncoder(args.backbone, max_length=args.max_length, device=args.device)
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as work:
                _, m = train_epitome_from_options(mechanism, options, work, encoder=encoder)
            m["wall_seconds"] = round(time.perf_counter() - start, 1)
            m["load_average_end"] = os.getloadavg()
            record["epitome"][f"{mechanism}/{model}"] = {
                k: v for k, v in m.items() if k != "heldout_ids_first"
            }
            print(
                json.dumps(
                    {
                        "mechanism": mechanism,
                        "model": model,
                        **{
                            k: m.get(k)
                            for k in (
                                "heldout_macro_f1",
                                "heldout_macro_f1_ci95",
                                "heldout_f1_per_level",
                                "published_roberta_macro_f1",
                                "majority_baseline_macro_f1",
                                "train_rows",
                                "heldout_rows",
                                "train_test_overlap_seeker_posts",
                                "heldout_ids_sha256",
                                "train_seconds",
                                "examples_per_s",
                                "confusion",
                            )
                        },
                    }
                ),
                flush=True,
            )
    if args.goemotions_train_rows >= 0:
        import polars as pl

        taxonomy = default_taxonomy()
        rows = [
            r
            for split in ("train", "dev", "test")
            for r in read_goemotions_tsv(shared / "goemotions" / f"{split}.tsv", taxonomy.labels)
        ]
        examples = pl.DataFrame(
            rows,
            schema={"id": pl.String, "text": pl.String, "labels": pl.List(pl.String), "split": pl.String},
        )
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            clf = train_finetuned_emotion_classifier(
                examples,
                taxonomy,
                settings,
                Path(work),
                encoder=args.backbone,
                max_train_rows=args.goemotions_train_rows,
                max_eval_rows=args.goemotions_eval_rows,
            )
        m = dict(clf.metrics)
        m["wall_seconds"] = round(time.perf_counter() - start, 1)
        m["load_average_end"] = os.getloadavg()
        record["goemotions"] = m
        print(
            json.dumps(
                {
                    k: m[k]
                    for k in (
                        "macro_f1",
                        "macro_f1_ci95",
                        "micro_f1",
                        "published_bert_base_macro_f1",
                        "train_rows",
                        "dev_rows",
                        "held_out_rows",
                        "train_seconds",
                        "examples_per_s",
                        "wall_seconds",
                    )
                }
            ),
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
