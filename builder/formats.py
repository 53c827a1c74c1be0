"""Model formats: the suffix a model file has, the files that are part of it, and the runtime that loads it.

The core's own formats are the sources it reads and converts through (Keras, SavedModel, PyTorch...); each
backend registers its formats with `register`, as any plugin does. Generic code asks this module, never a suffix
of its own: an IR's weights file beside its `.xml` is known here and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import ConfigError


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # of the model file; "" for a folder (SavedModel)
    runtime: str | None = None  # the runtime that loads it; None for a source-only format
    companions: dict[str, str] = field(default_factory=dict)  # role -> suffix of a file that is part of the model
    also_reads: tuple[str, ...] = ()  # other suffixes a source file in this format may have

    @property
    def is_folder(self) -> bool:
        return not self.suffix

    def companion_files(self, path: str) -> dict[str, str]:
        """The files that are part of the model at `path`, by role."""
        stem = path[: -len(self.suffix)] if self.suffix and path.endswith(self.suffix) else os.path.splitext(path)[0]
        return {role: stem + suffix for role, suffix in self.companions.items()}

    def companion_paths(self, name: str, path: str) -> dict[str, str]:
        """The companions of the model declared as `name`, as `<name>_<role>` -> path."""
        return {f"{name}_{role}": part for role, part in self.companion_files(path).items()}

    def files(self, path: Path) -> list[Path]:
        """The model file and its companions."""
        return [path] + [Path(p) for p in self.companion_files(str(path)).values()]


_REGISTRY: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    known = _REGISTRY.get(fmt.name)
    if known is not None and known != fmt:
        raise RuntimeError(f"format {fmt.name!r} registered twice, differently")
    _REGISTRY[fmt.name] = fmt
    return fmt


for _builtin in (
    Format("keras", ".keras", also_reads=(".h5",)),
    Format("saved_model", ""),
    Format("frozen_graph", ".pb"),
    Format("pytorch_state_dict", ".pth"),
    Format("torchscript", ".pt"),
    Format("exported_program", ".pt2"),
):
    register(_builtin)


def all_formats() -> dict[str, Format]:
    from builder import plugins

    plugins.load()
    return dict(_REGISTRY)


def get(name: str) -> Format:
    formats = all_formats()
    if name not in formats:
        raise ConfigError(f"unknown model format {name!r}", hint=f"known formats: {', '.join(sorted(formats))}")
    return formats[name]


def of_file(name: str) -> Format | None:
    """The format a source file's name says (the longest matching suffix wins: a compiled model's `_<x>.<y>` over `.<y>`)."""
    lowered = name.lower()
    matches = [(len(s), f) for f in all_formats().values() for s in (f.suffix, *f.also_reads) if s and lowered.endswith(s)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def suffix_of(name: str) -> str:
    """A format's file suffix, or "" for a folder or a format nobody registered."""
    fmt = all_formats().get(name)
    return fmt.suffix if fmt else ""
