"""Arm Ethos-U NPUs: full-int8 TFLite compiled by Vela, measured by Vela's own performance estimate
(no NPU here); the arm-npu target lives here."""

from __future__ import annotations

from builder import formats
from builder.backends.vela import profiler, runtime, steps  # noqa: F401  (they register themselves)

# an Ethos-U command stream: a .tflite that only the NPU runs (its graph is one ethos-u op)
PACKAGES = ("ethos-u-vela",)

formats.register(formats.Format("vela", "_vela.tflite", runtime="ethos-u"))
