"""Fine-tuning an encoder for sequence classification with transformers' `Trainer`: the shared
machinery of the Epitome cross-encoders (seeker post, response) -> level 0/1/2 and the GoEmotions
multi-label emotion classifier. Pure (no Dagster): both stages import it.

A model is a plain transformers folder (`config.json`, `model.safetensors`, tokenizer files) plus
`classifier.json` (task, labels, thresholds, metrics, training settings), loadable by
`AutoModelForSequenceClassification` anywhere, with no pickle."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from empathy_dag.models import hub_offline_by_default, resolve_encoder

CLASSIFIER_CONFIG = "classifier.json"


@dataclass(frozen=True)
class FineTuneSettings:
    """Defaults are Epitome's published recipe (lr 2e-5, batch 32, max length 64 per side, 4 epochs)
    except the learning rate: a 6-layer MiniLM head needs a larger step than RoBERTa-base."""

    epochs: float = 4.0
    max_steps: int = -1  # > 0 overrides epochs (tests: a few steps)
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 128  # of the (seeker, response) pair together, or of one text
    # single-label: cross-entropy weighted by inverse class frequency, because macro-F1 counts the
    # rare levels (EX level 1: 3% of rows) as much as the frequent one
    balanced_classes: bool = True
    seed: int = 0
    device: str = "cpu"

    def as_dict(self) -> dict:
        return asdict(self)


class _Pairs:
    """A map-style dataset of tokenized examples, padded per batch by the collator."""

    def __init__(self, encodings: dict, labels: np.ndarray | None):
        self.encodings, self.labels = encodings, labels

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def tokenize(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> dict:
    texts = [t or "" for t in texts]
    if pairs is None:
        return tokenizer(texts, truncation=True, max_length=max_length)
    # longest_first trims whichever side is longer, so a long seeker post cannot push the response out
    return tokenizer(texts, [p or "" for p in pairs], truncation="longest_first", max_length=max_length)


def load_for_training(model_spec: str, num_labels: int, multi_label: bool, label_names: Sequence[str]):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hub_offline_by_default()
    path = resolve_encoder(model_spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=num_labels,
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
    )
    return model, tokenizer


def finetune(
    model_spec: str,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    labels: np.ndarray,
    label_names: Sequence[str],
    settings: FineTuneSettings,
    work_dir: str | Path,
    *,
    multi_label: bool = False,
):
    """Fine-tune `model_spec` (embedded:minilm, a folder or a hub id) on the rows given; returns
    (model, tokenizer, stats). `labels`: class ids (n,) or a multi-hot (n, labels) matrix."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    set_seed(settings.seed)
    model, tokenizer = load_for_training(model_spec, len(label_names), multi_label, label_names)
    encodings = tokenize(tokenizer, texts, pairs, settings.max_length)
    y = labels.astype(np.float32) if multi_label else labels.astype(np.int64)
    if multi_label:
        _bias_to_label_priors(model, y)
    compute_loss_func = None
    class_weights = None
    if not multi_label and settings.balanced_classes:
        counts = np.bincount(y, minlength=len(label_names)).astype(np.float64)
        # sklearn's "balanced": n / (classes * count); an absent class gets weight 0, not infinity
        class_weights = np.where(counts > 0, counts.sum() / (len(label_names) * np.maximum(counts, 1)), 0.0)
        weight = torch.tensor(class_weights, dtype=torch.float32)

        def compute_loss_func(outputs, targets, num_items_in_batch=None):
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
            return torch.nn.functional.cross_entropy(logits, targets, weight=weight.to(logits.device))

    steps_per_epoch = int(np.ceil(len(y) / settings.batch_size))
    total_steps = (
        settings.max_steps if settings.max_steps > 0 else int(np.ceil(steps_per_epoch * settings.epochs))
    )
    args = TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=int(settings.warmup_ratio * total_steps),
        lr_scheduler_type="linear",
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        logging_steps=max(1, total_steps // 20),
        use_cpu=settings.device == "cpu",
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_Pairs(encodings, y),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_loss_func=compute_loss_func,
    )
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    losses = [round(float(h["loss"]), 4) for h in trainer.state.log_history if "loss" in h]
    stats = {
        "train_seconds": round(seconds, 1),
        "steps": int(result.global_step),
        "train_rows": len(y),
        # examples seen (steps x batch, the last batch of an epoch may be short) per second
        "examples_per_s": round(
            min(int(result.global_step) * settings.batch_size, len(y) * max(settings.epochs, 1)) / seconds, 1
        ),
        "loss_curve": losses,
        "final_loss": losses[-1] if losses else None,
        "class_weights": None if class_weights is None else [round(float(w), 4) for w in class_weights],
    }
    model.eval()
    return model, tokenizer, stats


def _bias_to_label_priors(model, y: np.ndarray) -> None:
    """Start each sigmoid at its label's base rate (bias = log-odds of the prior, as in the focal-loss
    paper): a fresh head starts at 0.5 for all 28 labels, and a short CPU run spends its steps just
    unlearning that instead of separating the labels."""
    import torch

    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == y.shape[1]]
    if not heads or heads[-1].bias is None:
        return
    prior = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        heads[-1].bias.copy_(torch.tensor(np.log(prior / (1 - prior)), dtype=heads[-1].bias.dtype))


def predict_logits(
    model, tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int, batch_size: int = 64
) -> np.ndarray:
    """Logits (n, labels), batches sorted by length so that padding stays small."""
    import torch

    n = len(texts)
    if n == 0:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    lengths = [len(t or "") + (len(pairs[i] or "") if pairs is not None else 0) for i, t in enumerate(texts)]
    order = np.argsort(lengths)
    out = np.zeros((n, model.config.num_labels), dtype=np.float32)
    device = next(model.parameters()).device
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = tokenize(
            tokenizer, [texts[i] for i in idx], None if pairs is None else [pairs[i] for i in idx], max_length
        )
        batch = tokenizer.pad(batch, return_tensors="pt").to(device)
        with torch.inference_mode():
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out


def save_classifier(folder: str | Path, model, tokenizer, config: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / CLASSIFIER_CONFIG).write_text(json.dumps(config, indent=1, ensure_ascii=False))
    return folder


def load_classifier(folder: str | Path, device: str = "cpu"):
    """(model, tokenizer, classifier.json) of a folder written by `save_classifier`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer, json.loads((folder / CLASSIFIER_CONFIG).read_text())


def is_finetuned_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / CLASSIFIER_CONFIG).is_file() and (folder / "config.json").is_file()


def read_id_file(path: str | Path) -> set[str]:
    """Ids of a holdout / exclude file: one id a line (.txt), or a CSV/TSV with an `id` column
    (Epitome pairs may instead give `sp_id` and `rp_id` columns: the id is `sp_id:rp_id`)."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"holdout/exclude id file {path} does not exist")
    if path.suffix.lower() in (".csv", ".tsv"):
        frame = pl.read_csv(
            path, separator="\t" if path.suffix.lower() == ".tsv" else ",", infer_schema_length=0
        )
        if "id" in frame.columns:
            ids = frame["id"].to_list()
        elif {"sp_id", "rp_id"} <= set(frame.columns):
            ids = [f"{s}:{r}" for s, r in frame.select("sp_id", "rp_id").iter_rows()]
        else:
            raise ValueError(
                f"{path}: an id file needs an `id` column (or `sp_id` and `rp_id`); has {frame.columns}"
            )
    else:
        ids = path.read_text(encoding="utf-8").splitlines()
    ids = {str(i).strip() for i in ids if i is not None and str(i).strip() and not str(i).startswith("#")}
    if not ids:
        raise ValueError(f"{path}: no ids in the holdout/exclude file")
    return ids


def bootstrap_macro_f1(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1 over test items (rows resampled with replacement).
    Works for class ids (n,) and multi-hot matrices (n, labels)."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    n = len(y_true)
    if n < 2:
        return float("nan"), float("nan")
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        if y_true.ndim == 1:
            values.append(
                f1_score(y_true[idx], y_pred[idx], average="macro", labels=list(labels), zero_division=0)
            )
        else:
            values.append(f1_score(y_true[idx], y_pred[idx], average="macro", zero_division=0))
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))
