"""Prompt templates as versioned files in `assets/prompts/`.

A template file has `### system` and `### user` sections with `{placeholders}` (str.format); lines
starting with `#` before the first section are comments. A template's version is its name plus the
sha256 of its bytes, so editing the file changes the code version of every asset that uses it and
the Dagster UI marks those assets stale."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from empathy_dag.settings import assets_dir

_SECTION = re.compile(r"^###\s*(system|user)\s*$", re.MULTILINE)


def prompts_dir() -> Path:
    return assets_dir() / "prompts"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    user: str
    sha256: str

    @property
    def version(self) -> str:
        return f"{self.name}@{self.sha256[:10]}"

    def render(self, **values) -> list[dict[str, str]]:
        conversation = []
        if self.system:
            conversation.append({"role": "system", "content": self.system.format(**values)})
        conversation.append({"role": "user", "content": self.user.format(**values)})
        return conversation


def parse_template(name: str, text: str) -> PromptTemplate:
    parts = _SECTION.split(text)
    sections: dict[str, str] = {}
    for role, body in zip(parts[1::2], parts[2::2]):
        sections[role] = body.strip()
    if "user" not in sections:
        raise ValueError(f"prompt template {name}: no '### user' section")
    return PromptTemplate(
        name=name, system=sections.get("system", ""), user=sections["user"],
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def load_template(name: str, folder: Path | None = None) -> PromptTemplate:
    path = (folder or prompts_dir()) / f"{name}.txt"
    return parse_template(name, path.read_text(encoding="utf-8"))


def templates_version(*names: str, folder: Path | None = None) -> str:
    """One short hash over several templates (for an asset's code_version)."""
    h = hashlib.sha256()
    for n in names:
        h.update(load_template(n, folder).sha256.encode())
    return h.hexdigest()[:10]
