"""A project's own defaults for `builder`: `edge-builder.yaml`, in the current folder or the nearest one above it.

    track: true                       # log every run to the local tracking store (under the user's cache)
    # track: http://mlflow.corp:5000  # or to the team's MLflow server

A command-line flag or an environment variable given for the same thing wins over the file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from builder.config.common import Strict
from builder.config.loader import load_model

FILE = "edge-builder.yaml"


class ProjectSettings(Strict):
    track: bool | str = Field(False, description="true: track every run in the local store; a tracking URI: in that "
                                                 "store (see `builder run --track`)")


def find(start: Path | None = None) -> Path | None:
    """The settings file that applies in `start` (default: the current folder): its own, or its nearest parent's."""
    here = (start or Path.cwd()).resolve()
    return next((folder / FILE for folder in [here, *here.parents] if (folder / FILE).is_file()), None)


def load(start: Path | None = None) -> ProjectSettings:
    """The project's settings, or the defaults where no file applies; a bad file is a ConfigError (file, line, field)."""
    path = find(start)
    return load_model(path, ProjectSettings) if path else ProjectSettings()
