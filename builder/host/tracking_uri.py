"""Which tracking store a command uses, decided without importing MLflow: `--track [URI]`, else
$MLFLOW_TRACKING_URI, else the project's `track:` (project_settings.py); `--track` alone, or `track: true`, names
the local store: an SQLite database under the user's cache, with nothing to start."""

from __future__ import annotations

import os
import re

from builder.errors import ConfigError
from builder.host import project_settings
from builder.host.inputs import cache_dir

ENV = "MLFLOW_TRACKING_URI"
LOCAL = ""  # `--track` without a URI
_URI = re.compile(r"^[a-z][a-z0-9+.-]*:")


def local_store() -> str:
    return f"sqlite:///{cache_dir() / 'tracking' / 'mlflow.db'}"


def _checked(uri: str, given: str) -> str:
    if not _URI.match(uri):
        raise ConfigError(f"{given}: {uri!r} is not a tracking URI",
                          hint="give the MLflow server's URL (http://HOST:PORT), a database (sqlite:///PATH, "
                               "postgresql://...), or no value for the local store (`--track` takes the word after "
                               "it: put it last, or write --track=URI)")
    return uri


def _setting() -> str | None:
    track = project_settings.load().track
    if track is True:
        return local_store()
    return _checked(track, f"{project_settings.find()}: track") if track else None


def _named(flag: str | None) -> str | None:
    """The store a flag, the environment or the project names; None when none does."""
    if flag:
        return _checked(flag, "--track")
    if os.environ.get(ENV):
        return _checked(os.environ[ENV], f"${ENV}")
    setting = _setting()
    return setting or (local_store() if flag == LOCAL else None)


def for_run(flag: str | None) -> str | None:
    """The store a build logs to, or None: a build is tracked only when asked (flag, environment or project)."""
    return _named(flag)


def for_reading(flag: str | None) -> str:
    """The store `compare --baseline`, `history` and `track replay` read or write: the local one by default."""
    return _named(flag) or local_store()
