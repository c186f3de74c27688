"""The emotion classifier behind the emotion-consistency filter: all-MiniLM-L6-v2 sentence embeddings
(embedded model, no hub) and a multinomial logistic-regression head over the 28 GoEmotions labels.

Saved as a folder (never pickled): `head.safetensors` (coef, intercept, float32), `classifier.json`
(labels in column order, encoder spec, metrics). Prediction is a matrix product and a softmax in
numpy, so loading it needs neither scikit-learn nor a pickle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl

from empathy_dag.models import EMBEDDED_MINILM, resolve_encoder
from empathy_dag.taxonomy import Taxonomy

HEAD_FILE = "head.safetensors"
CONFIG_FILE = "classifier.json"


@cache
def _encoder(spec: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_encoder(spec), device="cpu")


def embed(texts: list[str], encoder: str = EMBEDDED_MINILM, batch_size: int = 128) -> np.ndarray:
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = _encoder(encoder)
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def single_label_rows(examples: pl.DataFrame) -> pl.DataFrame:
    """One (text, label, split) row per example, using its first label. Most GoEmotions comments carry
    one label; a single-label head keeps the classifier small and its probabilities calibrated."""
    return (examples.filter(pl.col("labels").list.len() > 0)
            .with_columns(pl.col("labels").list.first().alias("label"))
            .select("text", "label", "split"))


@dataclass
class EmotionClassifier:
    labels: list[str]
    coef: np.ndarray  # (n_labels, dim)
    intercept: np.ndarray  # (n_labels,)
    encoder: str = EMBEDDED_MINILM
    metrics: dict | None = None

    def predict_proba(self, texts: list[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        x = embed(texts, self.encoder) if embeddings is None else embeddings
        logits = x @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, texts: list[str]) -> list[str]:
        p = self.predict_proba(texts)
        return [self.labels[i] for i in p.argmax(axis=1)]

    def predict_groups(self, texts: list[str], taxonomy: Taxonomy) -> list[tuple[str, float]]:
        """(sentiment group, probability mass of that group) per text: label probabilities summed per
        group (positive / negative / ambiguous / neutral), the heaviest group wins."""
        if not texts:
            return []
        p = self.predict_proba(texts)
        groups = sorted({taxonomy.sentiment(label) for label in self.labels})
        mass = np.stack([p[:, [i for i, lab in enumerate(self.labels) if taxonomy.sentiment(lab) == g]].sum(axis=1)
                         for g in groups], axis=1)
        best = mass.argmax(axis=1)
        return [(groups[b], float(mass[i, b])) for i, b in enumerate(best)]

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({"coef": self.coef.astype(np.float32), "intercept": self.intercept.astype(np.float32)},
                  str(folder / HEAD_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(
            {"labels": self.labels, "encoder": self.encoder, "metrics": self.metrics or {}}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> EmotionClassifier:
        from safetensors.numpy import load_file

        config = json.loads((folder / CONFIG_FILE).read_text())
        head = load_file(str(folder / HEAD_FILE))
        return cls(labels=config["labels"], coef=head["coef"], intercept=head["intercept"],
                   encoder=config["encoder"], metrics=config.get("metrics"))


def is_saved(folder: Path) -> bool:
    return (folder / HEAD_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def train_emotion_classifier(
    examples: pl.DataFrame, taxonomy: Taxonomy, *, encoder: str = EMBEDDED_MINILM,
    max_train_rows: int = 20000, c: float = 4.0, seed: int = 0,
) -> EmotionClassifier:
    """Fit on the `train` split (dev too when there is no test split), evaluate on `test` (else `dev`):
    macro-F1 over labels and over sentiment groups, accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    rows = single_label_rows(examples)
    splits = set(rows["split"].unique().to_list())
    held_out = "test" if "test" in splits else "dev"
    train = rows.filter(pl.col("split") == "train")
    if held_out == "dev" and "dev" not in splits:
        raise ValueError("goemotions_examples has no dev or test split to evaluate on")
    if max_train_rows and train.height > max_train_rows:
        train = train.sample(max_train_rows, seed=seed)
    test = rows.filter(pl.col("split") == held_out)
    x_train, x_test = embed(train["text"].to_list(), encoder), embed(test["text"].to_list(), encoder)
    # No class re-weighting: the filter sums label probabilities per sentiment group, which needs
    # calibrated probabilities more than recall on the rarest labels.
    head = LogisticRegression(C=c, max_iter=1000)
    head.fit(x_train, train["label"].to_numpy())
    labels = [str(label) for label in head.classes_]
    coef, intercept = head.coef_, head.intercept_
    if len(labels) == 2:  # sklearn stores one row for a binary problem
        coef, intercept = np.vstack([-coef[0], coef[0]]), np.array([-intercept[0], intercept[0]])
    clf = EmotionClassifier(labels=labels, coef=coef.astype(np.float32), intercept=intercept.astype(np.float32),
                            encoder=encoder)
    predicted = clf.predict_proba([], embeddings=x_test).argmax(axis=1)
    y_pred = [labels[i] for i in predicted]
    y_true = test["label"].to_list()
    group_true = [taxonomy.sentiment(y) for y in y_true]
    group_pred = [taxonomy.sentiment(y) for y in y_pred]
    clf.metrics = {
        "held_out_split": held_out,
        "train_rows": train.height,
        "held_out_rows": test.height,
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)), 4),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "sentiment_macro_f1": round(float(f1_score(group_true, group_pred, average="macro", zero_division=0)), 4),
        "chance_macro_f1": round(1.0 / max(1, len(labels)), 4),
    }
    return clf
