"""The backends: one folder per vendor, loaded through the `edge_builder.plugins` entry point as any other
package's would be (pyproject.toml names this package; builder.plugins calls `backends()`).

A backend folder holds its runtime (`BaseSession`), its steps, its formats, the wrappers of its
vendor's tools, and beside them its data: `targets/` (the targets that ship its format),
`locks/` (the package locks of its images) and `dockerfiles/` (templates and partials).
Its `__init__.py` may name its `PACKAGES`: the distributions whose versions every manifest records.
Adding a folder here is all a new backend takes.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def backends() -> list[ModuleType]:
    """Every backend folder of this package, imported (importing one registers what it adds)."""
    return [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__) if m.ispkg]
