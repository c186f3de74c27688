"""Prompt templates as versioned files in `assets/prompts/`.

A template file has `### system` and `### user` sections with `{placeholders}` (str.format); lines
starting with `#` before the first section are comments. A template's version is its name plus the
sha256 of its bytes, so editing the file changes the code version of every asset that uses it and
the Dagster UI marks those assets stale.

Each template exists once per supported language: `name.txt` is the English one (its version is what
it was before other languages existed), `name.<lang>.txt` another language's (`brainstorm_situation.ja.txt`).
A row is rendered with the template of its own language; a language without a template is an error,
never a silent fall-back to English. Emotion names and definitions for a non-English template come
from `emotion_names.<lang>.json` beside the templates."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from empathy_dag.ingest.language import SUPPORTED_LANGUAGES
from empathy_dag.settings import assets_dir

BASE_LANGUAGE = "en"  # the language of the un-suffixed template files

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
        name=name,
        system=sections.get("system", ""),
        user=sections["user"],
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def template_path(name: str, language: str = BASE_LANGUAGE, folder: Path | None = None) -> Path:
    suffix = "" if language == BASE_LANGUAGE else f".{language}"
    return (folder or prompts_dir()) / f"{name}{suffix}.txt"


def load_template(name: str, folder: Path | None = None, language: str = BASE_LANGUAGE) -> PromptTemplate:
    path = template_path(name, language, folder)
    if not path.is_file():
        raise FileNotFoundError(f"no {language!r} prompt template {name!r} (expected {path})")
    label = name if language == BASE_LANGUAGE else f"{name}.{language}"
    return parse_template(label, path.read_text(encoding="utf-8"))


def load_templates(
    name: str, folder: Path | None = None, languages: tuple[str, ...] = SUPPORTED_LANGUAGES
) -> dict[str, PromptTemplate]:
    """language -> template, for every supported language (each must have its file)."""
    return {lang: load_template(name, folder, lang) for lang in languages}


def template_for(templates: PromptTemplate | Mapping[str, PromptTemplate], language: str) -> PromptTemplate:
    """The template to render a row of `language` with. A single template (callers that pass one on
    purpose) is used for every row; a mapping must have the row's language."""
    if isinstance(templates, PromptTemplate):
        return templates
    try:
        return templates[language]
    except KeyError:
        raise ValueError(
            f"no prompt template for language {language!r} (have: {', '.join(templates)}); "
            "add one rather than prompting in another language"
        ) from None


def templates_version(*names: str, folder: Path | None = None) -> str:
    """One short hash over several templates, every language of each (for an asset's code_version)."""
    h = hashlib.sha256()
    for n in names:
        for lang in SUPPORTED_LANGUAGES:
            h.update(load_template(n, folder, lang).sha256.encode())
    return h.hexdigest()[:10]


@cache
def _emotion_names(language: str, folder: str) -> dict:
    path = Path(folder) / f"emotion_names.{language}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no emotion names for language {language!r} (expected {path})")
    return json.loads(path.read_text(encoding="utf-8"))


def emotion_names(language: str, folder: Path | None = None) -> dict[str, dict]:
    """label -> {name, definition, variants} of a non-English language (its `emotion_names` file)."""
    return _emotion_names(language, str(folder or prompts_dir()))["emotions"]


def localised_emotion(
    label: str, definition: str, language: str, folder: Path | None = None
) -> tuple[str, str]:
    """(name, definition) of an emotion as a `language` template should show it."""
    if language == BASE_LANGUAGE:
        return label, definition
    entry = _emotion_names(language, str(folder or prompts_dir()))["emotions"].get(label)
    if entry is None:
        raise KeyError(f"emotion {label!r} has no {language!r} name in emotion_names.{language}.json")
    return entry["name"], entry["definition"]


def localised_domain(domain: str, language: str, folder: Path | None = None) -> str:
    """The domain as a `language` template should show it: translated when the names file has it
    (the default 'chronic illness'), else as given (a user's own domain, assumed in that language)."""
    if language == BASE_LANGUAGE:
        return domain
    return _emotion_names(language, str(folder or prompts_dir())).get("domains", {}).get(domain, domain)
