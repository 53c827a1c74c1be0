"""Latency, throughput and memory of a runtime session, plus the vendors' own tools.

`measure` times the inference `Session.prepared` returns (native dtypes, inputs
bound once, outputs left in the runtime's buffers) in this process.
`benchmark_model_tool` (TFLite) and `benchmark_app_tool` (OpenVINO) run the
vendors' binaries and parse what they print, for comparison with numbers users
already know.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import psutil

from builder.errors import ConfigError, StepError
from builder.runtimes import Session, load, random_inputs

RSS_SAMPLE_SECONDS = 0.005
TOOL_LOG_TAIL = 15


class PeakRSS:
    """Peak resident memory of this process while the `with` block runs, in MB.

    A background thread samples psutil's RSS every 5 ms (and once at each end);
    a spike shorter than that can be missed, which `process_peak_mb()` covers.
    """

    def __init__(self, interval: float = RSS_SAMPLE_SECONDS):
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self.peak_bytes = 0

    def sample(self) -> None:
        """Take one sample now (also after the block has ended)."""
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @staticmethod
    def process_peak_mb() -> float:
        """The kernel's lifetime peak RSS of this process (ru_maxrss), loading included."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


class OtherLoad:
    """The share of the machine's CPU time (0 to 1) that other processes used while the `with` block ran:
    what was left for the model explains a latency above a vendor tool's."""

    def __enter__(self) -> OtherLoad:
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        (machine0, own0, wall0), (machine1, own1, wall1) = self._start, self._sample()
        spare = (wall1 - wall0) * (psutil.cpu_count() or 1)
        self.share = min(1.0, max(0.0, (machine1 - machine0) - (own1 - own0)) / spare) if spare > 0 else 0.0

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        machine, own = psutil.cpu_times(), psutil.Process().cpu_times()
        busy = machine.user + machine.nice + machine.system + getattr(machine, "irq", 0) + getattr(machine, "softirq", 0)
        return busy, own.user + own.system, time.monotonic()


def measure(
    session: Session,
    *,
    warmup: int = 5,
    runs: int = 50,
    min_seconds: float = 0.0,
    inputs: list[np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Time the inference `session.prepared(inputs)` runs: `warmup` uncounted runs,
    then at least `runs` counted runs, continuing until `min_seconds` have passed.
    Binding the inputs, reading the outputs and this loop's bookkeeping are not timed.

    `peak_rss_mb` is the peak resident memory of this whole process (model,
    runtime, Python), sampled every 5 ms while binding and warming up, and once
    after the timed runs: a sampling thread waking during them preempted the
    model's own threads (+3-9% p50 with OpenVINO on 2 cores). `process_peak_rss_mb`
    is the process's lifetime peak, which includes loading and anything the
    process did before. `other_cpu_load` is the share of the machine's CPU time that
    other processes took during the timed runs (see OtherLoad). `progress(done, total)`
    is called after each counted run.
    """
    if runs < 1 or warmup < 0 or min_seconds < 0:
        raise ConfigError(
            f"benchmark needs runs >= 1, warmup >= 0, min_seconds >= 0 (got {runs}, {warmup}, {min_seconds})"
        )
    data = session.example_inputs() if inputs is None else inputs
    times: list[float] = []
    clock = time.perf_counter
    try:
        with PeakRSS() as rss:
            infer = session.prepared(data)
            for _ in range(warmup):
                infer()
        with OtherLoad() as load:
            start = clock()
            while len(times) < runs or clock() - start < min_seconds:
                t0 = clock()
                infer()
                times.append(clock() - t0)
                if progress:
                    progress(len(times), max(runs, len(times)))
    except Exception as exc:  # each runtime raises its own types
        raise StepError(f"{session.runtime} inference failed during the benchmark: {exc}") from exc
    rss.sample()
    ms = np.asarray(times) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "runtime": session.runtime,
        "threads": session.threads,
        "warmup": warmup,
        "runs": len(times),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "throughput_fps": float(1000.0 / ms.mean()),
        "peak_rss_mb": round(rss.peak_mb, 2),
        "process_peak_rss_mb": round(PeakRSS.process_peak_mb(), 2),
        "other_cpu_load": round(load.share, 3),
    }


def measure_load(path: Path, **load_kwargs) -> tuple[Session, float]:
    """Load a model and return the session with its init time in ms."""
    t0 = time.perf_counter()
    session = load(path, **load_kwargs)
    return session, (time.perf_counter() - t0) * 1000.0


def openvino_throughput(
    xml_path: Path,
    *,
    seconds: float = 3.0,
    device: str = "CPU",
    precision: str | None = "f32",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict:
    """Asynchronous throughput: THROUGHPUT hint, an AsyncInferQueue with the compiled
    model's OPTIMAL_NUMBER_OF_INFER_REQUESTS kept busy for `seconds`.

    Precision defaults to f32 like `load`, so the number belongs to the validated model.
    """
    import openvino as ov

    from builder.runtimes.openvino import compile_model

    xml_path = Path(xml_path)
    compiled, inputs, _ = compile_model(
        xml_path, device=device, precision=precision, performance_hint="THROUGHPUT", input_shapes=input_shapes
    )
    requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, requests)
    data = random_inputs(inputs, origin=xml_path.name)
    for _ in range(requests):  # warm-up: every request once, not counted
        queue.start_async(data)
    queue.wait_all()
    infers = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        queue.start_async(data)  # blocks while all requests are busy
        infers += 1
    queue.wait_all()
    elapsed = time.perf_counter() - start
    return {
        "mode": "throughput",
        "device": device,
        "requests": requests,
        "infers": infers,
        "seconds": elapsed,
        "throughput_fps": infers / elapsed,
    }


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
    return {"tool": "benchmark_app", "hint": hint, "device": device, **parse_benchmark_app(output)}


def run_tool(args: list[str], name: str, *, hint: str, timeout: float | None = None) -> str:
    try:
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                              timeout=timeout)
    except OSError as exc:
        raise StepError(f"{name} could not be started ({args[0]}): {exc.strerror}", hint=hint) from exc
    except subprocess.TimeoutExpired as exc:
        output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        raise StepError(f"{name} did not finish in {timeout:.0f} s and was stopped", hint=hint,
                        log_tail=output.strip().splitlines()[-TOOL_LOG_TAIL:]) from exc
    if done.returncode != 0:
        raise StepError(
            f"{name} exited with code {done.returncode}",
            hint=hint,
            log_tail=done.stdout.strip().splitlines()[-TOOL_LOG_TAIL:],
        )
    return done.stdout


_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_STATS = re.compile(
    rf"count={_NUM} first={_NUM} curr={_NUM} min={_NUM} max={_NUM} avg={_NUM} std={_NUM}(?:.*?median={_NUM})?"
)
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
    rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}"
)
_MEMORY = re.compile(
    rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): init={_NUM} overall={_NUM}"
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


_TIME = rf"{_NUM} (ms|us)"  # benchmark_app switches to us for sub-0.1 ms latencies
_APP_FIELDS = {
    "runs": re.compile(rf"Count:\s+{_NUM} iterations"),
    "duration_ms": re.compile(rf"Duration:\s+{_TIME}"),
    "p50_ms": re.compile(rf"Median:\s+{_TIME}"),
    "mean_ms": re.compile(rf"Average:\s+{_TIME}"),
    "min_ms": re.compile(rf"Min:\s+{_TIME}"),
    "max_ms": re.compile(rf"Max:\s+{_TIME}"),
    "throughput_fps": re.compile(rf"Throughput:\s+{_NUM} FPS"),
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
