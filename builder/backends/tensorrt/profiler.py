"""TensorRT's per-layer profile: trtexec's own layer profile (`--dumpProfile --separateProfileRun
--exportProfile=FILE`), timed in a run of its own after its timed one. Thin: it needs the GPU, which the tests
have not; its parser is tested on a file of the shape trtexec's Profiler::exportJSONProfile writes."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

from builder.backends.tensorrt.trtexec import TIMEOUT_S, not_found, trtexec_binary
from builder.errors import StepError
from builder.stage import profiling
from builder.stage.timing import run_tool


def parse_export_profile(text: str, unit: str = "GPU") -> tuple[int, list[profiling.Layer]]:
    """trtexec's exported profile: `[{"count": N}, {"name", "timeMs", "averageMs", "medianMs"?, "percentage"}...]`
    -> (the profiled iterations, each layer's average time). A layer's name is TensorRT's, fused layers joined with
    " + "; the profile names no op type (a layer may be several ops of the ONNX graph)."""
    try:
        entries = json.loads(text)
        count = int(entries[0]["count"])
        layers = [profiling.Layer(name=e["name"], node_id=e["name"], op_type="TensorRT layer",
                                  ms=float(e.get("medianMs", e["averageMs"])), unit=unit) for e in entries[1:]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise StepError(f"trtexec's exported profile is not the shape it should be: {exc}",
                        hint="run trtexec --exportProfile by hand and look at the file") from None
    return count, layers


def profile(model: Path, files: Mapping[str, Path], spec: profiling.ProfileSpec,
            log: logging.Logger) -> profiling.Measured:
    binary = trtexec_binary() or not_found()
    dla_core = spec.runtime_options.get("dla_core")
    with tempfile.TemporaryDirectory(prefix="trt-profile-") as tmp:
        exported = Path(tmp) / "profile.json"
        args = [str(binary), f"--loadEngine={model}", f"--iterations={spec.runs}", "--duration=0",
                "--dumpProfile", "--separateProfileRun", f"--exportProfile={exported}"]
        if dla_core is not None:
            args.append(f"--useDLACore={dla_core}")
        run_tool(args, "trtexec", hint="run the same command by hand to see the full log", timeout=TIMEOUT_S)
        runs, layers = parse_export_profile(exported.read_text(), unit="DLA" if dla_core is not None else "GPU")
    return profiling.Measured(profiler="trtexec --dumpProfile (a separate profile run)", layers=layers, runs=runs,
                              caveat="trtexec times each layer with its own profiler in a run of its own, which "
                                     "keeps layers from overlapping on the GPU")


profiling.register("tensorrt", profile)
