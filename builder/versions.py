"""Versions of the tools a stage ran with, read where the stage runs (host or image): the core's, and the
packages each backend declares (`PACKAGES` in its __init__.py)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from builder import plugins

TOOLS = ("edge-builder", "tensorflow", "tensorflow-cpu", "tf-keras", "keras", "onnx", "onnxslim", "onnxsim", "torch",
         "numpy", "protobuf")


def collect() -> dict:
    found = {}
    for name in dict.fromkeys([*TOOLS, *(n for p in plugins.load() for n in getattr(p.module, "PACKAGES", ()))]):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "machine": platform.machine(), "packages": found}
