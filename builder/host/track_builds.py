"""Builds into the tracking store, never at a build's expense: a store that is down (or MLflow not installed)
gives a warning and a replay file in the run's folder, which `builder track replay` logs later.

MLflow is imported here only once a store is asked for (tracking.py is its only importer).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from builder.errors import BuilderError, ConfigError
from builder.host.tracked_runs import read_replay, replay_files, runs_of, write_replay

Echo = Callable[[str], None]
INSTALL = "pip install 'edge-builder[track]' (MLflow's tracking client and its SQLite store)"


def open_store(uri: str):
    """The tracking.Store at `uri`; ConfigError when MLflow is not installed."""
    try:
        from builder.host.tracking import Store  # the optional `track` extra: loaded only when asked for
    except ImportError as exc:
        raise ConfigError(f"tracking needs MLflow, which is not installed here ({exc})", hint=INSTALL) from None
    return Store(uri)


def log_builds(folders: list[Path], uri: str, echo: Echo, warn: Echo) -> None:
    """Every variant of each run folder into the store; what the store could not take stays in a replay file."""
    pending = []
    for folder in folders:
        try:
            pending.append((folder, runs_of(folder)))
        except BuilderError as exc:
            warn(f"not tracked: {exc.message}")
    logged = 0
    try:
        store = open_store(uri)
        while pending:
            folder, runs = pending[0]
            logged += sum(store.log(run, folder) for run in runs)
            pending.pop(0)
    except BuilderError as exc:
        why = f"not tracked: {exc.message}{f' ({exc.hint})' if exc.hint else ''}"
        for folder, runs in pending:
            try:
                warn(f"{why}; `builder track replay {write_replay(folder, uri, exc.message, runs)}` logs it later")
            except OSError as lost:
                warn(f"{why}; no replay file either: {folder}: {lost.strerror or lost}")
        return
    echo(f"tracked {logged} variant run(s) in {uri}")


def replay(path: Path, uri: str | None, echo: Echo) -> None:
    """Log the runs of each replay file PATH means into `uri` (default: the store each file was meant for);
    a file whose runs are all in the store is removed."""
    for file in replay_files(path):
        kept = read_replay(file)
        store = open_store(uri or kept.store)
        logged = sum(store.log(run, file.parent) for run in kept.runs)
        file.unlink()
        echo(f"{file}: {logged} variant run(s) logged in {store.uri}"
             + (f", {len(kept.runs) - logged} already there" if logged < len(kept.runs) else ""))
