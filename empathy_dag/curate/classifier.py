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
    # A second head over sentiment groups (what the consistency filter asks): trained on the same
    # embeddings with every example of a group pooled, so it is far steadier than summing 28 label
    # probabilities when the training slice is small and `neutral` dominates.
    groups: list[str] | None = None
    group_coef: np.ndarray | None = None
    group_intercept: np.ndarray | None = None

    def predict_proba(self, texts: list[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        x = embed(texts, self.encoder) if embeddings is None else embeddings
        return _softmax(x @ self.coef.T + self.intercept)

    def predict(self, texts: list[str]) -> list[str]:
        p = self.predict_proba(texts)
        return [self.labels[i] for i in p.argmax(axis=1)]

    def group_mass(self, texts: list[str], taxonomy: Taxonomy,
                   embeddings: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
        """(sentiment groups, (n_texts, n_groups) probabilities): from the group head when saved,
        else label probabilities summed per group."""
        x = embed(texts, self.encoder) if embeddings is None else embeddings
        if self.groups is not None and self.group_coef is not None:
            return list(self.groups), _softmax(x @ self.group_coef.T + self.group_intercept)
        p = self.predict_proba([], embeddings=x)
        groups = sorted({taxonomy.sentiment(label) for label in self.labels})
        mass = np.stack([p[:, [i for i, lab in enumerate(self.labels) if taxonomy.sentiment(lab) == g]].sum(axis=1)
                         for g in groups], axis=1)
        return groups, mass

    def predict_groups(self, texts: list[str], taxonomy: Taxonomy) -> list[tuple[str, float]]:
        """(sentiment group, probability mass of that group) per text: the heaviest of positive /
        negative / ambiguous / neutral."""
        if not texts:
            return []
        groups, mass = self.group_mass(texts, taxonomy)
        best = mass.argmax(axis=1)
        return [(groups[b], float(mass[i, b])) for i, b in enumerate(best)]

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"coef": self.coef, "intercept": self.intercept}
        if self.group_coef is not None:
            tensors.update(group_coef=self.group_coef, group_intercept=self.group_intercept)
        # sklearn's coef_ is Fortran-ordered and safetensors.numpy writes the raw buffer as if it were C
        # order: without the copy the weights come back transposed-scrambled.
        tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        save_file(tensors, str(folder / HEAD_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(
            {"labels": self.labels, "groups": self.groups, "encoder": self.encoder,
             "metrics": self.metrics or {}}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> EmotionClassifier:
        from safetensors.numpy import load_file

        config = json.loads((folder / CONFIG_FILE).read_text())
        head = load_file(str(folder / HEAD_FILE))
        return cls(labels=config["labels"], coef=head["coef"], intercept=head["intercept"],
                   encoder=config["encoder"], metrics=config.get("metrics"), groups=config.get("groups"),
                   group_coef=head.get("group_coef"), group_intercept=head.get("group_intercept"))


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _fit_head(x: np.ndarray, y: np.ndarray, c: float, class_weight) -> tuple[list[str], np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(C=c, max_iter=1000, class_weight=class_weight)
    head.fit(x, y)
    classes = [str(k) for k in head.classes_]
    coef, intercept = head.coef_, head.intercept_
    if len(classes) == 2:  # sklearn stores one row for a binary problem
        coef, intercept = np.vstack([-coef[0], coef[0]]), np.array([-intercept[0], intercept[0]])
    return classes, coef.astype(np.float32), intercept.astype(np.float32)


def is_saved(folder: Path) -> bool:
    return (folder / HEAD_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def train_emotion_classifier(
    examples: pl.DataFrame, taxonomy: Taxonomy, *, encoder: str = EMBEDDED_MINILM,
    max_train_rows: int = 20000, c: float = 4.0, seed: int = 0,
) -> EmotionClassifier:
    """Fit on the `train` split (dev too when there is no test split), evaluate on `test` (else `dev`):
    macro-F1 over labels and over sentiment groups, accuracy."""
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
    # Label head without re-weighting (calibrated label probabilities); group head balanced, so that
    # `neutral`, the largest group, does not swallow the positive/negative signal the filter needs.
    labels, coef, intercept = _fit_head(x_train, train["label"].to_numpy(), c, None)
    train_groups = np.array([taxonomy.sentiment(y) for y in train["label"].to_list()])
    groups, group_coef, group_intercept = _fit_head(x_train, train_groups, c, "balanced")
    clf = EmotionClassifier(labels=labels, coef=coef, intercept=intercept, encoder=encoder,
                            groups=groups, group_coef=group_coef, group_intercept=group_intercept)
    predicted = clf.predict_proba([], embeddings=x_test).argmax(axis=1)
    y_pred = [labels[i] for i in predicted]
    y_true = test["label"].to_list()
    group_true = [taxonomy.sentiment(y) for y in y_true]
    _, group_probs = clf.group_mass([], taxonomy, embeddings=x_test)
    group_pred = [groups[i] for i in group_probs.argmax(axis=1)]
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
