"""Google's LiteRT (TFLite): the interpreter with XNNPACK, and benchmark_model beside our timing.

Its converters and steps still live in builder/convert/tflite*.py and builder/steps/tflite*.py (issue 18)."""

from __future__ import annotations

from builder import formats
from builder.backends.litert import runtime  # noqa: F401  (it registers itself)

formats.register(formats.Format("tflite", ".tflite", runtime="litert"))
