"""Paths a recipe names: local files checked at load, plain file names, archive members inside their archive."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from pydantic import ValidationInfo

from builder.config.common import path_kind

FILE, DIRECTORY = "regular file", "directory"
ALLOW_ENV = "EDGE_BUILDER_ALLOW_PATHS"  # folders (os.pathsep between them) a recipe may read besides its own
MAX_FILE_NAME = 200  # bytes: file systems take 255, and saved files get prefixes and suffixes (000_x, .x.tmp)


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
        within_reach(path, recipe, allowed(info))
        kind = path_kind(path)
        if kind is None:
            raise ValueError(f"file not found: {path} (paths are relative to the recipe file)")
        if kind not in kinds:
            raise ValueError(f"{path} is a {kind}, not a {' or '.join(kinds)}")
        return path.resolve()

    return check


def extra_roots() -> list[Path]:
    """The folders the user allows recipes to read besides their own (EDGE_BUILDER_ALLOW_PATHS)."""
    return [Path(p).expanduser().resolve() for p in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if p.strip()]


def allowed(info: ValidationInfo) -> list[Path]:
    """Folders the command loading the recipe allows besides the user's (`builder import --calibration`'s)."""
    return [Path(p).resolve() for p in (info.context or {}).get("allow", ())]


def within_reach(path: Path, recipe: Path, also: list[Path] = ()) -> None:
    """A recipe reads files below its own folder or a folder the user allows, wherever links lead: a recipe
    from elsewhere must not copy ~/.ssh/id_rsa into an image, a device or a bundle."""
    real = path.resolve()
    if not any(real == root or root in real.parents for root in [recipe.parent.resolve(), *extra_roots(), *also]):
        raise ValueError(f"{path} is outside the recipe's folder {recipe.parent.resolve()}: a recipe reads only files "
                         f"below its own folder (allow more folders with {ALLOW_ENV}=DIR{os.pathsep}DIR)")


def loading(info: ValidationInfo) -> Path | None:
    """The recipe file being loaded, if any (paths are checked only then)."""
    base = (info.context or {}).get("path")
    return None if base is None else Path(base)


def plain_name(name: str, what: str) -> str:
    """A file name to save as: no directories, not . or .. (also once %-escapes are undone)."""
    for form in {name, unquote(name)}:
        if form in ("", ".", "..") or "/" in form or "\\" in form or "\0" in form:
            raise ValueError(f"{what} {name!r} must be a plain file name (no directories, not . or ..)")
        if len(form.encode()) > MAX_FILE_NAME:
            raise ValueError(f"{what} {form[:20]!r}...: {len(form.encode())} bytes, more than the {MAX_FILE_NAME} "
                             "a saved file's name may have here")
    return name


def member_path(member: str) -> str:
    """A path inside an archive or wheel: relative, without .. (it names a file, never a place outside)."""
    parts = member.replace("\\", "/").split("/")
    if member.startswith(("/", "\\")) or (len(member) > 1 and member[1] == ":") or ".." in parts \
            or "\0" in member or parts[-1] in ("", ".", ".."):
        raise ValueError(f"member {member!r} must be a relative path to a file inside the archive, without '..'")
    plain_name(parts[-1], "member's file name")  # it is saved under that name
    return member
