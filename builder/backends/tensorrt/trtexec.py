"""TensorRT's trtexec beside our own numbers, run through builder.stage.timing.run_tool as every vendor tool is.

trtexec times an engine with its own CUDA streams and events, and its performance
summary is what NVIDIA's documentation and forums quote, so a report shows both.
Result fields follow builder.stage.timing (ms, `p50_ms`, `mean_ms`, `throughput_fps`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from builder.errors import StepError
from builder.stage.timing import TOOL_LOG_TAIL, run_tool

JETPACK_TRTEXEC = Path("/usr/src/tensorrt/bin/trtexec")  # where JetPack installs it (not on PATH)
PERCENTILES = (90, 95, 99)  # trtexec's default --percentile since TensorRT 8.6
TIMEOUT_S = 300.0  # loading an engine and timing it takes seconds; a hung GPU or DLA must not stall the run

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_SUMMARY = "=== Performance summary ==="
# "[08/09/2024-23:12:04] [I] GPU Compute Time: min = 1.12744 ms, max = ..., percentile(90%) = 1.1499 ms, ..."
_METRIC_LINE = re.compile(r"(?m)^(?:.*?\[I\] )?(Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency): (.*)$")
_STAT = re.compile(rf"(min|max|mean|median|percentile\({_NUM}%\)) = {_NUM} ms")
_METRIC_PREFIX = {"Latency": "", "Enqueue Time": "enqueue_", "H2D Latency": "h2d_",
                  "GPU Compute Time": "gpu_compute_", "D2H Latency": "d2h_"}
_SCALARS = {
    "throughput_fps": re.compile(rf"Throughput: {_NUM} qps"),
    "duration_ms": re.compile(rf"Total Host Walltime: {_NUM} s"),
    "gpu_compute_total_ms": re.compile(rf"Total GPU Compute Time: {_NUM} s"),
    "runs": re.compile(rf"Timing trace has (\d+) queries over {_NUM} s"),
    "warmup_runs": re.compile(rf"Warmup completed (\d+) queries over {_NUM} ms"),
}
_VERSION = re.compile(r"TensorRT version: (\S+)")


def trtexec_binary() -> Path | None:
    """$TRTEXEC_BIN, else `trtexec` on PATH, else JetPack's /usr/src/tensorrt/bin/trtexec."""
    found = os.environ.get("TRTEXEC_BIN") or shutil.which("trtexec")
    if found:
        return Path(found)
    return JETPACK_TRTEXEC if os.access(JETPACK_TRTEXEC, os.X_OK) else None


def not_found() -> dict:
    """What a benchmark records when there is no trtexec: why its figures are missing."""
    raise StepError("trtexec not found", hint=f"set TRTEXEC_BIN or put trtexec on PATH (JetPack: {JETPACK_TRTEXEC}; "
                    "the jetson device image installs libnvinfer-bin when its base image lacks it)")


def shapes_arg(session) -> str | None:
    """trtexec's --shapes for a session of an engine with dynamic inputs ("input:1x3x224x224,mask:1x16")."""
    if not getattr(session, "dynamic", False):
        return None
    return ",".join(f"{i.name}:{'x'.join(map(str, i.shape))}" for i in session.inputs) or None


def trtexec_tool(
    model: Path,
    *,
    binary: Path | None = None,
    iterations: int = 10,
    seconds: int = 3,
    warmup_ms: int = 200,
    dla_core: int | None = None,
    shapes: str | None = None,
    no_data_transfers: bool = False,
    timeout_s: float = TIMEOUT_S,
) -> dict:
    """Run `trtexec --loadEngine=model` and parse its performance summary (see parse_trtexec).

    trtexec runs at least `iterations` queries and at least `seconds`, after `warmup_ms`,
    and is stopped after `timeout_s`. `dla_core` is needed for an engine built for a DLA core;
    `shapes` is trtexec's --shapes value ("input:1x3x224x224") for an engine with dynamic input
    shapes; `no_data_transfers` leaves the host<->device copies out of its Latency.
    """
    binary = binary or trtexec_binary()
    if binary is None:
        not_found()
    args = [str(binary), f"--loadEngine={model}", f"--iterations={iterations}", f"--duration={seconds}",
            f"--warmUp={warmup_ms}", f"--percentile={','.join(map(str, PERCENTILES))}"]
    if dla_core is not None:
        args.append(f"--useDLACore={dla_core}")
    if shapes:
        args.append(f"--shapes={shapes}")
    if no_data_transfers:
        args.append("--noDataTransfers")
    output = run_tool(args, "trtexec", hint="run the same command by hand to see the full log", timeout=timeout_s)
    return {"tool": "trtexec", **parse_trtexec(output)}


def _percentile_key(prefix: str, stat: str, percent: str) -> str:
    if stat == "median":
        return f"{prefix}p50_ms"
    if percent:
        return f"{prefix}p{float(percent):g}_ms"
    return f"{prefix}{stat}_ms"


def parse_trtexec(output: str) -> dict:
    """The `=== Performance summary ===` trtexec prints (TensorRT 8.6 and 10), times in ms.

    `min_ms` ... `p99_ms` are trtexec's "Latency" (H2D + GPU compute + D2H of one query);
    `gpu_compute_*`, `enqueue_*`, `h2d_*`, `d2h_*` are its other rows. A query is one
    engine execution, so `throughput_fps` (trtexec's qps) counts batches for batch > 1.
    """
    start = output.rfind(_SUMMARY)
    if start < 0:
        raise StepError("trtexec printed no performance summary", log_tail=output.strip().splitlines()[-TOOL_LOG_TAIL:])
    summary = output[start:]
    result: dict = {}
    for metric, stats in _METRIC_LINE.findall(summary):
        for stat, percent, value in _STAT.findall(stats):
            result[_percentile_key(_METRIC_PREFIX[metric], stat, percent)] = float(value)
    for key, pattern in _SCALARS.items():
        found = pattern.search(output if key in ("runs", "warmup_runs") else summary)
        result[key] = None if found is None else float(found.group(1))
    if result.get("mean_ms") is None or result["throughput_fps"] is None:
        raise StepError("trtexec's performance summary has no Latency/Throughput lines",
                        log_tail=summary.strip().splitlines()[:TOOL_LOG_TAIL])
    for key in ("duration_ms", "gpu_compute_total_ms"):  # printed in seconds
        result[key] = None if result[key] is None else result[key] * 1000.0
    for key in ("runs", "warmup_runs"):
        result[key] = None if result[key] is None else int(result[key])
    version = _VERSION.search(output)
    result["tensorrt"] = version.group(1) if version else None
    return result
