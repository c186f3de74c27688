"""The emotion taxonomy: the 28 GoEmotions labels with sentiment and Ekman groups, a definition, an
opposite for EmPO-style rejected responses, and the mapping of the 32 EmpatheticDialogues labels.

The data lives in `assets/taxonomy/` so that a reader can review the choices (with their rationale)
without reading code; this module only loads and checks it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from empathy_dag.settings import assets_dir

SENTIMENT_GROUPS = ("positive", "negative", "ambiguous", "neutral")
EKMAN_GROUPS = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")


@dataclass(frozen=True)
class Emotion:
    id: int
    label: str
    sentiment: str
    ekman: str
    definition: str
    opposite: str
    opposite_rationale: str


@dataclass(frozen=True)
class Taxonomy:
    emotions: tuple[Emotion, ...]
    ed_mapping: dict[str, str]  # EmpatheticDialogues label -> GoEmotions label
    ed_rationale: dict[str, str]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.emotions]

    def __getitem__(self, label: str) -> Emotion:
        return self._by_label()[label]

    def __contains__(self, label: object) -> bool:
        return label in self._by_label()

    def _by_label(self) -> dict[str, Emotion]:
        return {e.label: e for e in self.emotions}

    def opposite(self, label: str) -> str:
        return self[label].opposite

    def sentiment(self, label: str) -> str:
        return self[label].sentiment

    def ekman(self, label: str) -> str:
        return self[label].ekman

    def normalize_label(self, raw: str) -> str | None:
        """A GoEmotions label, or an EmpatheticDialogues label mapped onto one; None when unknown."""
        key = raw.strip().lower()
        if key in self:
            return key
        return self.ed_mapping.get(key)

    def validate(self) -> None:
        labels = self.labels
        if len(labels) != 28 or len(set(labels)) != 28:
            raise ValueError(f"expected 28 distinct labels, got {len(labels)}")
        for e in self.emotions:
            if e.sentiment not in SENTIMENT_GROUPS:
                raise ValueError(f"{e.label}: unknown sentiment group {e.sentiment!r}")
            if e.ekman not in EKMAN_GROUPS:
                raise ValueError(f"{e.label}: unknown Ekman group {e.ekman!r}")
            if e.opposite not in self or e.opposite == e.label:
                raise ValueError(f"{e.label}: opposite {e.opposite!r} is not another label")
            if self.sentiment(e.opposite) == e.sentiment:
                raise ValueError(f"{e.label}: opposite {e.opposite} has the same sentiment group")
        for ed, ge in self.ed_mapping.items():
            if ge not in self:
                raise ValueError(f"EmpatheticDialogues label {ed!r} maps to unknown {ge!r}")

    def as_rows(self) -> list[dict]:
        return [
            {
                "id": e.id,
                "label": e.label,
                "sentiment": e.sentiment,
                "ekman": e.ekman,
                "definition": e.definition,
                "opposite": e.opposite,
                "opposite_sentiment": self.sentiment(e.opposite),
                "opposite_rationale": e.opposite_rationale,
                "ed_labels": sorted(k for k, v in self.ed_mapping.items() if v == e.label),
            }
            for e in self.emotions
        ]


def taxonomy_files(root: Path | None = None) -> list[Path]:
    base = (root or assets_dir()) / "taxonomy"
    return [base / "goemotions.json", base / "empathetic_dialogues_map.json"]


def load_taxonomy(root: Path | None = None) -> Taxonomy:
    go_path, ed_path = taxonomy_files(root)
    go = json.loads(go_path.read_text(encoding="utf-8"))
    ed = json.loads(ed_path.read_text(encoding="utf-8"))
    tax = Taxonomy(
        emotions=tuple(Emotion(**row) for row in go["emotions"]),
        ed_mapping={k: v["goemotion"] for k, v in ed["mapping"].items()},
        ed_rationale={k: v["rationale"] for k, v in ed["mapping"].items()},
    )
    tax.validate()
    return tax


@cache
def default_taxonomy() -> Taxonomy:
    return load_taxonomy()


EMOTIONS: list[str] = default_taxonomy().labels
