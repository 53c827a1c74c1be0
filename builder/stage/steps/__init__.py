"""Step kinds. Every module in this package is imported, so each step class registers itself."""

from __future__ import annotations

import importlib
import pkgutil

from builder.stage.steps import registry  # noqa: F401  (re-exported)

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")
