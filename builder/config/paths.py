"""Paths a recipe names: local files checked at load, plain file names, archive members inside their archive."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from pydantic import ValidationInfo

from builder.config.common import path_kind

FILE, DIRECTORY = "regular file", "directory"


def local_path(*kinds: str):
    """A field validator: resolve a path against the recipe's folder; it must exist and be one of `kinds`.

    Never a FIFO or a device: copying one blocks or never ends. Only while loading a recipe
    file: a plan re-read inside a container holds host paths, checked then.
    """

    def check(value: Path | None, info: ValidationInfo) -> Path | None:
        recipe = loading(info)
        if value is None or recipe is None:
            return value
        path = value if value.is_absolute() else recipe.parent / value
        kind = path_kind(path)
        if kind is None:
            raise ValueError(f"file not found: {path} (paths are relative to the recipe file)")
        if kind not in kinds:
            raise ValueError(f"{path} is a {kind}, not a {' or '.join(kinds)}")
        return path.resolve()

    return check


def loading(info: ValidationInfo) -> Path | None:
    """The recipe file being loaded, if any (paths are checked only then)."""
    base = (info.context or {}).get("path")
    return None if base is None else Path(base)


def plain_name(name: str, what: str) -> str:
    """A file name to save as: no directories, not . or .. (also once %-escapes are undone)."""
    for form in {name, unquote(name)}:
        if form in ("", ".", "..") or "/" in form or "\\" in form or "\0" in form:
            raise ValueError(f"{what} {name!r} must be a plain file name (no directories, not . or ..)")
    return name


def member_path(member: str) -> str:
    """A path inside an archive or wheel: relative, without .. (it names a file, never a place outside)."""
    parts = member.replace("\\", "/").split("/")
    if member.startswith(("/", "\\")) or (len(member) > 1 and member[1] == ":") or ".." in parts \
            or "\0" in member or parts[-1] in ("", ".", ".."):
        raise ValueError(f"member {member!r} must be a relative path to a file inside the archive, without '..'")
    return member
