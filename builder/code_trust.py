"""Code a recipe could make us run, and the user's opt-in to it (`--trust-remote-code`).

A recipe comes from anywhere. By default it runs no code of its author's: a model factory
(`source.torch.factory`) is imported only from an installed package, never from the current folder
(a stage in a container runs in the run's work dir, where a download or a data file could have put a
`.py`; a local stage runs in the user's folder, where a cloned recipe may bring one); and a source whose
format is a program (TorchScript, an ExportedProgram, a SavedModel's signatures) is run only when it
is the user's own file, or when the user opts in for a download. Keras files are always loaded in
Keras's safe mode (no Lambda layers' code).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from builder.errors import ConfigError

FLAG = "--trust-remote-code"

RUNS_CODE = {  # format -> how loading or running it runs its author's code
    "torchscript": "a TorchScript file is a program, run when it is loaded and traced",
    "exported_program": "an ExportedProgram's graph code runs when it is loaded and traced",
    "saved_model": "a SavedModel's signatures are TensorFlow graphs, run with every op they hold (file reads "
                   "and writes too)",
}


def remote(source) -> bool:
    """Whether a recipe's source (config.recipe.Source) comes from a download or a package, not the user's disk."""
    return source.download is not None or source.pip is not None


def code_problem(source, trusted: bool) -> str | None:
    """Why running `source` needs the user's opt-in, or None."""
    why = RUNS_CODE.get(source.resolved_format)
    if why and remote(source) and not trusted:
        return f"{source.name}: {why}, and it comes from a download"
    return None


@contextlib.contextmanager
def _installed_only() -> Iterator[None]:
    """sys.path without the current folder that Python put first (for `-m` and `-c`): a stage runs in the run's
    work dir in a container, where a recipe's downloads and data files land, and in the user's folder locally.
    The same folder further down the path was put there by the user (an editable install): it stays."""
    saved = sys.path[:]
    if saved and Path(saved[0] or ".").resolve() == Path.cwd().resolve():
        del sys.path[0]
    try:
        yield
    finally:
        sys.path[:] = saved


def factory_in_current_folder(factory: str) -> bool:
    """Whether the factory's top-level module is in the current folder and in no installed package: a stage
    process would import it from there (checked before a run, on the host; nothing is imported)."""
    top = factory.partition(":")[0].split(".")[0]
    if importlib.machinery.PathFinder.find_spec(top, [os.getcwd()]) is None:
        return False
    with _installed_only():
        return importlib.util.find_spec(top) is None


def import_factory(factory: str, *, trusted: bool):
    """The callable `module.path:callable`, imported from installed packages only unless `trusted`."""
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model factory {factory!r} is not of the form 'module.path:callable'",
                          hint="e.g. builder.stage.models.efficientnet_lite:efficientnet_lite0")
    try:
        with contextlib.nullcontext() if trusted else _installed_only():
            return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        where = "" if trusted else (" (factories come from installed packages only, not from the current folder "
                                     f"{os.getcwd()})")
        raise ConfigError(f"cannot import model factory {factory!r}: {exc}{where}",
                          hint="install its package (pip install ...)" + ("" if trusted else
                               f", or pass {FLAG} if you trust the code the recipe names")) from exc
