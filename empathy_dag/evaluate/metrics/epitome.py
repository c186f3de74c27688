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

from empathy_dag.text_classifier import (
    FineTuneSettings,
    bootstrap_macro_f1,
    finetune,
    is_finetuned_folder,
    load_classifier,
    predict_logits,
    save_classifier,
)

MECHANISMS = {
    "er": "emotional-reactions-reddit.csv",
    "ip": "interpretations-reddit.csv",
    "ex": "explorations-reddit.csv",
}
LEVELS = (0, 1, 2)
# Macro-F1 of the published RoBERTa classifiers, for the metadata next to ours.
PUBLISHED_MACRO_F1 = {"er": 0.83, "ip": 0.63, "ex": 0.85}


def read_epitome(folder: str | Path, mechanism: str, max_rows: int = 0, seed: int = 0):
    """(pair_id, seeker_post, response_post, level) rows of one mechanism, `pair_id` = `sp_id:rp_id`
    (what a holdout / exclude file lists); `max_rows` subsamples (uniformly: the class balance is
    kept in expectation)."""
    import polars as pl

    path = Path(folder) / MECHANISMS[mechanism]
    df = pl.read_csv(
        path, columns=["sp_id", "rp_id", "seeker_post", "response_post", "level"], infer_schema_length=0
    )
    df = df.with_columns(
        pl.col("level").cast(pl.Int64),
        pl.col("seeker_post").fill_null(""),
        pl.col("response_post").fill_null(""),
        pl.concat_str([pl.col("sp_id").fill_null(""), pl.col("rp_id").fill_null("")], separator=":").alias(
            "pair_id"
        ),
    )
    df = df.filter(pl.col("level").is_in(list(LEVELS))).select(
        "pair_id", "seeker_post", "response_post", "level"
    )
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


def fit_tfidf(
    docs: Sequence[str], min_df: int = 2, max_features: int = 20000
) -> tuple[dict[str, int], np.ndarray]:
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

    @property
    def needs_sentence_encoder(self) -> bool:
        return self.embedding_weight > 0

    def features(self, encoder, seekers: Sequence[str], responses: Sequence[str]):
        """The encoder is only run when the embedding features carry weight (None is fine otherwise)."""
        emb = (
            pair_features(encoder.encode(seekers), encoder.encode(responses))
            if self.embedding_weight > 0
            else None
        )
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
        arrays = {
            "mean": self.mean,
            "scale": self.scale,
            "coef": self.coef,
            "intercept": self.intercept,
            "classes": self.classes.astype(np.int64),
            "idf": self.idf,
        }
        # safetensors writes the raw buffer: a Fortran-ordered array (scikit-learn's coef_ can be one)
        # would come back transposed-scrambled
        save_file(
            {k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / "classifier.safetensors")
        )
        (folder / "vocabulary.json").write_text(json.dumps(self.vocabulary, ensure_ascii=False))
        (folder / "config.json").write_text(
            json.dumps(
                {
                    "mechanism": self.mechanism,
                    "encoder": self.encoder,
                    "max_length": self.max_length,
                    "embedding_weight": self.embedding_weight,
                    "features": "[tf-idf(response 1-2 grams) | w * standardized [s, r, s*r, |s-r|] / sqrt(d)]; "
                    "multinomial logistic regression, balanced classes",
                    "metrics": metrics or {},
                },
                indent=1,
            )
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> EpitomeClassifier:
        from safetensors.numpy import load_file

        folder = Path(folder)
        arrays = load_file(str(folder / "classifier.safetensors"))
        config = json.loads((folder / "config.json").read_text())
        vocabulary = json.loads((folder / "vocabulary.json").read_text())
        return cls(
            mechanism=config["mechanism"],
            encoder=config["encoder"],
            max_length=config["max_length"],
            embedding_weight=config["embedding_weight"],
            vocabulary=vocabulary,
            **arrays,
        )


def majority_macro_f1(y_true: Sequence[int]) -> float:
    """Macro-F1 of always answering the most frequent level: the floor a classifier must beat."""
    from sklearn.metrics import f1_score

    values, counts = np.unique(np.asarray(y_true), return_counts=True)
    return float(
        f1_score(
            y_true,
            np.full(len(y_true), values[np.argmax(counts)]),
            average="macro",
            labels=list(LEVELS),
            zero_division=0,
        )
    )


EMBEDDING_WEIGHTS = (0.0, 0.3, 1.0)


def _fit(seekers, responses, y, emb, encoder_spec, max_length, mechanism, weight, c):
    from sklearn.linear_model import LogisticRegression

    vocab, idf = fit_tfidf(responses)
    mean, scale = emb.mean(axis=0), emb.std(axis=0) + 1e-6
    clf = EpitomeClassifier(
        mechanism,
        mean.astype(np.float32),
        scale.astype(np.float32),
        np.zeros((0,)),
        np.zeros((0,)),
        np.zeros((0,), np.int64),
        idf,
        sorted(vocab, key=vocab.get),
        weight,
        encoder_spec,
        max_length,
    )
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
        parts.append(
            sparse.csr_matrix((emb - clf.mean) / clf.scale * (clf.embedding_weight / np.sqrt(emb.shape[1])))
        )
    return sparse.hstack(parts).tocsr()


def train_epitome_classifier(
    mechanism: str,
    seekers: Sequence[str],
    responses: Sequence[str],
    levels: Sequence[int],
    encoder,
    *,
    test_size: float = 0.2,
    seed: int = 0,
    c: float = 1.0,
    embedding_weights: Sequence[float] = EMBEDDING_WEIGHTS,
    split: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[EpitomeClassifier, dict]:
    """Stratified train / held-out split (or the (train, test) rows of `split`, e.g. `grouped_split`);
    the weight of the embedding features is chosen on a validation split of the training rows
    (macro-F1), then the model is refit on all training rows and scored once on the held-out rows."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import train_test_split

    y = np.asarray(levels, dtype=np.int64)
    seekers, responses = list(seekers), list(responses)
    emb = pair_features(encoder.encode(seekers), encoder.encode(responses))
    idx = np.arange(len(y))
    tr, te = (
        split
        if split is not None
        else train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
    )
    fit_idx, val_idx = train_test_split(tr, test_size=0.25, random_state=seed, stratify=y[tr])
    spec, max_length = getattr(encoder, "spec", "embedded:minilm"), int(getattr(encoder, "max_length", 128))

    def subset(ix):
        return [seekers[i] for i in ix], [responses[i] for i in ix], y[ix], emb[ix]

    validation = {}
    for weight in embedding_weights:
        s_, r_, y_, e_ = subset(fit_idx)
        clf = _fit(s_, r_, y_, e_, spec, max_length, mechanism, weight, c)
        _, rv, yv, ev = subset(val_idx)
        validation[weight] = float(
            f1_score(
                yv,
                clf.predict_features(_stack(clf, rv, ev)),
                average="macro",
                labels=list(LEVELS),
                zero_division=0,
            )
        )
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


# ------------------------------------------------------------------ fine-tuned cross-encoders
# The published classifiers fine-tune an encoder on the (seeker post, response) pair; a linear model
# over frozen features stays far below them (ER 0.74, IP 0.61, EX 0.55 on 1,500 rows). Here one
# encoder reads both texts as a sentence pair ([CLS] seeker [SEP] response [SEP]), so its attention
# runs across them (the published model's cross-attention, in one encoder), fine-tuned per mechanism
# with transformers' Trainer.

CROSS_ENCODER_KIND = "epitome-cross-encoder"


def grouped_split(
    groups: Sequence[str],
    levels: Sequence[int],
    ids: Sequence[str],
    *,
    test_size: float = 0.2,
    seed: int = 0,
    holdout_ids: set[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train rows, test rows, what was done). No group (seeker post) is on both sides.

    Without `holdout_ids`: StratifiedGroupKFold's first fold of round(1/test_size) is the test set
    (levels stratified as far as the groups allow). With them: the listed ids are the test set, and
    every other row of a seeker post that has a listed row is left out of training too (counted)."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups, y, ids = np.asarray(groups, dtype=object), np.asarray(levels), np.asarray(ids, dtype=object)
    info: dict = {"split": "grouped by seeker post"}
    if holdout_ids:
        is_test = np.isin(ids, list(holdout_ids))
        unknown = sorted(set(holdout_ids) - set(ids[is_test].tolist()))
        if not is_test.any():
            raise ValueError(
                f"none of the {len(holdout_ids)} holdout ids is in the data "
                f"(first: {sorted(holdout_ids)[:5]}); ids look like {ids[:3].tolist()}"
            )
        test_groups = set(groups[is_test].tolist())
        shares_group = np.isin(groups, list(test_groups)) & ~is_test
        train = np.flatnonzero(~is_test & ~shares_group)
        test = np.flatnonzero(is_test)
        info.update(
            {
                "split": "holdout ids (grouped by seeker post)",
                "holdout_ids_given": len(holdout_ids),
                "holdout_ids_not_in_data": len(unknown),
                "holdout_ids_not_in_data_first": unknown[:10],
                "left_out_same_seeker_post": int(shares_group.sum()),
            }
        )
    else:
        n_splits = max(2, round(1 / test_size))
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train, test = next(splitter.split(np.zeros(len(y)), y, groups))
    overlap_groups = set(groups[train].tolist()) & set(groups[test].tolist())
    overlap_ids = set(ids[train].tolist()) & set(ids[test].tolist())
    info.update(
        {
            "train_rows": len(train),
            "test_rows": len(test),
            "train_test_overlap_seeker_posts": len(overlap_groups),
            "train_test_overlap_ids": len(overlap_ids),
        }
    )
    return np.asarray(train), np.asarray(test), info


def seeker_side(seekers: Sequence[str], histories: Sequence[str] | None = None) -> list[str]:
    """The seeker side of a pair: the earlier turns (history) then the speaker's turn, so that the
    classifier sees what the response answers."""
    if histories is None:
        return [s or "" for s in seekers]
    return [f"{h}\n{s or ''}" if h else (s or "") for s, h in zip(seekers, histories)]


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, mechanism: str, *, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Macro-F1 with a bootstrap 95% interval over test items, per-level F1, accuracy, confusion matrix,
    the majority-class floor and the published figure, for the metadata."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    low, high = bootstrap_macro_f1(y_true, y_pred, LEVELS, n_resamples=n_resamples, seed=seed)
    per_class = f1_score(y_true, y_pred, average=None, labels=list(LEVELS), zero_division=0)
    return {
        "mechanism": mechanism,
        "heldout_rows": len(y_true),
        "heldout_macro_f1": float(
            f1_score(y_true, y_pred, average="macro", labels=list(LEVELS), zero_division=0)
        ),
        "heldout_macro_f1_ci95": [round(low, 4), round(high, 4)],
        "heldout_f1_per_level": {str(lvl): round(float(f), 4) for lvl, f in zip(LEVELS, per_class)},
        "heldout_accuracy": float(accuracy_score(y_true, y_pred)),
        "majority_baseline_macro_f1": majority_macro_f1(y_true),
        "published_roberta_macro_f1": PUBLISHED_MACRO_F1[mechanism],
        "confusion": confusion_matrix(y_true, y_pred, labels=list(LEVELS)).tolist(),
        "heldout_level_counts": {int(k): int(v) for k, v in zip(*np.unique(y_true, return_counts=True))},
    }


@dataclass
class EpitomeCrossEncoder:
    """A fine-tuned (seeker, response) -> level 0/1/2 sequence classifier folder."""

    mechanism: str
    model: object
    tokenizer: object
    max_length: int
    config: dict
    needs_sentence_encoder = False  # it reads the raw texts itself
    embedding_weight = 0.0  # (the linear model's attribute, for code that checks it)

    @property
    def encoder(self) -> str:
        return str(self.config.get("backbone", ""))

    def predict(self, encoder, seekers: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if not len(seekers):
            return np.zeros(0, dtype=np.int64)
        logits = predict_logits(self.model, self.tokenizer, list(seekers), list(responses), self.max_length)
        return np.asarray(LEVELS, dtype=np.int64)[logits.argmax(axis=1)]

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> EpitomeCrossEncoder:
        model, tokenizer, config = load_classifier(folder, device)
        return cls(config["mechanism"], model, tokenizer, int(config["settings"]["max_length"]), config)


def load_epitome_classifier(folder: str | Path, device: str = "cpu"):
    """Either kind of saved Epitome classifier: the fine-tuned cross-encoder or the linear model."""

    return (
        EpitomeCrossEncoder.load(folder, device)
        if is_finetuned_folder(folder)
        else EpitomeClassifier.load(folder)
    )


def train_epitome_cross_encoder(
    mechanism: str,
    data,
    settings,
    work_dir: str | Path,
    *,
    model_spec: str = "embedded:minilm",
    test_size: float = 0.2,
    holdout_ids: set[str] | None = None,
    n_resamples: int = 1000,
) -> tuple[EpitomeCrossEncoder, dict]:
    """Fine-tune on the training side of a split grouped by seeker post (or of a holdout-id file),
    score once on the held-out side. `data`: read_epitome's frame; `settings`: FineTuneSettings."""

    y = data["level"].to_numpy().astype(np.int64)
    seekers, responses = data["seeker_post"].to_list(), data["response_post"].to_list()
    ids = data["pair_id"].to_list()
    train, test, split = grouped_split(
        seekers, y, ids, test_size=test_size, seed=settings.seed, holdout_ids=holdout_ids
    )
    model, tokenizer, stats = finetune(
        model_spec,
        [seekers[i] for i in train],
        [responses[i] for i in train],
        y[train],
        [str(lvl) for lvl in LEVELS],
        settings,
        work_dir,
    )
    clf = EpitomeCrossEncoder(mechanism, model, tokenizer, settings.max_length, {})
    pred = clf.predict(None, [seekers[i] for i in test], [responses[i] for i in test])
    metrics = {
        **classification_report(y[test], pred, mechanism, n_resamples=n_resamples, seed=settings.seed),
        **split,
        "train_level_counts": {int(k): int(v) for k, v in zip(*np.unique(y[train], return_counts=True))},
        "backbone": model_spec,
        "settings": settings.as_dict(),
        **stats,
        "heldout_ids_sha256": _ids_sha256([ids[i] for i in test]),
        "heldout_ids_first": [ids[i] for i in test][:20],
    }
    clf.config = {
        "kind": CROSS_ENCODER_KIND,
        "mechanism": mechanism,
        "labels": list(LEVELS),
        "backbone": model_spec,
        "settings": settings.as_dict(),
        "metrics": metrics,
    }
    return clf, metrics


def save_cross_encoder(clf: EpitomeCrossEncoder, folder: str | Path) -> Path:
    return save_classifier(folder, clf.model, clf.tokenizer, clf.config)


def _ids_sha256(ids: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


# ------------------------------------------------------------- trained once, from a configuration


def epitome_fingerprint(
    folder: str | Path, mechanism: str, options: dict, code_version: str, holdout_file: str | None = None
) -> str:
    """What a classifier was trained from: code version, the mechanism's data file, the options and the
    holdout file (bytes). The asset reuses a saved classifier with the same fingerprint instead of
    training again, so an unrelated run that selects it costs nothing."""
    import hashlib

    h = hashlib.sha256()
    # where the data lies and which device trains do not change what is learnt (the bytes are hashed below)
    relevant = {k: v for k, v in options.items() if k not in ("dir", "device")}
    h.update(json.dumps([code_version, mechanism, relevant], sort_keys=True, default=str).encode())
    h.update(hashlib.sha256((Path(folder) / MECHANISMS[mechanism]).read_bytes()).digest())
    if holdout_file:
        h.update(hashlib.sha256(Path(holdout_file).read_bytes()).digest())
    return h.hexdigest()[:32]


def saved_metrics(folder: str | Path) -> dict | None:
    """The metrics (with their `fingerprint`) of a classifier folder of either kind, None if absent."""
    folder = Path(folder)
    for name in ("classifier.json", "config.json"):
        path = folder / name
        if path.is_file():
            config = json.loads(path.read_text())
            if "metrics" in config and (config.get("kind") == CROSS_ENCODER_KIND or name == "config.json"):
                return config["metrics"]
    return None


def train_epitome_from_options(
    mechanism: str, options: dict, work_dir: str | Path, *, encoder=None, holdout_ids: set[str] | None = None
):
    """(classifier, metrics) for one mechanism from a plain options dict (the evaluation resource's
    epitome_* fields without the prefix): `model` cross_encoder or linear, both on a split grouped by
    seeker post (or the holdout ids)."""
    import time

    data = read_epitome(options["dir"], mechanism, max_rows=options.get("max_rows", 0))
    start = time.perf_counter()
    if options.get("model", "cross_encoder") == "cross_encoder":
        settings = FineTuneSettings(
            epochs=options.get("epochs", 4.0),
            max_steps=options.get("max_steps", 0) or -1,
            batch_size=options.get("batch_size", 32),
            learning_rate=options.get("learning_rate", 5e-5),
            max_length=options.get("max_length", 128),
            device=options.get("device", "cpu"),
        )
        clf, metrics = train_epitome_cross_encoder(
            mechanism,
            data,
            settings,
            work_dir,
            model_spec=options["encoder"],
            test_size=options.get("test_size", 0.2),
            holdout_ids=holdout_ids,
        )
    else:
        y = data["level"].to_list()
        tr, te, split = grouped_split(
            data["seeker_post"].to_list(),
            y,
            data["pair_id"].to_list(),
            test_size=options.get("test_size", 0.2),
            holdout_ids=holdout_ids,
        )
        clf, metrics = train_epitome_classifier(
            mechanism,
            data["seeker_post"].to_list(),
            data["response_post"].to_list(),
            y,
            encoder,
            split=(tr, te),
        )
        levels = np.asarray(y)[te]
        pred = clf.predict(
            encoder, [data["seeker_post"][int(i)] for i in te], [data["response_post"][int(i)] for i in te]
        )
        metrics = {
            **metrics,
            **classification_report(levels, pred, mechanism),
            **split,
            "backbone": options["encoder"],
            "heldout_ids_sha256": _ids_sha256([data["pair_id"][int(i)] for i in te]),
        }
    metrics["train_seconds"] = round(time.perf_counter() - start, 1)
    return clf, metrics


def save_epitome(clf, folder: str | Path, metrics: dict) -> Path:
    if isinstance(clf, EpitomeCrossEncoder):
        clf.config["metrics"] = metrics
        return save_cross_encoder(clf, folder)
    return clf.save(folder, metrics)
