"""Extensions from other packages, found through the `edge_builder.plugins` entry point group.

An entry point names a module. Importing it registers what it adds, the way built-in
code does: `Step` subclasses (step kinds), `BaseSession` subclasses (runtimes) and
`formats.register(...)` (formats). A module may also set `TARGETS` to a folder of
target YAML files. The modules' files go into the toolchain and device images with
the project's own code (`images.code_files`), so a plugin works under either runner.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from builder.errors import ConfigError

GROUP = "edge_builder.plugins"


@dataclass(frozen=True)
class Plugin:
    name: str
    module: ModuleType
    distribution: importlib.metadata.Distribution | None

    @property
    def targets_dir(self) -> Path | None:
        folder = getattr(self.module, "TARGETS", None)
        return Path(folder) if folder else None


@functools.cache
def load() -> tuple[Plugin, ...]:
    """Import every installed plugin once; a plugin that fails to import is a clear error, not a silent gap."""
    found = []
    for entry in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            module = entry.load()
        except Exception as exc:
            dist = entry.dist.name if entry.dist else entry.value
            raise ConfigError(f"plugin {entry.name} ({entry.value}) failed to load: {type(exc).__name__}: {exc}",
                              hint=f"fix or uninstall the package {dist}") from None
        found.append(Plugin(entry.name, module, entry.dist))
    return tuple(found)


def code_files() -> dict[str, bytes]:
    """Each plugin distribution's Python files and metadata (its entry points), by path relative to its
    install folder: on the images' PYTHONPATH they import and register as they do here."""
    files = {}
    for plugin in load():
        if plugin.distribution is None:
            continue
        for rel in plugin.distribution.files or ():
            path = Path(plugin.distribution.locate_file(rel))
            if rel.suffix in (".py", ".yaml", ".txt") or rel.name in ("METADATA", "entry_points.txt"):
                if "__pycache__" not in rel.parts and ".." not in rel.parts and path.is_file():
                    files[rel.as_posix()] = path.read_bytes()
    return dict(sorted(files.items()))
