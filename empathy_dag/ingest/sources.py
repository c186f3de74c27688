"""Which files of a landing folder are read, which are not, and why; and the printable form of a file
name that goes into every table.

Pure Python, no Dagster: `CorpusSources` (the ingest asset) and the local landing-zone sensor list a
folder with the same rules, so what the sensor announces is what ingest reads.

Rules (README, "Bring your own data"):
- Subfolders are walked (up to `MAX_DEPTH` levels); a file `a/b.jsonl` is named by its path relative
  to the landing folder. Folders that hold other files than corpus rows (`reviews/`) are left out.
- Symlinks (to files or folders) are refused and never read or followed: a link is how a file outside
  the landing zone would get ingested, or copied into the quarantine. So is anything whose resolved
  path is outside the landing folder, and anything that is not a regular file (a FIFO would block the
  reader forever, a device could be endless).
- Names starting with "." (hidden files and folders) and partial uploads (.tmp, .part, .crdownload,
  .partial) are skipped and recorded as skipped, not silently ignored. The S3 sync's own bookkeeping
  (`.<name>.etag` beside a downloaded `<name>`, `.<name>.part` while downloading) is left out.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial")
MAX_DEPTH = 8


def printable_name(name: str | os.PathLike) -> str:
    """A file name as it can be stored and shown: bytes that are not UTF-8 as \\xNN, control, format
    (bidi, zero-width) and other non-printable characters as \\uXXXX. Injective enough to tell two
    files apart, always encodable, never reorders what a terminal or spreadsheet shows."""
    raw = os.fsencode(name).decode("utf-8", "backslashreplace")
    out = []
    for ch in raw:
        if ch in (" ",) or (ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Zl", "Zp")):
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return "".join(out)


@dataclass(frozen=True)
class SkippedPath:
    """A path of the landing folder that is not read: `reason_code` says which rule, `message` what to do."""

    path: Path
    name: str  # printable, relative to the landing folder
    reason_code: (
        str  # symlink | outside_root | not_a_regular_file | hidden | partial_upload | too_deep | unreadable
    )
    message: str
    refused: bool  # True: refused for safety (also quarantined); False: only skipped (e.g. still uploading)


def is_sync_bookkeeping(entry_name: str, sibling_names: set[str]) -> bool:
    """`.<name>.etag` / `.<name>.part` written by the S3 landing sync beside (or before) `<name>`."""
    if not entry_name.startswith("."):
        return False
    if entry_name.endswith(".etag"):
        return entry_name[1:-5] in sibling_names
    return entry_name.endswith(".part")


def list_landing_folder(
    root: Path, *, exclude_subfolders: tuple[str, ...] = (), max_depth: int = MAX_DEPTH
) -> tuple[list[Path], list[SkippedPath]]:
    """Every regular file under `root` that ingest reads, sorted by relative path, and every path it
    does not read, with the reason. Never follows a symlink, never opens a file."""
    root = Path(root)
    files: list[Path] = []
    skipped: list[SkippedPath] = []
    if not root.is_dir():
        return files, skipped
    real_root = root.resolve()

    def skip(path: Path, code: str, message: str, refused: bool) -> None:
        rel = printable_name(path.relative_to(root).as_posix())
        skipped.append(SkippedPath(path, rel, code, f"{rel}: {message}", refused))

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            skip(folder, "unreadable", f"folder cannot be listed ({exc.strerror or exc})", refused=False)
            return
        names = {e.name for e in entries}
        for entry in entries:
            path = Path(entry.path)
            name = entry.name
            if depth == 0 and name in exclude_subfolders and entry.is_dir(follow_symlinks=False):
                continue
            if is_sync_bookkeeping(name, names):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                skip(path, "unreadable", f"cannot be inspected ({exc.strerror or exc})", refused=False)
                continue
            if stat.S_ISLNK(st.st_mode):
                skip(
                    path,
                    "symlink",
                    "is a symbolic link; links are never followed (copy the file itself into "
                    "the landing zone)",
                    refused=True,
                )
                continue
            if name.startswith("."):
                skip(
                    path,
                    "hidden",
                    "name starts with '.', so it is treated as hidden and not read (rename it to ingest it)",
                    refused=False,
                )
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 >= max_depth:
                    skip(
                        path,
                        "too_deep",
                        f"folder is nested deeper than {max_depth} levels; not walked",
                        refused=False,
                    )
                else:
                    walk(path, depth + 1)
                continue
            if not stat.S_ISREG(st.st_mode):
                skip(
                    path,
                    "not_a_regular_file",
                    "is not a regular file (FIFO, socket or device); not read",
                    refused=True,
                )
                continue
            if name.lower().endswith(IN_PROGRESS_SUFFIXES):
                skip(
                    path,
                    "partial_upload",
                    "looks like a partial upload (.tmp/.part/.crdownload/.partial); it is read once renamed",
                    refused=False,
                )
                continue
            try:
                inside = path.resolve().is_relative_to(real_root)
            except (OSError, RuntimeError):
                inside = False
            if not inside:
                skip(path, "outside_root", "resolves outside the landing zone; not read", refused=True)
                continue
            files.append(path)

    walk(root, 0)
    return files, skipped


def relative_name(path: Path, root: Path) -> str:
    """The printable name of `path` relative to `root` (its printable full path when not under it)."""
    try:
        return printable_name(Path(path).relative_to(root).as_posix())
    except ValueError:
        return printable_name(str(path))
