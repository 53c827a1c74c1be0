"""Intel OpenVINO: IR conversion, NNCF quantization and its accuracy-aware search, the OpenVINO runtime with
its asynchronous throughput, and benchmark_app beside our timing; the openvino target and its lock."""

from __future__ import annotations

from builder import formats
from builder.backends.openvino import (  # noqa: F401  (they register themselves)
    causes,
    layer_diff,
    options,
    profiler,
    runtime,
    search,
    source,
    steps,
)
from builder.stage.convert import source_run

PACKAGES = ("openvino", "nncf")

formats.register(formats.Format("openvino", ".xml", runtime="openvino", companions={"weights": ".bin"}))
source_run.runner("openvino")(source_run.in_its_runtime)  # its sources run in its runtime, as its artifacts do
