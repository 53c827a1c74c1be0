"""ONNX Runtime: sessions over ONNX models (CPU and other execution providers), its dynamic and static QDQ
quantization (quantize.ort) and the accuracy-aware search over it (search.ort).

The ONNX exporters and onnx.simplify still live in builder/stage/convert/onnx.py and builder/stage/steps/onnx.py (issue 18)."""

from __future__ import annotations

from builder import formats
from builder.backends.onnxruntime import layer_diff, options, profiler, runtime, search, steps  # noqa: F401  (they register themselves)
from builder.stage.convert import source_run

PACKAGES = ("onnxruntime",)

formats.register(formats.Format("onnx", ".onnx", runtime="onnxruntime"))
source_run.runner("onnx")(source_run.in_its_runtime)  # its sources run in its runtime, as its artifacts do
