"""Small file helpers shared by host and container code (stdlib + numpy only)."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
from pathlib import Path

import numpy as np


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(path: Path) -> str:
    """A file's sha256, or a directory's over its files' relative paths and hashes."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def create_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty hidden file next to `path`, opened for writing: (fd, its path).

    Unlike mkstemp (always 0600), it is created with mode 0666 and the kernel applies the
    user's umask (or the folder's default ACL), so the renamed result is as readable as any
    file the user creates; reading the umask instead would race with other threads.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temp file in the same folder, then rename: never a half-written file."""
    fd, tmp = create_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # so a rename after a crash never exposes an empty file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_tree(src: Path, dst: Path) -> None:
    """Like shutil.copytree, but new folders and files take the umask instead of the source's modes."""
    for folder, _, files in os.walk(src, followlinks=True):
        target = dst / Path(folder).relative_to(src)
        target.mkdir()
        for name in files:
            shutil.copyfile(Path(folder, name), target / name)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy a file or a directory tree atomically (temp sibling, then rename).

    The copy's modes come from the umask, not from `src` (often a 0600 temp file or 0700 temp dir).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    remove(tmp)
    if src.is_dir():
        _copy_tree(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    remove(dst)
    os.replace(tmp, dst)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def tree_files(path: Path) -> list[Path]:
    """A file, or every file under a directory, sorted."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def is_within(root: Path, path: Path) -> bool:
    """Whether `path`, every link on the way followed, is `root` or lies below it."""
    real, top = path.resolve(), root.resolve()
    return real == top or top in real.parents


def links_outside(root: Path) -> list[Path]:
    """The symlinks under `root` that lead out of it once resolved (a chain of links that each look
    harmless on their own included), dangling ones too: nothing below `root` may read through them."""
    return sorted(p for p in root.rglob("*") if p.is_symlink() and not is_within(root, p))
