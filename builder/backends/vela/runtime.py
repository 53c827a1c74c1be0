"""An Ethos-U NPU: a Vela-compiled model runs only there (its graph is one `ethos-u` custom op).

Here, the benchmark reports Vela's performance estimate (written by compile.vela) in the
benchmark schema, with `estimate: true`; validation runs the int8 TFLite that Vela
compiled, whose integer arithmetic the NPU reproduces.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from builder.errors import StepError
from builder.runtimes import BaseSession

log = logging.getLogger(__name__)


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
            "runtime": "vela-estimate", "estimate": True, "emulated": False, "threads": None, "runs": None,
            "mean_ms": est["inference_ms"], "p50_ms": est["inference_ms"], "min_ms": est["inference_ms"],
            "throughput_fps": est["inferences_per_second"],
            "accelerator": est["accelerator"], "system_config": est["system_config"],
            "memory_mode": est["memory_mode"], "cycles_total": est["cycles_total"],
            "npu_operators": est["npu_operators"], "cpu_operators": est["cpu_operators"],
            "size_bytes": files["model"].stat().st_size,
        }

    @classmethod
    def stand_in(cls, files: Mapping[str, Path]) -> Path:
        return _declared(files, "compiled_from")
