"""compile.vela: full-int8 TFLite -> Ethos-U NPU command stream, with Vela's performance estimate.

A Vela-compiled model runs only on the NPU, so the device stage cannot time or run
it on a CPU: the `ethos-u` runtime (builder/backends/vela/runtime.py) reports Vela's estimate
(an output of compile.vela, an input of the benchmark) and validates the int8 TFLite
that Vela compiled in its place.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from builder.backends.vela.profiler import read_per_layer
from builder.errors import ConversionError
from builder.plan import StepCall
from builder.stage.steps.base import Step, StepContext, StepParams
from builder.util import atomic_copy, atomic_write_bytes

ESTIMATE = "work/vela/{stem}.estimate.json"
# `python -m ethosu.vela.vela` imports the module and exits without compiling: call its main().
_VELA_MAIN = "import sys; from ethosu.vela.vela import main; sys.exit(main(sys.argv[1:]))"
_OPERATORS = re.compile(r"^(CPU|NPU) operators = (\d+)", re.MULTILINE)


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse_summary(csv_path: Path, stdout: str) -> dict:
    """Vela's per-network summary CSV (and the operator split it prints) as an estimate record."""
    with open(csv_path, newline="") as fh:
        row = {key: _number(value) for key, value in next(csv.DictReader(fh)).items()}
    operators = {kind.lower(): int(count) for kind, count in _OPERATORS.findall(stdout)}
    return {
        "accelerator": row["accelerator_configuration"],
        "system_config": row["system_config"],
        "memory_mode": row["memory_mode"],
        "clock_hz": row["core_clock"],
        "inference_ms": row["inference_time"] * 1000.0,
        "inferences_per_second": row["inferences_per_second"],
        "cycles_total": int(row["cycles_total"]),
        "cycles_npu": int(row["cycles_npu"]),
        "macs": int(row["nn_macs"]),
        "sram_kib": row["sram_memory_used"],
        "off_chip_flash_kib": row["off_chip_flash_memory_used"],
        "npu_operators": operators.get("npu"),
        "cpu_operators": operators.get("cpu"),
    }


class CompileVela(Step):
    kind = "compile.vela"
    consumes = ("tflite",)
    produces = "vela"
    summary = "ARM Vela compiler for Ethos-U (estimates cycles and inference time per accelerator config)"

    class Params(StepParams):
        accelerator: str = "ethos-u55-256"
        optimise: Literal["Performance", "Size"] = "Performance"
        system_config: str | None = None
        memory_mode: str | None = None

    @classmethod
    def side_outputs(cls, model: str) -> dict[str, str]:
        return {"estimate": ESTIMATE.format(stem=Path(model).stem)}

    @classmethod
    def measure_inputs(cls, call: StepCall) -> dict[str, str]:
        return {"estimate": call.outputs["estimate"], "compiled_from": call.inputs["model"]}

    def run(self, ctx: StepContext, params: Params) -> dict:
        model = ctx.input("model")
        with tempfile.TemporaryDirectory(prefix="vela-") as tmp:
            out_dir = Path(tmp)
            command = [sys.executable, "-c", _VELA_MAIN, str(model), "--output-dir", str(out_dir),
                       "--accelerator-config", params.accelerator, "--optimise", params.optimise,
                       "--verbose-performance"]
            if params.system_config:
                command += ["--system-config", params.system_config]
            if params.memory_mode:
                command += ["--memory-mode", params.memory_mode]
            ctx.log.info("running %s", " ".join(command))
            proc = subprocess.run(command, capture_output=True, text=True)
            ctx.log.info("%s", proc.stdout)
            compiled = out_dir / f"{model.stem}_vela.tflite"
            summaries = sorted(out_dir.glob(f"{model.stem}_summary_*.csv"))
            per_layer = out_dir / f"{model.stem}_per-layer.csv"
            if proc.returncode != 0 or not compiled.exists() or not summaries or not per_layer.exists():
                raise ConversionError(f"vela failed on {model.name} (exit {proc.returncode})", cause="vela-failed",
                                      log_tail=(proc.stdout + proc.stderr).splitlines()[-30:],
                                      hint="Vela needs a fully int8 (or int16x8) TFLite model; is ethos-u-vela installed?")
            estimate = parse_summary(summaries[0], proc.stdout)
            atomic_copy(compiled, ctx.output("model"))
            layers = read_per_layer(per_layer)
        if estimate["cpu_operators"]:
            ctx.log.warning("%d operator(s) stay on the CPU: the estimate covers the NPU part only",
                            estimate["cpu_operators"])
        record = {**estimate, "compiled_from": str(model.relative_to(ctx.workdir))}
        # the estimate's file keeps it per layer too, for a profile (the step's record keeps the whole only)
        atomic_write_bytes(ctx.output("estimate"), json.dumps(record | {"per_layer": layers}, indent=1).encode())
        return {"vela": record}
