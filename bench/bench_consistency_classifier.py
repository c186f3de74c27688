"""Emotion consistency at scale: the n-gram classifier against MiniLM classifiers on the filter's own decision.

The consistency filter drops a dialogue when the classifier reads the speaker's turn as positive while the
row's emotion is negative, or the reverse, at probability >= 0.5 (`filters.contradiction_reason`). What
matters is therefore, on text whose true emotion is known:
- detection: a row relabelled to an emotion of the opposite valence is dropped;
- false drops: a correctly labelled row is dropped.
Both are measured on the GoEmotions test comments with exactly one positive or negative label (every row
counts once as correctly labelled and once relabelled to the opposite valence), per classifier on the same
items, with bootstrap 95% intervals and paired bootstrap intervals of the differences. Also: macro-F1 over
the 28 labels and the 4 sentiment groups, and rows/s of `predict_groups` over the test texts.

Arms: `ngram` (hashed word + char n-grams, logistic heads: `emotion_classifier` with model=ngram) and
`minilm-linear` (frozen MiniLM + the same heads), both trained here on the same sample of the train split;
`--saved FOLDER` adds a saved `emotion_classifier` folder of any kind (e.g. the demo's, or a fine-tuned one).

    PYTHONPATH=. .venv/bin/python bench/bench_consistency_classifier.py --train-rows 20000 \\
        --saved .dagster_home/data/models/emotion_classifier --save-ngram /tmp/ngram_classifier
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench._hardware import cpu_info
from empathy_dag.curate.classifier import (
    NGRAM_ENCODER,
    FineTunedEmotionClassifier,
    load_emotion_classifier,
    train_emotion_classifier,
)
from empathy_dag.ingest.readers import read_goemotions_tsv
from empathy_dag.taxonomy import default_taxonomy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "goemotions"


def load_examples(data: Path, labels: list[str]) -> pl.DataFrame:
    rows = []
    for split in ("train", "dev", "test"):
        rows.extend(read_goemotions_tsv(data / f"{split}.tsv", labels))
    return pl.DataFrame(rows)


def decisions(clf, texts: list[str], gold_groups: list[str], tax) -> dict:
    """Per item: detected (relabelled to the opposite valence -> dropped), false drop (own label ->
    dropped); plus the predicted group per item and the seconds `predict_groups` took."""
    t = time.perf_counter()
    predicted = clf.predict_groups(texts, tax)
    seconds = time.perf_counter() - t
    opposite = {"positive": "negative", "negative": "positive"}
    detected = np.array([g == gold and p >= 0.5 for (g, p), gold in zip(predicted, gold_groups)])
    false_drop = np.array([g == opposite[gold] and p >= 0.5 for (g, p), gold in zip(predicted, gold_groups)])
    return {
        "detected": detected,
        "false_drop": false_drop,
        "groups": [g for g, _ in predicted],
        "seconds": seconds,
    }


def bootstrap(values: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n, len(values)))
    means = values[idx].mean(axis=1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def main() -> None:
    from sklearn.metrics import f1_score

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--train-rows", type=int, default=20000)
    ap.add_argument("--saved", default=None, help="a saved emotion_classifier folder (any kind)")
    ap.add_argument("--no-minilm", action="store_true", help="skip the MiniLM linear arm (slow)")
    ap.add_argument("--save-ngram", default=None, help="save the n-gram classifier here (bench_scale)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    tax = default_taxonomy()
    report: dict = {"hardware_before": cpu_info(), "train_rows": args.train_rows, "arms": {}}
    examples = load_examples(Path(args.data), list(tax.labels))
    test = examples.filter((pl.col("split") == "test") & (pl.col("labels").list.len() > 0))
    # The filter's task: comments with exactly one label, of positive or negative valence.
    single = test.filter(pl.col("labels").list.len() == 1).with_columns(
        pl.col("labels").list.first().alias("label")
    )
    single = single.filter(
        pl.col("label").map_elements(tax.sentiment, return_dtype=pl.String).is_in(["positive", "negative"])
    )
    texts, gold = single["text"].to_list(), [tax.sentiment(x) for x in single["label"].to_list()]
    report["filter_items"] = len(texts)

    arms = {}
    encoders = [("ngram", NGRAM_ENCODER)] + ([] if args.no_minilm else [("minilm-linear", None)])
    for name, encoder in encoders:
        t = time.perf_counter()
        kwargs = {"encoder": encoder} if encoder else {}
        clf = train_emotion_classifier(examples, tax, max_train_rows=args.train_rows, **kwargs)
        train_s = time.perf_counter() - t
        arms[name] = clf
        report["arms"][name] = {"train_seconds": round(train_s, 1), **(clf.metrics or {})}
        print(name, "trained in", round(train_s, 1), "s", clf.metrics, flush=True)
        if name == "ngram" and args.save_ngram:
            clf.save(Path(args.save_ngram))
    if args.saved:
        saved = load_emotion_classifier(Path(args.saved))
        name = f"saved ({'finetuned' if isinstance(saved, FineTunedEmotionClassifier) else saved.encoder})"
        arms[name] = saved
        report["arms"][name] = {"folder": args.saved, **(saved.metrics or {})}

    all_texts = test["text"].to_list()
    all_groups = [tax.sentiment(x[0]) for x in test["labels"].to_list()]
    per_arm = {}
    for name, clf in arms.items():
        d = decisions(clf, texts, gold, tax)
        # the whole test split once more for rows/s and the 4-group macro-F1 (first label's group)
        t = time.perf_counter()
        predicted_all = [g for g, _ in clf.predict_groups(all_texts, tax)]
        seconds = time.perf_counter() - t
        per_arm[name] = d
        report["arms"][name].update(
            {
                "detection": round(float(d["detected"].mean()), 4),
                "detection_ci95": bootstrap(d["detected"].astype(float)),
                "false_drop": round(float(d["false_drop"].mean()), 4),
                "false_drop_ci95": bootstrap(d["false_drop"].astype(float)),
                "group_macro_f1_test_first_label": round(
                    float(f1_score(all_groups, predicted_all, average="macro")), 4
                ),
                "predict_rows_per_s": round(len(all_texts) / seconds),
                "predict_rows": len(all_texts),
            }
        )
        print(name, {k: v for k, v in report["arms"][name].items() if not isinstance(v, dict)}, flush=True)
    report["paired"] = {}
    names = list(per_arm)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for key in ("detected", "false_drop"):
                diff = per_arm[a][key].astype(float) - per_arm[b][key].astype(float)
                report["paired"][f"{a} - {b}: {key}"] = {
                    "mean": round(float(diff.mean()), 4),
                    "ci95": bootstrap(diff),
                }
    report["hardware_after"] = cpu_info()
    print(json.dumps(report["paired"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
