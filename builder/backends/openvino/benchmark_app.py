"""OpenVINO's benchmark_app, run and parsed for comparison with numbers users already know."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from builder.errors import StepError
from builder.stage.timing import NUMBER, TOOL_LOG_TAIL, run_tool

TIMER = ("its requests' own latency (InferRequest.latency, inside the runtime), without the ~0.07 ms a call "
         "from Python adds")  # what its percentiles time (sync mode, -hint latency); our timer times the call


def benchmark_app_binary() -> str | None:
    """OpenVINO's benchmark_app: on PATH, or beside this Python (an unactivated venv)."""
    return shutil.which("benchmark_app") or shutil.which("benchmark_app", path=str(Path(sys.executable).parent))


def benchmark_app_tool(
    model: Path,
    *,
    seconds: int,
    hint: str = "latency",
    device: str = "CPU",
    precision: str | None = "f32",
    shape: str | None = None,
    threads: int | None = None,
) -> dict:
    """Run OpenVINO's benchmark_app and parse its report (see parse_benchmark_app).

    The binary is looked up on PATH, then beside this Python (an unactivated venv).
    `shape` is benchmark_app's -shape value, e.g. "[1,3,48,192]", for dynamic models;
    `threads` sets INFERENCE_NUM_THREADS, to compare with a session of that many threads.
    """
    binary = benchmark_app_binary()
    if binary is None:
        raise StepError("benchmark_app is not on PATH", hint="pip install openvino (it ships benchmark_app)")
    args = [binary, "-m", str(model), "-t", str(seconds), "-hint", hint, "-d", device]
    if precision:
        args += ["-infer_precision", precision]
    if shape:
        args += ["-shape", shape]
    with tempfile.TemporaryDirectory(prefix="benchmark-app-") as tmp:
        if threads:  # its -nthreads needs -hint none; a config file keeps the hint, as `load` does
            config = Path(tmp) / "config.json"
            config.write_text(json.dumps({device: {"INFERENCE_NUM_THREADS": str(threads)}}))
            args += ["-load_config", str(config)]
        output = run_tool(args, "benchmark_app", hint="run the same command by hand to see the full log")
    return {"tool": "benchmark_app", "hint": hint, "device": device, "timer": TIMER, **parse_benchmark_app(output)}


_TIME = rf"{NUMBER} (ms|us)"  # benchmark_app switches to us for sub-0.1 ms latencies
_APP_FIELDS = {
    "runs": re.compile(rf"Count:\s+{NUMBER} iterations"),
    "duration_ms": re.compile(rf"Duration:\s+{_TIME}"),
    "p50_ms": re.compile(rf"Median:\s+{_TIME}"),
    "mean_ms": re.compile(rf"Average:\s+{_TIME}"),
    "min_ms": re.compile(rf"Min:\s+{_TIME}"),
    "max_ms": re.compile(rf"Max:\s+{_TIME}"),
    "throughput_fps": re.compile(rf"Throughput:\s+{NUMBER} FPS"),
    "first_ms": re.compile(rf"First inference took {_TIME}"),
    "compile_ms": re.compile(rf"Compile model took {_TIME}"),
    "threads": re.compile(r"INFERENCE_NUM_THREADS:\s+(\d+)"),
}


def _value(match: re.Match | None) -> float | None:
    if match is None:
        return None
    value = float(match.group(1))
    unit = match.group(2) if match.re.groups > 1 else None
    return value / 1000.0 if unit == "us" else value


def parse_benchmark_app(output: str) -> dict:
    """The statistics report benchmark_app prints at its last step (times in ms), and the
    INFERENCE_NUM_THREADS its compiled model used."""
    found = {key: pattern.search(output) for key, pattern in _APP_FIELDS.items()}
    if found["mean_ms"] is None or found["throughput_fps"] is None:
        raise StepError(
            "benchmark_app printed no latency/throughput report",
            log_tail=output.strip().splitlines()[-TOOL_LOG_TAIL:],
        )
    result = {key: _value(m) for key, m in found.items()}
    for key in ("runs", "threads"):
        result[key] = int(result[key]) if result[key] is not None else None
    return result
