"""Latency, throughput and memory of a runtime session, and how a vendor's own tool is run.

`measure` times the inference `Session.prepared` returns (native dtypes, inputs
bound once, outputs left in the runtime's buffers) in this process. `run_tool` runs a
vendor's own benchmark tool, whose figures users already know: each backend keeps its
tool's wrapper (its command line and the parser of its report) and offers it through
its runtime's `second_opinions`.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from builder.errors import ConfigError, StepError
from builder.stage.runtimes import Session, load

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
    model's own threads (+3-9% p50 with one runtime on 2 cores). `process_peak_rss_mb`
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


NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
