"""Readable, throttled progress lines for downloads."""

from __future__ import annotations

import time


class DownloadProgress:
    """A fetch progress callback: a line when a transfer starts, then at most every `every` seconds."""

    def __init__(self, echo, every: float = 2.0):
        self.echo = echo
        self.every = every
        self.last: dict[str, float] = {}

    def __call__(self, message: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        first = message not in self.last
        finished = total is not None and done >= total
        if not (first or finished or now - self.last[message] >= self.every):
            return
        self.last[message] = now
        size = f"{done / 2**20:.1f}" + (f"/{total / 2**20:.1f} MB ({100 * done // max(total, 1)}%)" if total else " MB")
        self.echo(f"    {message}: {size}" if done or total else f"    {message}")


def download_progress(echo):
    """The fetch progress callback for `echo`: its own where it draws downloads (the console view's
    echo of a recipe/target), else throttled lines."""
    return getattr(echo, "download", None) or DownloadProgress(echo)
