"""NVIDIA TensorRT: engines built on the Jetson from ONNX, run through TensorRT and cuda-python,
timed beside trtexec. The jetson target and its device image's lock live here."""

from __future__ import annotations

from builder import formats
from builder.backends.tensorrt import (  # noqa: F401  (they register themselves)
    causes,
    facts,
    profiler,
    runtime,
    steps,
)

PACKAGES = ("tensorrt", "cuda-python", "cuda-bindings")

formats.register(formats.Format("tensorrt", ".engine", runtime="tensorrt"))
