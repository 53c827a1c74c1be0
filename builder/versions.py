"""Versions of the tools a stage ran with, read where the stage runs (host or image)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

TOOLS = (
    "edge-builder", "tensorflow", "tensorflow-cpu", "tf-keras", "keras", "onnx", "onnxruntime", "onnx2tf",
    "onnxslim", "onnxsim", "tf2onnx", "openvino", "nncf", "torch", "ai-edge-litert", "tflite-runtime",
    "ethos-u-vela", "tensorrt", "numpy", "protobuf",
)


def collect() -> dict:
    found = {}
    for name in TOOLS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "machine": platform.machine(), "packages": found}
