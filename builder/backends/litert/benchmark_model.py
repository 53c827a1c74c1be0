"""TFLite's benchmark_model, run and parsed for comparison with numbers users already know."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from builder.errors import StepError
from builder.stage.timing import NUMBER, TOOL_LOG_TAIL, run_tool


def benchmark_model_binary() -> Path | None:
    """TFLite's benchmark_model: $BENCHMARK_MODEL_BIN, else `benchmark_model` on PATH."""
    found = os.environ.get("BENCHMARK_MODEL_BIN") or shutil.which("benchmark_model")
    return Path(found) if found else None


def benchmark_model_tool(binary: Path, model: Path, *, threads: int, runs: int, warmup: int) -> dict:
    """Run TFLite's benchmark_model on `model` and parse its timings (see parse_benchmark_model)."""
    args = [
        str(binary),
        f"--graph={model}",
        f"--num_threads={threads}",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
    ]
    output = run_tool(args, "benchmark_model", hint="set BENCHMARK_MODEL_BIN to the benchmark_model binary")
    return {"tool": "benchmark_model", "threads": threads, "warmup": warmup, **parse_benchmark_model(output)}


_STATS = re.compile(
    rf"count={NUMBER} first={NUMBER} curr={NUMBER} min={NUMBER} max={NUMBER} avg={NUMBER} std={NUMBER}(?:.*?median={NUMBER})?"
)
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: {NUMBER}, First inference: {NUMBER}, "
    rf"Warmup \(avg\): {NUMBER}, Inference \(avg\): {NUMBER}"
)
_MEMORY = re.compile(
    rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): init={NUMBER} overall={NUMBER}"
)


def parse_benchmark_model(output: str) -> dict:
    """Timings from benchmark_model's log, in ms (it prints microseconds).

    The last `count=... avg=... std=...` line is the measured run (the one
    before it is the warm-up); `median=` is printed by newer builds only, so
    `p50_ms` may be None.
    """
    summary = _SUMMARY.search(output)
    if summary is None:
        raise StepError(
            "benchmark_model printed no 'Inference timings' line",
            log_tail=output.strip().splitlines()[-TOOL_LOG_TAIL:],
        )
    init, first, warm, avg = (float(v) / 1000.0 for v in summary.groups())
    result: dict = {
        "runs": None, "mean_ms": avg, "std_ms": None, "min_ms": None, "max_ms": None, "p50_ms": None,
        "throughput_fps": 1000.0 / avg if avg else None,
        "init_ms": init, "first_ms": first, "warmup_mean_ms": warm,
    }  # fmt: skip
    stats = _STATS.findall(output)
    if stats:
        count, _first, _curr, low, high, _avg, std, median = stats[-1]
        result.update(
            runs=int(float(count)),
            std_ms=float(std) / 1000.0,
            min_ms=float(low) / 1000.0,
            max_ms=float(high) / 1000.0,
            p50_ms=float(median) / 1000.0 if median else None,
        )
    memory = _MEMORY.search(output)
    if memory:
        result["memory_init_mb"], result["memory_overall_mb"] = (float(v) for v in memory.groups())
    return result


OP_PROFILE = "Operator-wise Profiling Info for Regular Benchmark Runs:"
_NODE = re.compile(r"^\[(?P<name>.*)\]:(?P<index>\d+)$")  # a TFLite node: [its output tensors]:its index
_KERNEL_TYPES = {"F32": "fp32", "F16": "fp16", "QC8": "int8", "QS8": "int8", "QU8": "int8", "QD8": "int8",
                 "S8": "int8", "U8": "int8", "X8": "int8", "QS16": "int16"}


def _cells(row: str) -> list[str]:
    """A row of benchmark_model's tables: tab-separated in older builds, aligned with spaces in newer ones."""
    parts = row.split("\t") if "\t" in row else re.split(r"\s{2,}", row)
    return [part.strip() for part in parts if part.strip()]


def _kernel_precision(node_type: str) -> str | None:
    """The precision in an XNNPACK operator's name: Convolution (NHWC, QC8) IGEMM -> int8."""
    found = re.search(r"\(([^)]*)\)", node_type)
    kinds = [_KERNEL_TYPES[t.strip()] for t in found.group(1).split(",") if t.strip() in _KERNEL_TYPES] if found else []
    return kinds[0] if kinds else None


def parse_op_profile(output: str) -> list[dict]:
    """The "Run Order" table of benchmark_model's `--enable_op_profiling=true` report: one entry per node (a TFLite
    op, `node_id` its index) or per operator inside a delegate (XNNPACK's, named `Delegate/...`), with its time per
    inference (`avg ms` per call times `times called`)."""
    start = output.find(OP_PROFILE)
    if start < 0:
        raise StepError("benchmark_model printed no operator-wise profile",
                        log_tail=output.strip().splitlines()[-TOOL_LOG_TAIL:])
    lines = output[start:].splitlines()
    header = next((i for i, line in enumerate(lines) if "[node type]" in line), None)
    if header is None:
        raise StepError("benchmark_model's operator-wise profile has no Run Order table")
    columns = re.findall(r"\[([^\]]+)\]", lines[header])
    found = []
    for line in lines[header + 1:]:
        cells = _cells(line)
        if len(cells) != len(columns):
            break  # the end of the table
        row = dict(zip(columns, cells, strict=True))
        raw, node = row["Name"], _NODE.match(row["Name"])
        found.append({"name": node["name"] if node else raw, "node_id": node["index"] if node else raw,
                      "op_type": row["node type"], "ms": float(row["avg ms"]) * int(row["times called"]),
                      "precision": None if node else _kernel_precision(row["node type"]),
                      "unit": "CPU kernel" if node else raw.split("/")[0]})
    if not found:
        raise StepError("benchmark_model's operator-wise profile is empty")
    return found


def op_profile_tool(binary: Path, model: Path, *, threads: int, runs: int, warmup: int) -> list[dict]:
    """Run benchmark_model with its op profiler on `model` (see parse_op_profile)."""
    args = [str(binary), f"--graph={model}", f"--num_threads={threads}", f"--num_runs={runs}",
            f"--warmup_runs={warmup}", "--enable_op_profiling=true"]
    return parse_op_profile(run_tool(args, "benchmark_model", hint="set BENCHMARK_MODEL_BIN to the benchmark_model "
                                                                    "binary"))
