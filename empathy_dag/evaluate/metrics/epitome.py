"""Epitome empathy levels (Sharma et al., 2020): for each communication mechanism, emotional
reactions (ER), interpretations (IP) and explorations (EX), a level 0 (none), 1 (weak) or 2 (strong)
of a response to a seeker's post.

The published classifiers are two RoBERTa-base encoders with cross-attention, fine-tuned per
mechanism. Here, to stay CPU-sized: frozen all-MiniLM-L6-v2 sentence embeddings of the seeker post
(s) and of the response (r), the features [s, r, s*r, |s-r|], standardized, and a class-balanced
multinomial logistic regression (scikit-learn). The fitted weights are plain arrays saved as
safetensors with a JSON config, so loading needs neither pickle nor scikit-learn.

diff-Epitome as in EmPO (after Lee et al., 2022): per item (level(prediction) - level(reference))^2,
averaged; lower is better."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

MECHANISMS = {
    "er": "emotional-reactions-reddit.csv",
    "ip": "interpretations-reddit.csv",
    "ex": "explorations-reddit.csv",
}
LEVELS = (0, 1, 2)
# Macro-F1 of the published RoBERTa classifiers, for the metadata next to ours.
PUBLISHED_MACRO_F1 = {"er": 0.83, "ip": 0.63, "ex": 0.85}


def read_epitome(folder: str | Path, mechanism: str, max_rows: int = 0, seed: int = 0):
    """(seeker_post, response_post, level) rows of one mechanism; `max_rows` subsamples (stratified
    by nothing: a uniform sample keeps the class balance in expectation)."""
    import polars as pl

    path = Path(folder) / MECHANISMS[mechanism]
    df = pl.read_csv(path, columns=["seeker_post", "response_post", "level"], infer_schema_length=0)
    df = df.with_columns(pl.col("level").cast(pl.Int64), pl.col("seeker_post").fill_null(""),
                         pl.col("response_post").fill_null(""))
    df = df.filter(pl.col("level").is_in(list(LEVELS)))
    if max_rows and df.height > max_rows:
        df = df.sample(n=max_rows, seed=seed, shuffle=True)
    return df


def pair_features(seeker: np.ndarray, response: np.ndarray) -> np.ndarray:
    return np.hstack([seeker, response, seeker * response, np.abs(seeker - response)]).astype(np.float32)


@dataclass
class EpitomeClassifier:
    mechanism: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (classes, features)
    intercept: np.ndarray  # (classes,)
    classes: np.ndarray  # level of each row of coef
    encoder: str  # model spec of the SentenceEncoder the features come from
    max_length: int

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        logits = ((features - self.mean) / self.scale) @ self.coef.T + self.intercept
        return self.classes[np.argmax(logits, axis=1)]

    def predict(self, encoder, seekers: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if not len(seekers):
            return np.zeros(0, dtype=np.int64)
        return self.predict_features(pair_features(encoder.encode(seekers), encoder.encode(responses)))

    def save(self, folder: str | Path, metrics: dict | None = None) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept,
                   "classes": self.classes.astype(np.int64)}, str(folder / "classifier.safetensors"))
        (folder / "config.json").write_text(json.dumps(
            {"mechanism": self.mechanism, "encoder": self.encoder, "max_length": self.max_length,
             "features": "[s, r, s*r, |s-r|], standardized; multinomial logistic regression",
             "metrics": metrics or {}}, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "EpitomeClassifier":
        from safetensors.numpy import load_file

        folder = Path(folder)
        arrays = load_file(str(folder / "classifier.safetensors"))
        config = json.loads((folder / "config.json").read_text())
        return cls(mechanism=config["mechanism"], encoder=config["encoder"], max_length=config["max_length"],
                   **arrays)


def majority_macro_f1(y_true: Sequence[int]) -> float:
    """Macro-F1 of always answering the most frequent level: the floor a classifier must beat."""
    from sklearn.metrics import f1_score

    values, counts = np.unique(np.asarray(y_true), return_counts=True)
    return float(f1_score(y_true, np.full(len(y_true), values[np.argmax(counts)]), average="macro",
                          labels=list(LEVELS), zero_division=0))


def train_epitome_classifier(mechanism: str, seekers: Sequence[str], responses: Sequence[str],
                             levels: Sequence[int], encoder, *, test_size: float = 0.2, seed: int = 0,
                             c: float = 0.5) -> tuple[EpitomeClassifier, dict]:
    """Fit on a stratified train split and report macro-F1 on the held-out rest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import train_test_split

    y = np.asarray(levels, dtype=np.int64)
    x = pair_features(encoder.encode(list(seekers)), encoder.encode(list(responses)))
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    mean = x_tr.mean(axis=0)
    scale = x_tr.std(axis=0) + 1e-6
    lr = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    lr.fit((x_tr - mean) / scale, y_tr)
    clf = EpitomeClassifier(mechanism, mean.astype(np.float32), scale.astype(np.float32),
                            lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32),
                            lr.classes_.astype(np.int64), encoder=getattr(encoder, "spec", "embedded:minilm"),
                            max_length=int(getattr(encoder, "max_length", 128)))
    pred = clf.predict_features(x_te)
    metrics = {
        "mechanism": mechanism,
        "train_rows": int(len(y_tr)),
        "heldout_rows": int(len(y_te)),
        "heldout_macro_f1": float(f1_score(y_te, pred, average="macro", labels=list(LEVELS), zero_division=0)),
        "heldout_accuracy": float(accuracy_score(y_te, pred)),
        "majority_baseline_macro_f1": majority_macro_f1(y_te),
        "published_roberta_macro_f1": PUBLISHED_MACRO_F1[mechanism],
        "confusion": confusion_matrix(y_te, pred, labels=list(LEVELS)).tolist(),
        "level_counts": {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))},
    }
    return clf, metrics


def diff_epitome(prediction_levels: Sequence[int], reference_levels: Sequence[int]) -> float:
    p, r = np.asarray(prediction_levels, dtype=float), np.asarray(reference_levels, dtype=float)
    if p.shape != r.shape:
        raise ValueError(f"{p.shape} vs {r.shape}")
    return float(np.mean((p - r) ** 2)) if p.size else float("nan")
