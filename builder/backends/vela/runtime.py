"""An Ethos-U NPU: a Vela-compiled model runs only there (its graph is one `ethos-u` custom op).

Here, the benchmark reports Vela's performance estimate (written by compile.vela) in the
benchmark schema, with `estimate: true` and Vela's own figures in its `extra.vela` section;
validation runs the int8 TFLite that Vela compiled, whose integer arithmetic the NPU reproduces.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from builder import records
from builder.errors import StepError
from builder.records import ExtraSection, Strict
from builder.stage.runtimes import BaseSession

log = logging.getLogger(__name__)


class VelaEstimate(Strict):
    """Vela's figures beside the estimated timings (`extra.vela` of a benchmark)."""

    accelerator: str | None = Field(None, description="the Ethos-U configuration estimated, e.g. ethos-u55-256")
    system_config: str | None = None
    memory_mode: str | None = None
    cycles_total: int | None = None
    macs: int | None = Field(None, description="multiply-accumulates per inference")
    npu_operators: int | None = None
    cpu_operators: int | None = Field(None, description="operators left to the CPU: the estimate leaves them out")


ESTIMATED_BY = {"estimated_by": "Vela", "estimated_for": "NPU"}
records.register_extra("benchmark", ExtraSection(  # before it, these were a benchmark's own fields
    "vela", VelaEstimate, moved=("accelerator", "system_config", "memory_mode", "cycles_total", "npu_operators",
                                 "cpu_operators"), implied=ESTIMATED_BY))


def _declared(files: Mapping[str, Path], name: str) -> Path:
    """A file compile.vela made or read ("estimate", "compiled_from"), declared as the measuring step's input."""
    if name not in files:
        raise StepError(f"no Vela {name} for {files['model'].name}: the plan gives this step none",
                        hint="measure the artifact of a compile.vela step")
    return files[name]


class EthosUSession(BaseSession):
    runtime = "ethos-u"
    check_with = ("tflite", "litert")  # its device image runs the fp32 baseline: the NPU is not here

    def __init__(self, path: Path, *, threads: int = 2):
        raise StepError(f"{path.name} runs only on an Ethos-U NPU", hint="its benchmark is Vela's estimate, and "
                        "its validation runs the int8 TFLite that Vela compiled")

    @classmethod
    def estimate(cls, files: Mapping[str, Path]) -> dict:
        est = json.loads(_declared(files, "estimate").read_text())
        log.info("Vela estimate for %s on %s: %.3f ms, %.1f inferences/s (not measured)",
                 files["model"].name, est["accelerator"], est["inference_ms"], est["inferences_per_second"])
        return {
            "runtime": "vela-estimate", "estimate": True, **ESTIMATED_BY, "emulated": False, "threads": None,
            "runs": None, "mean_ms": est["inference_ms"], "p50_ms": est["inference_ms"], "min_ms": est["inference_ms"],
            "throughput_fps": est["inferences_per_second"], "size_bytes": files["model"].stat().st_size,
            "extra": {"vela": {key: est.get(key) for key in VelaEstimate.model_fields}},
        }

    @classmethod
    def stand_in(cls, files: Mapping[str, Path]) -> Path:
        return _declared(files, "compiled_from")
