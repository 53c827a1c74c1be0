"""Google's LiteRT (TFLite): TFLite conversion at every precision (TensorFlow's converter, ai-edge-quantizer for a
.tflite source, onnx2tf from ONNX), the accuracy-aware search with TensorFlow's quantization debugger, the
interpreter with XNNPACK, and benchmark_model beside our timing."""

from __future__ import annotations

from builder import formats
from builder.backends.litert import (  # noqa: F401  (they register themselves)
    causes,
    layer_diff,
    onnx2tf_options,
    profiler,
    runtime,
    search,
    steps,
    tflite_source,
    tiny_model,
)
from builder.stage.convert import source_run

PACKAGES = ("ai-edge-litert", "tflite-runtime", "ai-edge-quantizer", "onnx2tf")

formats.register(formats.Format("tflite", ".tflite", runtime="litert"))
source_run.runner("tflite")(source_run.in_its_runtime)  # its sources run in its runtime, as its artifacts do
