"""Epitome empathy levels (Sharma et al., 2020): for each communication mechanism, emotional
reactions (ER), interpretations (IP) and explorations (EX), a level 0 (none), 1 (weak) or 2 (strong)
of a response to a seeker's post.

The published classifiers are two RoBERTa-base encoders with cross-attention, fine-tuned per
mechanism. Here, to stay CPU-sized, a class-balanced multinomial logistic regression (scikit-learn)
over tf-idf of the response's word 1-2 grams and, weighted by a factor chosen on validation rows,
frozen all-MiniLM-L6-v2 embeddings of the seeker post (s) and the response (r) as [s, r, s*r, |s-r|].
(On the full data, embeddings alone reach ER macro-F1 ~0.58; tf-idf alone ~0.73: the mechanisms are
largely about how the response is phrased.) The fitted weights, idf and vocabulary are plain arrays
and JSON, saved as safetensors, so loading needs neither pickle nor scikit-learn.

diff-Epitome as in EmPO (after Lee et al., 2022): per item (level(prediction) - level(reference))^2,
averaged; lower is better."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

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


_TOKEN = re.compile(r"\w+(?:'\w+)?|[?!]")


def response_terms(text: str) -> list[str]:
    """Lower-cased words and ?/! (questions are what explorations are made of), unigrams + bigrams."""
    words = _TOKEN.findall((text or "").lower())
    return words + [f"{a} {b}" for a, b in pairwise(words)]


def fit_tfidf(docs: Sequence[str], min_df: int = 2, max_features: int = 20000) -> tuple[dict[str, int], np.ndarray]:
    """Vocabulary and smoothed idf (scikit-learn's formula: ln((1+n)/(1+df)) + 1)."""
    df: Counter = Counter()
    for d in docs:
        df.update(set(response_terms(d)))
    kept = sorted((t for t, c in df.items() if c >= min_df), key=lambda t: (-df[t], t))[:max_features]
    vocab = {t: i for i, t in enumerate(sorted(kept))}
    idf = np.array([np.log((1 + len(docs)) / (1 + df[t])) + 1 for t in sorted(kept)], dtype=np.float32)
    return vocab, idf


def tfidf_matrix(docs: Sequence[str], vocab: dict[str, int], idf: np.ndarray):
    """Sublinear tf (1 + ln count) x idf, rows L2-normalized, as a CSR matrix."""
    from scipy import sparse

    rows, cols, vals = [], [], []
    for i, d in enumerate(docs):
        counts = Counter(t for t in response_terms(d) if t in vocab)
        if not counts:
            continue
        idx = np.array([vocab[t] for t in counts])
        v = (1 + np.log(np.array(list(counts.values()), dtype=np.float32))) * idf[idx]
        v /= np.linalg.norm(v)
        rows.extend([i] * len(idx))
        cols.extend(idx.tolist())
        vals.extend(v.tolist())
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(docs), len(vocab)), dtype=np.float32)


@dataclass
class EpitomeClassifier:
    """Linear model over [tf-idf of the response | embedding_weight * standardized pair embeddings / sqrt(d)]."""

    mechanism: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (classes, vocabulary + embedding features)
    intercept: np.ndarray  # (classes,)
    classes: np.ndarray  # level of each row of coef
    idf: np.ndarray
    vocabulary: list[str]
    embedding_weight: float
    encoder: str  # model spec of the SentenceEncoder the embedding features come from
    max_length: int

    def features(self, encoder, seekers: Sequence[str], responses: Sequence[str]):
        """The encoder is only run when the embedding features carry weight (None is fine otherwise)."""
        emb = pair_features(encoder.encode(seekers), encoder.encode(responses)) if self.embedding_weight > 0 else None
        return _stack(self, responses, emb)

    def predict_features(self, features) -> np.ndarray:
        logits = np.asarray(features @ self.coef.T) + self.intercept
        return self.classes[np.argmax(logits, axis=1)]

    def predict(self, encoder, seekers: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if not len(seekers):
            return np.zeros(0, dtype=np.int64)
        return self.predict_features(self.features(encoder, list(seekers), list(responses)))

    def save(self, folder: str | Path, metrics: dict | None = None) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept,
                  "classes": self.classes.astype(np.int64), "idf": self.idf}
        # safetensors writes the raw buffer: a Fortran-ordered array (scikit-learn's coef_ can be one)
        # would come back transposed-scrambled
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / "classifier.safetensors"))
        (folder / "vocabulary.json").write_text(json.dumps(self.vocabulary, ensure_ascii=False))
        (folder / "config.json").write_text(json.dumps(
            {"mechanism": self.mechanism, "encoder": self.encoder, "max_length": self.max_length,
             "embedding_weight": self.embedding_weight,
             "features": "[tf-idf(response 1-2 grams) | w * standardized [s, r, s*r, |s-r|] / sqrt(d)]; "
                         "multinomial logistic regression, balanced classes",
             "metrics": metrics or {}}, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> EpitomeClassifier:
        from safetensors.numpy import load_file

        folder = Path(folder)
        arrays = load_file(str(folder / "classifier.safetensors"))
        config = json.loads((folder / "config.json").read_text())
        vocabulary = json.loads((folder / "vocabulary.json").read_text())
        return cls(mechanism=config["mechanism"], encoder=config["encoder"], max_length=config["max_length"],
                   embedding_weight=config["embedding_weight"], vocabulary=vocabulary, **arrays)


def majority_macro_f1(y_true: Sequence[int]) -> float:
    """Macro-F1 of always answering the most frequent level: the floor a classifier must beat."""
    from sklearn.metrics import f1_score

    values, counts = np.unique(np.asarray(y_true), return_counts=True)
    return float(f1_score(y_true, np.full(len(y_true), values[np.argmax(counts)]), average="macro",
                          labels=list(LEVELS), zero_division=0))


EMBEDDING_WEIGHTS = (0.0, 0.3, 1.0)


def _fit(seekers, responses, y, emb, encoder_spec, max_length, mechanism, weight, c):
    from sklearn.linear_model import LogisticRegression

    vocab, idf = fit_tfidf(responses)
    mean, scale = emb.mean(axis=0), emb.std(axis=0) + 1e-6
    clf = EpitomeClassifier(mechanism, mean.astype(np.float32), scale.astype(np.float32), np.zeros((0,)),
                            np.zeros((0,)), np.zeros((0,), np.int64), idf, sorted(vocab, key=vocab.get),
                            weight, encoder_spec, max_length)
    x = _stack(clf, responses, emb)
    lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(x, y)
    clf.coef, clf.intercept = lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32)
    clf.classes = lr.classes_.astype(np.int64)
    return clf


def _stack(clf: EpitomeClassifier, responses, emb: np.ndarray | None):
    """Features from precomputed pair embeddings (training encodes each text once)."""
    from scipy import sparse

    vocab = {t: i for i, t in enumerate(clf.vocabulary)}
    parts = [tfidf_matrix(responses, vocab, clf.idf)]
    if clf.embedding_weight > 0:
        parts.append(sparse.csr_matrix((emb - clf.mean) / clf.scale * (clf.embedding_weight / np.sqrt(emb.shape[1]))))
    return sparse.hstack(parts).tocsr()


def train_epitome_classifier(mechanism: str, seekers: Sequence[str], responses: Sequence[str],
                             levels: Sequence[int], encoder, *, test_size: float = 0.2, seed: int = 0,
                             c: float = 1.0, embedding_weights: Sequence[float] = EMBEDDING_WEIGHTS,
                             ) -> tuple[EpitomeClassifier, dict]:
    """Stratified train / held-out split; the weight of the embedding features is chosen on a
    validation split of the training rows (macro-F1), then the model is refit on all training rows
    and scored once on the held-out rows."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import train_test_split

    y = np.asarray(levels, dtype=np.int64)
    seekers, responses = list(seekers), list(responses)
    emb = pair_features(encoder.encode(seekers), encoder.encode(responses))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
    fit_idx, val_idx = train_test_split(tr, test_size=0.25, random_state=seed, stratify=y[tr])
    spec, max_length = getattr(encoder, "spec", "embedded:minilm"), int(getattr(encoder, "max_length", 128))

    def subset(ix):
        return [seekers[i] for i in ix], [responses[i] for i in ix], y[ix], emb[ix]

    validation = {}
    for weight in embedding_weights:
        s_, r_, y_, e_ = subset(fit_idx)
        clf = _fit(s_, r_, y_, e_, spec, max_length, mechanism, weight, c)
        _, rv, yv, ev = subset(val_idx)
        validation[weight] = float(f1_score(yv, clf.predict_features(_stack(clf, rv, ev)), average="macro",
                                            labels=list(LEVELS), zero_division=0))
    best = max(validation, key=lambda w: (validation[w], -w))
    s_, r_, y_, e_ = subset(tr)
    clf = _fit(s_, r_, y_, e_, spec, max_length, mechanism, best, c)
    _, rt, yt, et = subset(te)
    pred = clf.predict_features(_stack(clf, rt, et))
    metrics = {
        "mechanism": mechanism,
        "train_rows": len(tr),
        "heldout_rows": len(te),
        "heldout_macro_f1": float(f1_score(yt, pred, average="macro", labels=list(LEVELS), zero_division=0)),
        "heldout_accuracy": float(accuracy_score(yt, pred)),
        "majority_baseline_macro_f1": majority_macro_f1(yt),
        "published_roberta_macro_f1": PUBLISHED_MACRO_F1[mechanism],
        "embedding_weight": best,
        "validation_macro_f1_by_embedding_weight": {str(k): round(v, 4) for k, v in validation.items()},
        "vocabulary": len(clf.vocabulary),
        "confusion": confusion_matrix(yt, pred, labels=list(LEVELS)).tolist(),
        "level_counts": {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))},
    }
    return clf, metrics


def diff_epitome(prediction_levels: Sequence[int], reference_levels: Sequence[int]) -> float:
    p, r = np.asarray(prediction_levels, dtype=float), np.asarray(reference_levels, dtype=float)
    if p.shape != r.shape:
        raise ValueError(f"{p.shape} vs {r.shape}")
    return float(np.mean((p - r) ** 2)) if p.size else float("nan")
