"""An edge-builder plugin, as a package of its own: ONNX Runtime's ORT format.

It adds each kind of extension edge-builder has: a format (`ort`, `.ort` files), a
runtime that loads it (`ort-format`), a step that makes it (`convert.ort`) and a
target that ships it (`x86-ort`, in the targets/ folder beside this file). Installing the
package is all it takes: the `edge_builder.plugins` entry point names this module, and
importing it registers them.
"""

from __future__ import annotations

from builder import formats
from edge_builder_ort import runtime, step  # noqa: F401  (they register themselves)

formats.register(formats.Format("ort", ".ort", runtime="ort-format"))
