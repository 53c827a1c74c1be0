"""Intel OpenVINO: IR conversion, NNCF quantization and its accuracy-aware search, the OpenVINO runtime with
its asynchronous throughput, and benchmark_app beside our timing; the openvino target and its lock."""

from __future__ import annotations

from builder import formats
from builder.backends.openvino import options, runtime, search, steps  # noqa: F401  (they register themselves)

PACKAGES = ("openvino", "nncf")

formats.register(formats.Format("openvino", ".xml", runtime="openvino", companions={"weights": ".bin"}))
