"""Backends, found through the `edge_builder.plugins` entry point group: the project's own
(`builder/backends/<vendor>/`) and other packages' alike.

An entry point names a package (or a package of backends whose `backends()` imports and returns
them: the project's `builder.backends`, so a new folder there needs no other file). Importing it
registers what it adds: `Step` subclasses (step kinds), `BaseSession` subclasses (runtimes) and
`formats.register(...)` (formats), all that a stage needs. What it adds to the host alone (report sections,
container runtimes, readers of mirror lists) it keeps in its `host` module, which only the host loads
(`load(host=True)`): a stage never imports builder.host. Beside its `__init__.py` it may keep data
folders: `targets/` (target YAML), `locks/` (the `.in` and `.txt` package locks its images install) and
`dockerfiles/` (Dockerfile templates and partials). Other packages' files go into the toolchain and device
images with the project's own code (`images.code_files`), so a plugin works under either runner.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from builder.errors import ConfigError

GROUP = "edge_builder.plugins"
OWN_DISTRIBUTION = "edge-builder"  # its backends ship with builder/ itself


@dataclass(frozen=True)
class Plugin:
    name: str
    module: ModuleType
    distribution: importlib.metadata.Distribution | None

    def folder(self, name: str) -> Path | None:
        """The data folder `name` (targets, locks, dockerfiles) beside the package's __init__.py, if any."""
        package = getattr(self.module, "__file__", None)
        found = Path(package).parent / name if package else None
        return found if found and found.is_dir() else None


def load(*, host: bool = False) -> tuple[Plugin, ...]:
    """Every installed plugin, imported once; `host`: with its `host` module too (the host's side only)."""
    found = _imported()
    if host:
        _import_host_modules()
    return found


@functools.cache
def _imported() -> tuple[Plugin, ...]:
    """Import every installed plugin once; a plugin that fails to import is a clear error, not a silent gap."""
    found = []
    for entry in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            module = entry.load()
            held = getattr(module, "backends", None)  # a package of several backends imports and names them
            modules = held() if held else [module]
        except Exception as exc:
            dist = entry.dist.name if entry.dist else entry.value
            raise ConfigError(f"plugin {entry.name} ({entry.value}) failed to load: {type(exc).__name__}: {exc}",
                              hint=f"fix or uninstall the package {dist}") from None
        found += [Plugin(m.__name__.rpartition(".")[2] if held else entry.name, m, entry.dist) for m in modules]
    return tuple(found)


@functools.cache
def _import_host_modules() -> None:
    for plugin in _imported():
        name = f"{plugin.module.__name__}.host"
        try:
            if hasattr(plugin.module, "__path__") and importlib.util.find_spec(name):
                importlib.import_module(name)
        except Exception as exc:
            dist = plugin.distribution.name if plugin.distribution else plugin.name
            raise ConfigError(f"plugin {plugin.name} ({name}) failed to load: {type(exc).__name__}: {exc}",
                              hint=f"fix or uninstall the package {dist}") from None


def code_files() -> dict[str, bytes]:
    """Each plugin distribution's files and metadata, by path relative to its install folder: on the images'
    PYTHONPATH they import and register as they do here. The project's own distribution gives only its
    metadata: its backends' code goes into images with builder/."""
    files = {}
    for dist in {p.distribution.name: p.distribution for p in load() if p.distribution is not None}.values():
        files |= _metadata(dist)
        if dist.name == OWN_DISTRIBUTION:
            continue
        for rel in dist.files or ():
            path = Path(dist.locate_file(rel))
            if rel.suffix in (".py", ".yaml", ".txt") and not rel.parts[0].endswith((".dist-info", ".egg-info")):
                if "__pycache__" not in rel.parts and ".." not in rel.parts and path.is_file():
                    files[rel.as_posix()] = path.read_bytes()
    return dict(sorted(files.items()))


def _metadata(dist: importlib.metadata.Distribution) -> dict[str, bytes]:
    """A distribution's name, version and entry points as a minimal .dist-info folder: what importlib.metadata
    needs to find its plugins (an editable install's own metadata may be an .egg-info beside the sources)."""
    folder = f"{dist.name.replace('-', '_')}-{dist.version}.dist-info"
    return {f"{folder}/METADATA": f"Metadata-Version: 2.1\nName: {dist.name}\nVersion: {dist.version}\n".encode(),
            f"{folder}/entry_points.txt": (dist.read_text("entry_points.txt") or "").encode()}
