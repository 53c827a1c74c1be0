"""Safe extraction of one member from a .zip or .tar (.gz/.bz2/.xz) archive.

Only the requested member is read, and it is streamed into a file the caller
owns: nothing is ever extracted into a directory. Names that would escape an
extraction root (absolute paths, ``..``, links pointing outside the archive)
and special files (devices, fifos) are refused, so a hostile archive can do
no harm even if a later tool extracts it the naive way.
"""

from __future__ import annotations

import fnmatch
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

from builder.errors import FetchError

_MAX_LINKS = 8
_HINT = "name the member by its path inside the archive (e.g. dir/model.onnx)"


class _Reader(Protocol):
    @property
    def names(self) -> Mapping[str, object]: ...

    def kind(self, name: str) -> tuple[str, str]: ...
    def copy(self, name: str, out: BinaryIO) -> None: ...
    def close(self) -> None: ...


def copy_member(archive: Path, member: str, out: BinaryIO) -> str:
    """Copy `member` of `archive` into `out`; return its path inside the archive.

    `member` is a path inside the archive, or a bare file name that exactly one
    member has. Symlinks and hardlinks are followed only within the archive.
    """
    reader = _open(archive, member)
    try:
        name = _resolve(reader, member, archive)
        for _ in range(_MAX_LINKS):
            kind, target = reader.kind(name)
            if kind == "file":
                reader.copy(name, out)
                return name
            if kind not in ("symlink", "hardlink"):
                raise _refuse(name, archive, f"it is a {kind}")
            name = _link_target(name, target, kind, archive)
        raise _refuse(member, archive, f"more than {_MAX_LINKS} links deep")
    finally:
        reader.close()


def matching_members(archive: Path, pattern: str) -> list[str]:
    """The regular files of `archive` whose paths match the glob `pattern`, in name order."""
    reader = _open(archive, pattern)
    try:
        return sorted(n for n in reader.names if fnmatch.fnmatchcase(n, pattern) and reader.kind(n)[0] == "file")
    finally:
        reader.close()


def _open(archive: Path, member: str) -> _Reader:
    if zipfile.is_zipfile(archive):
        return _ZipReader(archive)
    if tarfile.is_tarfile(archive):
        return _TarReader(archive)
    raise FetchError(
        f"{archive.name} is not a zip or tar archive, so member {member!r} cannot be extracted",
        hint="drop `member` for a plain file, or check that the URL serves the archive",
    )


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _unsafe(name: str) -> bool:
    return (
        name.startswith("/")
        or (len(name) > 1 and name[1] == ":")  # a Windows drive, "C:..."
        or ".." in name.replace("\\", "/").split("/")
    )


def _refuse(name: str, archive: Path, why: str) -> FetchError:
    return FetchError(
        f"refusing member {name!r} of {archive.name}: {why}",
        hint="the archive is malformed or hostile; use a trusted mirror or a different member",
    )


def _resolve(reader: _Reader, member: str, archive: Path) -> str:
    """The archive's own name for `member` (exact path, else a unique basename)."""
    wanted = _clean(member)
    if _unsafe(wanted):
        raise _refuse(member, archive, "absolute or '..' paths are not allowed")
    if wanted in reader.names:
        name = wanted
    else:
        matches = [n for n in reader.names if "/" not in wanted and posixpath.basename(n) == wanted]
        if len(matches) > 1:
            found = ", ".join(sorted(matches))
            raise FetchError(f"member {member!r} is ambiguous in {archive.name}: {found}", hint=_HINT)
        if not matches:
            listing = ", ".join(sorted(reader.names)[:10]) + (" ..." if len(reader.names) > 10 else "")
            raise FetchError(f"no member {member!r} in {archive.name} (it has: {listing})", hint=_HINT)
        name = matches[0]
    if _unsafe(name):
        raise _refuse(name, archive, "absolute or '..' paths are not allowed")
    return name


def _link_target(name: str, target: str, kind: str, archive: Path) -> str:
    """Where a link member points, as an archive path; refuse targets outside it."""
    if target.startswith("/"):
        raise _refuse(name, archive, f"{kind} to absolute path {target!r}")
    base = "" if kind == "hardlink" else posixpath.dirname(name)  # tar hardlinks are archive-relative
    resolved = posixpath.normpath(posixpath.join(base, _clean(target)))
    if resolved == ".." or resolved.startswith("../"):
        raise _refuse(name, archive, f"{kind} to {target!r} points outside the archive")
    return resolved


class _ZipReader:
    def __init__(self, archive: Path):
        self._zip = zipfile.ZipFile(archive)
        self.names: dict[str, zipfile.ZipInfo] = {_clean(i.filename).rstrip("/"): i for i in self._zip.infolist()}

    def kind(self, name: str) -> tuple[str, str]:
        info = self.names[name]
        mode = info.external_attr >> 16  # unix mode bits, when the zip was made on unix
        if stat.S_ISLNK(mode):
            return "symlink", self._zip.read(info).decode()
        if info.is_dir() or stat.S_ISDIR(mode):
            return "directory", ""
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no type recorded, a plain file
            return "special file", ""
        return "file", ""

    def copy(self, name: str, out: BinaryIO) -> None:
        with self._zip.open(self.names[name]) as src:
            shutil.copyfileobj(src, out, 1 << 20)

    def close(self) -> None:
        self._zip.close()


class _TarReader:
    def __init__(self, archive: Path):
        self._tar = tarfile.open(archive, "r:*")
        self.names: dict[str, tarfile.TarInfo] = {_clean(m.name).rstrip("/"): m for m in self._tar.getmembers()}

    def kind(self, name: str) -> tuple[str, str]:
        info = self.names[name]
        if info.isreg():
            return "file", ""
        if info.issym():
            return "symlink", info.linkname
        if info.islnk():
            return "hardlink", info.linkname
        if info.isdir():
            return "directory", ""
        return ("device file" if info.ischr() or info.isblk() else "special file"), ""

    def copy(self, name: str, out: BinaryIO) -> None:
        src = self._tar.extractfile(self.names[name])
        assert src is not None  # regular members always have data
        with src:
            shutil.copyfileobj(src, out, 1 << 20)

    def close(self) -> None:
        self._tar.close()
