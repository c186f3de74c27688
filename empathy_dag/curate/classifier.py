"""The emotion classifier behind the emotion-consistency filter: all-MiniLM-L6-v2 sentence embeddings
(embedded model, no hub) and a multinomial logistic-regression head over the 28 GoEmotions labels.
The same heads also fit over hashed word and character n-grams (`NGRAM_ENCODER`): no neural forward
pass, so the filter keeps up with curation at 100k+ rows on a CPU (BENCHMARKS.md "Emotion consistency at
scale" compares the two on the filter's own decision).

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
from empathy_dag.text_classifier import (
    CLASSIFIER_CONFIG,
    bootstrap_macro_f1,
    finetune,
    is_finetuned_folder,
    load_classifier,
    predict_logits,
    save_classifier,
)

HEAD_FILE = "head.safetensors"
CONFIG_FILE = "classifier.json"


# Hashed n-grams instead of an encoder: stateless (the featurizer is these constants, so the folder
# needs no vocabulary), sparse, and ~100x cheaper per row than a MiniLM forward pass on a CPU. Word
# uni+bigrams carry the emotion words, character 2-4-grams inside word boundaries carry misspellings,
# inflections and unsegmented scripts. The spec names every parameter: a folder saved with other
# parameters fails loudly instead of predicting from features it was not trained on.
NGRAM_ENCODER = "hashed-ngrams:word1-2+char_wb2-4:2^17"
NGRAM_FEATURES = 2**17  # per analyzer; 28 labels x 2^18 float32 coefficients = 29 MB on disk


@cache
def _ngram_vectorizers():
    from sklearn.feature_extraction.text import HashingVectorizer

    common = {
        "n_features": NGRAM_FEATURES,
        "alternate_sign": False,
        "binary": True,
        "norm": None,
        "dtype": np.float32,
    }
    return (
        HashingVectorizer(analyzer="word", ngram_range=(1, 2), **common),
        HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), **common),
    )


def ngram_features(texts: list[str]):
    """(n_texts, 2 x NGRAM_FEATURES) sparse rows, L2-normalized: what the linear heads read."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.preprocessing import normalize

    if not texts:
        return csr_matrix((0, 2 * NGRAM_FEATURES), dtype=np.float32)
    words, chars = _ngram_vectorizers()
    return normalize(hstack([words.transform(texts), chars.transform(texts)], format="csr"))


@cache
def _encoder(spec: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_encoder(spec), device="cpu")


def embed(texts: list[str], encoder: str = EMBEDDED_MINILM, batch_size: int = 128):
    """Features for the linear heads: dense sentence embeddings, or sparse hashed n-grams."""
    if encoder == NGRAM_ENCODER:
        return ngram_features(list(texts))
    if encoder.startswith("hashed-ngrams"):
        raise ValueError(
            f"classifier saved with n-gram featurizer {encoder!r}; this code has {NGRAM_ENCODER!r} "
            "(retrain the emotion_classifier)"
        )
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = _encoder(encoder)
    return model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    ).astype(np.float32)


def single_label_rows(examples: pl.DataFrame) -> pl.DataFrame:
    """One (text, label, split) row per example, using its first label. Most GoEmotions comments carry
    one label; a single-label head keeps the classifier small and its probabilities calibrated."""
    return (
        examples.filter(pl.col("labels").list.len() > 0)
        .with_columns(pl.col("labels").list.first().alias("label"))
        .select("text", "label", "split")
    )


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

    def group_mass(
        self, texts: list[str], taxonomy: Taxonomy, embeddings: np.ndarray | None = None
    ) -> tuple[list[str], np.ndarray]:
        """(sentiment groups, (n_texts, n_groups) probabilities): from the group head when saved,
        else label probabilities summed per group."""
        x = embed(texts, self.encoder) if embeddings is None else embeddings
        if self.groups is not None and self.group_coef is not None:
            return list(self.groups), _softmax(x @ self.group_coef.T + self.group_intercept)
        p = self.predict_proba([], embeddings=x)
        groups = sorted({taxonomy.sentiment(label) for label in self.labels})
        mass = np.stack(
            [
                p[:, [i for i, lab in enumerate(self.labels) if taxonomy.sentiment(lab) == g]].sum(axis=1)
                for g in groups
            ],
            axis=1,
        )
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
        (folder / CONFIG_FILE).write_text(
            json.dumps(
                {
                    "labels": self.labels,
                    "groups": self.groups,
                    "encoder": self.encoder,
                    "metrics": self.metrics or {},
                },
                indent=1,
            )
        )

    @classmethod
    def load(cls, folder: Path) -> EmotionClassifier:
        from safetensors.numpy import load_file

        config = json.loads((folder / CONFIG_FILE).read_text())
        head = load_file(str(folder / HEAD_FILE))
        return cls(
            labels=config["labels"],
            coef=head["coef"],
            intercept=head["intercept"],
            encoder=config["encoder"],
            metrics=config.get("metrics"),
            groups=config.get("groups"),
            group_coef=head.get("group_coef"),
            group_intercept=head.get("group_intercept"),
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _fit_head(
    x: np.ndarray, y: np.ndarray, c: float, class_weight
) -> tuple[list[str], np.ndarray, np.ndarray]:
    from scipy.sparse import issparse
    from sklearn.linear_model import LogisticRegression

    # Hashed n-grams: fit on the columns some training row uses. A column that is zero in every row has
    # zero loss gradient, so L2 regularization puts its weight at exactly 0 either way; dropping those
    # columns gives the same optimum for a fraction of lbfgs' per-iteration cost (~250k -> ~50k columns).
    active = np.unique(x.indices) if issparse(x) else None
    head = LogisticRegression(C=c, max_iter=1000, class_weight=class_weight)
    head.fit(x[:, active] if active is not None else x, y)
    classes = [str(k) for k in head.classes_]
    coef, intercept = head.coef_, head.intercept_
    if active is not None:
        full = np.zeros((coef.shape[0], x.shape[1]), dtype=np.float32)
        full[:, active] = coef
        coef = full
    if len(classes) == 2:  # sklearn stores one row for a binary problem
        coef, intercept = np.vstack([-coef[0], coef[0]]), np.array([-intercept[0], intercept[0]])
    return classes, coef.astype(np.float32), intercept.astype(np.float32)


def is_saved(folder: Path) -> bool:
    return (folder / HEAD_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def train_emotion_classifier(
    examples: pl.DataFrame,
    taxonomy: Taxonomy,
    *,
    encoder: str = EMBEDDED_MINILM,
    max_train_rows: int = 20000,
    c: float = 4.0,
    seed: int = 0,
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
    clf = EmotionClassifier(
        labels=labels,
        coef=coef,
        intercept=intercept,
        encoder=encoder,
        groups=groups,
        group_coef=group_coef,
        group_intercept=group_intercept,
    )
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
        "macro_f1": round(
            float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)), 4
        ),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "sentiment_macro_f1": round(
            float(f1_score(group_true, group_pred, average="macro", zero_division=0)), 4
        ),
        "chance_macro_f1": round(1.0 / max(1, len(labels)), 4),
    }
    return clf


# --------------------------------------------------------------- fine-tuned multi-label classifier
# GoEmotions' own baseline fine-tunes BERT-base with a sigmoid per label (macro-F1 0.46 over the 28
# labels on test); a linear head on frozen MiniLM embeddings gets 0.24. This one fine-tunes an encoder
# (the embedded MiniLM by default) with transformers' Trainer on every label of a comment (multi-label,
# binary cross-entropy), tunes one decision threshold per label on `dev` and reports on `test`.

PUBLISHED_GOEMOTIONS_MACRO_F1 = 0.46  # Demszky et al. 2020, BERT-base, 28 labels, test
FINETUNED_KIND = "goemotions-multilabel"
# fine steps at the low end: a calibrated sigmoid of a rare label (grief: 0.2% of rows) stays far below 0.05
THRESHOLD_GRID = np.round(np.concatenate([[0.01, 0.02, 0.03], np.arange(0.05, 0.96, 0.05)]), 2)


def multi_hot(label_lists: list[list[str]], labels: list[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.zeros((len(label_lists), len(labels)), dtype=np.float32)
    for r, labs in enumerate(label_lists):
        for lab in labs or []:
            if lab in index:
                y[r, index[lab]] = 1.0
    return y


def tune_thresholds(probs: np.ndarray, y: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Per label, the threshold of `grid` with the best F1 on these rows (dev); 0.5 for a label
    without a positive row (nothing to tune on)."""
    from sklearn.metrics import f1_score

    thresholds = np.full(y.shape[1], 0.5, dtype=np.float32)
    for j in range(y.shape[1]):
        if y[:, j].sum() == 0:
            continue
        scores = [f1_score(y[:, j], probs[:, j] >= t, zero_division=0) for t in grid]
        thresholds[j] = grid[int(np.argmax(scores))]
    return thresholds


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class FineTunedEmotionClassifier:
    """Same interface as EmotionClassifier for the consistency filter and the alignment namer."""

    labels: list[str]
    model: object
    tokenizer: object
    thresholds: np.ndarray
    max_length: int
    encoder: str
    metrics: dict | None = None

    def predict_proba(self, texts: list[str], embeddings=None) -> np.ndarray:
        return _sigmoid(predict_logits(self.model, self.tokenizer, list(texts), None, self.max_length))

    def predict(self, texts: list[str]) -> list[str]:
        """The one most likely label per text (the alignment namer names one emotion)."""
        if not texts:
            return []
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def predict_labels(self, texts: list[str]) -> list[list[str]]:
        """Every label over its tuned threshold (at least the most likely one)."""
        if not texts:
            return []
        p = self.predict_proba(texts)
        return [
            [self.labels[j] for j in np.flatnonzero(row >= self.thresholds)]
            or [self.labels[int(row.argmax())]]
            for row in p
        ]

    def group_mass(
        self, texts: list[str], taxonomy: Taxonomy, embeddings=None
    ) -> tuple[list[str], np.ndarray]:
        """Sigmoid scores summed per sentiment group, normalized over groups (labels are not exclusive,
        so their scores are turned into shares before the filter compares a group with its minimum)."""
        p = self.predict_proba(texts)
        groups = sorted({taxonomy.sentiment(label) for label in self.labels})
        mass = np.stack(
            [
                p[:, [i for i, lab in enumerate(self.labels) if taxonomy.sentiment(lab) == g]].sum(axis=1)
                for g in groups
            ],
            axis=1,
        )
        return groups, mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-9)

    def predict_groups(self, texts: list[str], taxonomy: Taxonomy) -> list[tuple[str, float]]:
        if not texts:
            return []
        groups, mass = self.group_mass(texts, taxonomy)
        best = mass.argmax(axis=1)
        return [(groups[b], float(mass[i, b])) for i, b in enumerate(best)]

    def save(self, folder: Path) -> None:
        save_classifier(
            folder,
            self.model,
            self.tokenizer,
            {
                "kind": FINETUNED_KIND,
                "labels": self.labels,
                "thresholds": [round(float(t), 4) for t in self.thresholds],
                "max_length": self.max_length,
                "encoder": self.encoder,
                "metrics": self.metrics or {},
            },
        )

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> FineTunedEmotionClassifier:
        model, tokenizer, config = load_classifier(folder, device)
        return cls(
            labels=config["labels"],
            model=model,
            tokenizer=tokenizer,
            thresholds=np.asarray(config["thresholds"], dtype=np.float32),
            max_length=config["max_length"],
            encoder=config["encoder"],
            metrics=config.get("metrics"),
        )


def is_saved_any(folder: Path) -> bool:
    return is_saved(folder) or is_finetuned_folder(folder)


def load_emotion_classifier(folder: Path):
    """Whichever kind the `emotion_classifier` folder holds."""

    return (
        FineTunedEmotionClassifier.load(folder)
        if is_finetuned_folder(folder)
        else EmotionClassifier.load(folder)
    )


def multilabel_report(
    y: np.ndarray, pred: np.ndarray, labels: list[str], *, n_resamples: int = 1000, seed: int = 0
) -> dict:
    from sklearn.metrics import f1_score

    low, high = bootstrap_macro_f1(y, pred, labels, n_resamples=n_resamples, seed=seed)
    per_label = f1_score(y, pred, average=None, zero_division=0)
    return {
        "macro_f1": round(float(f1_score(y, pred, average="macro", zero_division=0)), 4),
        "macro_f1_ci95": [round(low, 4), round(high, 4)],
        "micro_f1": round(float(f1_score(y, pred, average="micro", zero_division=0)), 4),
        "f1_per_label": {lab: round(float(f), 4) for lab, f in zip(labels, per_label)},
        "positives_per_label": {lab: int(c) for lab, c in zip(labels, y.sum(axis=0))},
    }


def train_finetuned_emotion_classifier(
    examples: pl.DataFrame,
    taxonomy: Taxonomy,
    settings,
    work_dir: Path,
    *,
    encoder: str = EMBEDDED_MINILM,
    max_train_rows: int = 0,
    max_eval_rows: int = 0,
    holdout_ids: set[str] | None = None,
    n_resamples: int = 1000,
) -> FineTunedEmotionClassifier:
    """Fine-tune on `train`, thresholds on `dev`, macro-F1 on `test` (28 labels, multi-label).

    `holdout_ids` (GoEmotions comment ids): those rows, whatever their split, are kept out of training
    and threshold tuning and are the reported test set. `max_*_rows` subsample (time on CPU)."""

    labels = list(taxonomy.labels)
    frame = examples.filter(pl.col("labels").list.len() > 0)
    held = pl.col("id").is_in(sorted(holdout_ids)) if holdout_ids else pl.lit(False)
    train = frame.filter((pl.col("split") == "train") & ~held)
    dev = frame.filter((pl.col("split") == "dev") & ~held)
    test = frame.filter(held) if holdout_ids else frame.filter(pl.col("split") == "test")
    if holdout_ids and test.height == 0:
        raise ValueError(
            f"none of the {len(holdout_ids)} holdout ids is a GoEmotions comment id here "
            f"(first: {sorted(holdout_ids)[:5]})"
        )
    if train.height == 0 or dev.height == 0 or test.height == 0:
        raise ValueError(
            f"fine-tuning needs train, dev and test rows; got {train.height} / {dev.height} / {test.height}"
        )
    if max_train_rows and train.height > max_train_rows:
        train = train.sample(max_train_rows, seed=settings.seed)
    if max_eval_rows:
        dev = dev.sample(min(max_eval_rows, dev.height), seed=settings.seed)
        if not holdout_ids:
            test = test.sample(min(max_eval_rows, test.height), seed=settings.seed)
    model, tokenizer, stats = finetune(
        encoder,
        train["text"].to_list(),
        None,
        multi_hot(train["labels"].to_list(), labels),
        labels,
        settings,
        work_dir,
        multi_label=True,
    )
    clf = FineTunedEmotionClassifier(
        labels, model, tokenizer, np.full(len(labels), 0.5, np.float32), settings.max_length, encoder
    )
    y_dev = multi_hot(dev["labels"].to_list(), labels)
    clf.thresholds = tune_thresholds(clf.predict_proba(dev["text"].to_list()), y_dev)
    y_test = multi_hot(test["labels"].to_list(), labels)
    pred = (clf.predict_proba(test["text"].to_list()) >= clf.thresholds).astype(np.float32)
    overlap = set(train["id"].to_list()) & set(test["id"].to_list())
    clf.metrics = {
        "kind": FINETUNED_KIND,
        "held_out_split": "holdout ids" if holdout_ids else "test",
        "train_rows": train.height,
        "dev_rows": dev.height,
        "held_out_rows": test.height,
        **multilabel_report(y_test, pred, labels, n_resamples=n_resamples, seed=settings.seed),
        "published_bert_base_macro_f1": PUBLISHED_GOEMOTIONS_MACRO_F1,
        "chance_macro_f1": round(1.0 / len(labels), 4),
        "thresholds": {lab: round(float(t), 4) for lab, t in zip(labels, clf.thresholds)},
        "train_test_overlap_ids": len(overlap),
        "holdout_ids_given": len(holdout_ids or ()),
        "backbone": encoder,
        "settings": settings.as_dict(),
        **stats,
    }
    return clf


def classifier_fingerprint(
    examples: pl.DataFrame, config: dict, code_version: str, holdout_file: str | None = None
) -> str:
    """What the classifier is trained from (examples' content, config, code version, holdout file):
    the asset reuses a saved classifier with the same fingerprint instead of training it again."""
    import hashlib

    h = hashlib.sha256(json.dumps([code_version, config], sort_keys=True, default=str).encode())
    # the holdout file's path is in the config; its bytes are what matter (hashed below)
    # row content, not polars' hash_rows (not stable across polars versions)
    for rid, text, labels, split in examples.select("id", "text", "labels", "split").iter_rows():
        h.update(json.dumps([rid, text, labels, split], ensure_ascii=False).encode())
    if holdout_file:
        h.update(hashlib.sha256(Path(holdout_file).read_bytes()).digest())
    return h.hexdigest()[:32]


def saved_classifier_metrics(folder: Path) -> dict | None:
    """The metrics (with `fingerprint`) of a saved classifier of either kind; None when absent."""

    for name in (CLASSIFIER_CONFIG, CONFIG_FILE):
        path = folder / name
        if path.is_file():
            return json.loads(path.read_text()).get("metrics")
    return None
