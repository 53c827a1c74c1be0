"""ONNX Runtime: sessions over ONNX models (CPU and other execution providers).

Its converters and steps still live in builder/convert/onnx*.py and builder/steps/onnx.py (issue 18)."""

from __future__ import annotations

from builder import formats
from builder.backends.onnxruntime import runtime  # noqa: F401  (it registers itself)

formats.register(formats.Format("onnx", ".onnx", runtime="onnxruntime"))
