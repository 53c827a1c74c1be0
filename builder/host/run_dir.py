"""A run's folder, `<out>/<recipe>/<target>/`: one run at a time, built beside it and swapped in whole.

A run takes the folder's lock (`.<target>.lock` beside it), builds into a fresh hidden sibling and
swaps that in only at its end, so the last run's folder stays as it was until the new one has its
report: a run that is killed, or stops before its report, leaves nothing a later run reads (the
hidden siblings it leaves are removed by the next run that takes the lock). The swap is one
renameat2(RENAME_EXCHANGE) where the file system has it, else two renames; a run killed between
those two finds the old folder put back by the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuilderError, ConfigError
from builder.util import remove

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


@dataclass
class RunDir:
    final: Path    # where the run's folder is once it is done
    staging: Path  # where the run writes meanwhile
    committed: bool = False

    def commit(self) -> None:
        """Put the staging folder in the final folder's place (the old one is removed)."""
        if self.final.exists() and _exchange(self.staging, self.final):
            remove(self.staging)  # now the old run
        else:
            old = self.final.with_name(f".{self.final.name}.old-{secrets.token_hex(4)}")
            if self.final.exists():
                os.rename(self.final, old)
            os.rename(self.staging, self.final)
            remove(old)
        self.committed = True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the kernel or file system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"swapping {a} and {b}: {os.strerror(code)}")


@contextlib.contextmanager
def claim(final: Path) -> Iterator[RunDir]:
    """Lock `final` for this run and give it a fresh staging folder beside it.

    The caller commits the folder at the end. On a BuilderError before that, a first run (no
    folder yet) keeps what it got (missing.txt, logs); otherwise the previous run stays as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final):
        _clean_leftovers(final)
        staging = final.with_name(f".{final.name}.run-{secrets.token_hex(4)}")
        staging.mkdir()
        folder = RunDir(final=final, staging=staging)
        try:
            yield folder
        except BuilderError:
            if not final.exists() and not folder.committed:
                folder.commit()
            raise
        finally:
            if not folder.committed:
                remove(staging)


@contextlib.contextmanager
def _locked(final: Path) -> Iterator[None]:
    lock_path = final.with_name(f".{final.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{final} is in use by another run ({_holder(lock_path)})",
                              hint="wait for that run to finish, or give this one another --out") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; a killed process's lock goes with it


def _holder(lock_path: Path) -> str:
    try:
        h = json.loads(lock_path.read_text())
        return f"pid {h['pid']} on {h['host']}, since {h['since']}: {h['command']}"
    except (OSError, ValueError, KeyError):
        return "its holder did not say who it is"


def _clean_leftovers(final: Path) -> None:
    """What killed runs left beside `final`: their staging folders; an old folder a killed swap had
    moved aside is put back when `final` is missing."""
    for leftover in sorted(final.parent.glob(f".{final.name}.old-*")):
        if not final.exists():
            os.rename(leftover, final)
        else:
            remove(leftover)
    for leftover in final.parent.glob(f".{final.name}.run-*"):
        remove(leftover)
