"""Paths built from config or data never leave their root, and text written for spreadsheets never
runs as a formula. Pure Python, no Dagster.

- `child_path(root, name)`: `root / name` for a relative name whose folders stay under `root` after
  resolving symlinks (the last component may be an operator's link); anything else (absolute, "..", NUL, an empty name) is a ValueError saying so.
  `ExportConfig.name="../models"` once deleted the model store; now it is refused before anything is
  touched.
- `single_component(name)`: a name that must be one folder or file name (no separators at all).
- `spreadsheet_safe(value)`: a CSV cell that Excel / LibreOffice / Google Sheets would evaluate
  (leading `=`, `+`, `-`, `@`, tab or carriage return) gets a leading apostrophe, the OWASP "CSV
  injection" advice. (The review decisions read back from such a CSV are the reviewer's own columns,
  which this never touches.)
"""

from __future__ import annotations

from pathlib import Path

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def single_component(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty name, got {name!r}")
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"{what} must be a single folder name (no '/', '\\\\', '..' or NUL), got {name!r}")
    if any(ord(c) < 0x20 for c in name):
        raise ValueError(f"{what} must not contain control characters, got {name!r}")
    return name


def child_path(root: str | Path, name: str, what: str = "name") -> Path:
    """`root / name`, refused when `name` would resolve outside `root` (or is not a relative name)."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise ValueError(f"{what} must be a non-empty relative name, got {name!r}")
    if Path(name).is_absolute() or name.startswith(("/", "\\")) or "\\" in name:
        raise ValueError(f"{what} must be relative to {root}, got {name!r}")
    if any(part in ("..",) for part in Path(name).parts):
        raise ValueError(f"{what} must not contain '..' (it would leave {root}), got {name!r}")
    root = Path(root)
    target = root / name
    # The folders on the way must stay inside the root; the last component may be a link the operator
    # made on purpose (a model folder linked into the store from a shared cache). Names cannot point
    # anywhere by themselves: '..' and absolute names are refused above.
    if not target.parent.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{what} {name!r} resolves outside {root} (through a symlink?); refused")
    return target


def spreadsheet_safe(value):
    """A cell for a CSV that people open in a spreadsheet: text starting with a formula trigger is
    prefixed with an apostrophe (shown as text, never evaluated). Non-text values pass through."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value
