"""Per-layer profiles: the registry of each runtime's profiler, and the one record shape they all give.

A backend registers its runtime's profiler (`register(runtime, profiler)`); the `profile` step
(steps/profile.py) runs it on an artifact after the timed benchmark, never during it, and writes its layers
into the step's record (`records.Profile`), into profile_<variant>.csv and into a Model Explorer node data file
beside the artifact (model_explorer.py).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder import plugins
from builder.errors import StepError

CSV_FIELDS = ("rank", "name", "node_id", "op_type", "ms", "share", "precision", "unit")
AGREES_WITHIN = 0.2  # the layers' sum within 20% of the benchmark's p50
BUSY = "and other work on the machine while either of the two ran moves it"


@dataclass(frozen=True)
class Layer:
    """One layer as a profiler measured it."""

    name: str
    node_id: str  # its node's id in Model Explorer's graph of the model
    op_type: str
    ms: float  # time per inference
    precision: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class ProfileSpec:
    """How a profile is taken: the benchmark's threads and runtime options, and how many inferences."""

    threads: int
    runs: int
    warmup: int
    runtime_options: Mapping[str, object] = field(default_factory=dict)


@dataclass
class Measured:
    """What a profiler found: its layers (any order) and the facts of the whole profile."""

    profiler: str
    layers: list[Layer]
    runs: int
    graph: str = "main"  # the graph's id in Model Explorer
    estimate: bool = False
    partitions: int | None = None
    caveat: str | None = None
    warnings: list[str] = field(default_factory=list)
    shown_on: Path | None = None  # the model whose graph the node ids name, when not the artifact (an NPU's input)


Profiler = Callable[[Path, Mapping[str, Path], ProfileSpec, logging.Logger], Measured]
"""(the model, every file the benchmark reads by its name, how, a log) -> its layers."""
_PROFILERS: dict[str, Profiler] = {}


def register(runtime: str, profiler: Profiler) -> None:
    """A backend's profiler of the models its runtime runs."""
    _PROFILERS[runtime] = profiler


def has_profiler(runtime: str) -> bool:
    plugins.load()
    return runtime in _PROFILERS


def profiler_of(runtime: str) -> Profiler:
    plugins.load()
    try:
        return _PROFILERS[runtime]
    except KeyError:
        raise StepError(f"the {runtime} runtime has no per-layer profiler",
                        hint=f"profiles are taken for {', '.join(sorted(_PROFILERS)) or 'no runtime'}; "
                             "run without --profile") from None


def record(measured: Measured) -> dict:
    """The `records.Profile` of what a profiler measured: its layers slowest first, with their shares."""
    total = sum(layer.ms for layer in measured.layers)
    layers = sorted(measured.layers, key=lambda layer: layer.ms, reverse=True)
    result = {
        "profiler": measured.profiler, "runs": measured.runs, "total_ms": round(total, 6),
        "layers": [{"name": x.name, "node_id": x.node_id, "op_type": x.op_type, "ms": round(x.ms, 6),
                    "share": round(x.ms / total, 6) if total else 0.0,
                    **({"precision": x.precision} if x.precision else {}), **({"unit": x.unit} if x.unit else {})}
                   for x in layers],
    }
    if measured.estimate:
        result["estimate"] = True
    if measured.partitions is not None:
        result["partitions"] = measured.partitions
    if measured.caveat:
        result["caveat"] = measured.caveat
    if measured.warnings:
        result["warnings"] = list(measured.warnings)
    return result


def table_csv(profile: dict) -> bytes:
    """profile_<variant>.csv: the layers, slowest first."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({"rank": i, **layer} for i, layer in enumerate(profile["layers"], 1))
    return buf.getvalue().encode()


def against_p50(total_ms: float, p50_ms: float | None, *, caveat: str | None, emulated: bool = False) -> dict:
    """The layers' sum over the benchmark's p50, and why they differ by more than 20% where they do."""
    if not p50_ms:
        return {}
    ratio = total_ms / p50_ms
    if abs(ratio - 1) <= AGREES_WITHIN:
        return {"vs_p50": round(ratio, 3)}
    why = f"{caveat}; {BUSY}" if caveat else f"the profiler's own overhead, {BUSY}"
    if emulated:
        why = "emulated: both are QEMU's timings, not the device's"
    return {"vs_p50": round(ratio, 3), "why": why}
