"""Tar streams between this host and containers: build contexts in, work directories in and out.

The Docker API moves files only as tar archives. What comes back from a
container is untrusted: nothing may land outside the work directory, files
belong to the invoking user, and a copy cut off halfway changes nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from builder.errors import EngineError
from builder.util import links_outside

log = logging.getLogger(__name__)
_CONTEXT_MTIME = 0  # fixed mtime in build contexts: same bytes in, same cache key out


def context_tar(files: dict[str, bytes | Path]) -> IO[bytes]:
    """A deterministic tar of a build context: sorted names, fixed mtime and owner.

    Values are bytes, or paths of (large) files streamed from disk, e.g. wheels.
    """
    buf = tempfile.SpooledTemporaryFile(max_size=64 << 20)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(str(PurePosixPath(name)))
            info.size = data.stat().st_size if isinstance(data, Path) else len(data)
            info.mtime, info.mode = _CONTEXT_MTIME, 0o644
            if isinstance(data, Path):
                with open(data, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def numeric_owner(user: str | None) -> tuple[int, int]:
    """uid/gid that copied-in files get: a numeric `user` ("1000" or "1000:1000"), else root."""
    uid, _, gid = (user or "").partition(":")
    return (int(uid) if uid.isdigit() else 0, int(gid) if gid.isdigit() else 0)


@contextlib.contextmanager
def dir_tar(src: Path, container_dir: str, owner: tuple[int, int]) -> Iterator[Iterator[bytes]]:
    """The contents of `src` as a tar (in a temp file) whose entries live under `container_dir`."""

    def chown(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = owner
        info.uname = info.gname = ""
        return info

    with tempfile.TemporaryFile() as tmp:
        with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(src, arcname=container_dir.strip("/") or ".", filter=chown)
        tmp.seek(0)
        yield iter(lambda: tmp.read(1 << 20), b"")


def take_work_dir(chunks: Iterable[bytes], dest: Path,
                  landing: Callable[[], contextlib.AbstractContextManager] | None = None) -> None:
    """Extract a container's work dir into a staging folder, then move it over `dest`.

    A connection lost halfway through the copy leaves `dest` as it was: nothing
    half-copied is ever seen by the report or a later run. The moves happen inside
    `landing()`, which refuses a copy whose attempt was given up (docker_api.Attempt).
    """
    staging = Path(tempfile.mkdtemp(prefix=".copy-out-", dir=dest.parent))
    try:
        _extract_dir(chunks, staging)
        _refuse_links_out(staging, dest)
        with landing() if landing else contextlib.nullcontext():
            _move_over(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _refuse_links_out(dest, dest, remove=True)  # a link that leads out through one an earlier copy brought


def _refuse_links_out(root: Path, dest: Path, remove: bool = False) -> None:
    """Each link is checked where it resolves, through every link on the way: one at a time, each of a
    chain can look as if it stayed inside."""
    if escaping := links_outside(root):
        for link in escaping if remove else []:
            link.unlink()
        names = ", ".join(str(p.relative_to(root)) for p in escaping[:3])
        raise EngineError(f"refusing the work dir copied out into {dest}: {names} link(s) outside it",
                          hint="a step must not leave links that lead out of its work dir")


def take_path(chunks: Iterable[bytes], dest: Path) -> None:
    """Extract a `get_archive` stream of one file or folder to `dest` (a path that does not exist yet)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _extract_dir(chunks, dest.parent, keep_top=True)


def _move_over(staging: Path, dest: Path) -> None:
    for path in sorted(staging.rglob("*")):
        target = dest / path.relative_to(staging)
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(path, target)


def _extract_dir(chunks: Iterable[bytes], dest: Path, keep_top: bool = False) -> None:
    """Extract a `get_archive` stream into `dest`, dropping its top folder unless `keep_top`.

    Written by hand rather than with tarfile.extractall: the files must belong to
    the invoking user, and nothing may land outside `dest` (no absolute paths,
    no "..", no links pointing out, no devices); Python 3.11.2 has no tar filters.
    """
    root = dest.resolve()
    with tempfile.TemporaryFile() as tmp:
        for chunk in chunks:
            tmp.write(chunk)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp, mode="r") as tar:
            for member in tar:
                target = _inside(root, member.name, keep_top)
                if target is None:
                    continue
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                parent = target.parent.resolve()
                if parent != root and root not in parent.parents:
                    raise EngineError(f"refusing to copy {member.name!r} out: its folder links outside {dest}")
                if target.is_symlink() or target.is_file():
                    target.unlink()
                if member.isfile():
                    with tar.extractfile(member) as src, open(target, "wb") as out:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, out)
                elif member.islnk() and (source := _inside(root, member.linkname, keep_top)) and source.is_file():
                    shutil.copyfile(source, target)
                elif member.issym() and _link_stays_inside(root, target, member.linkname):
                    os.symlink(member.linkname, target)
                    continue
                else:
                    log.debug("skipping %s from the container (type %r)", member.name, member.type)
                    continue
                os.chmod(target, (member.mode & 0o777) | 0o600)
                os.utime(target, (member.mtime, member.mtime))


def _inside(root: Path, name: str, keep_top: bool = False) -> Path | None:
    """`root / name` minus the archive's top folder (unless `keep_top`); None for the top folder itself."""
    parts = PurePosixPath(name).parts[0 if keep_top else 1:]
    if not parts or parts == (".",):
        return None
    if PurePosixPath(name).is_absolute() or ".." in parts:
        raise EngineError(f"refusing to copy {name!r} out of the container: it points outside the work dir")
    return root.joinpath(*parts)


def _link_stays_inside(root: Path, link: Path, target: str) -> bool:
    if PurePosixPath(target).is_absolute():
        return False
    resolved = Path(os.path.normpath(link.parent / target))
    return resolved == root or root in resolved.parents
