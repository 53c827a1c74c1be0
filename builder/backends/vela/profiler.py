"""The Ethos-U NPU's per-layer profile: Vela's own estimate per layer (`--verbose-performance`'s per-layer CSV,
which compile.vela keeps in its estimate's file), an estimate like its whole-network figure, for hardware that is
not here.

A layer is an op of the int8 TFLite Vela compiled, named by its output tensor (Vela's `Name` column), which is
how Model Explorer's graph of that TFLite finds it; the ops Vela lowered it to (a Conv2D and its Relu6) are
summed into it."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from builder.backends.vela.runtime import _declared
from builder.errors import StepError
from builder.stage import profiling


def read_per_layer(path: Path) -> list[dict]:
    """Vela's per-layer CSV -> one entry per original op (`name`, `operator`, `target`, `cycles`): the ops Vela
    lowered it to are summed into it."""
    found: dict[str, dict] = {}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                entry = found.setdefault(row["Name"], {"name": row["Name"], "operator": row["Original Operator"],
                                                       "target": row["Target"], "cycles": 0})
                entry["cycles"] += int(float(row["Op Cycles"]))
    except (KeyError, ValueError) as exc:
        raise StepError(f"{path.name} is not Vela's per-layer CSV: {exc}",
                        hint="compile.vela runs Vela with --verbose-performance, which writes it") from None
    return list(found.values())


def layers_of(estimate: dict) -> list[profiling.Layer]:
    """The layers of an estimate's file, their cycles at its clock in ms."""
    if "per_layer" not in estimate:
        raise StepError("this Vela estimate has no per-layer figures: it was compiled before they were kept",
                        hint="run again with --no-cache to compile it anew")
    clock = float(estimate["clock_hz"])
    return [profiling.Layer(name=x["name"], node_id=x["name"], op_type=x["operator"], ms=x["cycles"] / clock * 1000.0,
                            precision="int8", unit=x["target"]) for x in estimate["per_layer"]]


def profile(model: Path, files: Mapping[str, Path], spec: profiling.ProfileSpec,
            log: logging.Logger) -> profiling.Measured:
    estimate = json.loads(_declared(files, "estimate").read_text())
    layers = layers_of(estimate)
    warnings = []
    if estimate.get("cpu_operators"):
        warnings.append(f"{estimate['cpu_operators']} operator(s) run on the CPU: Vela estimates none of their time")
    return profiling.Measured(profiler=f"Vela's estimate per layer ({estimate['accelerator']})", layers=layers, runs=0,
                              estimate=True, shown_on=_declared(files, "compiled_from"), warnings=warnings)


profiling.register("ethos-u", profile)
