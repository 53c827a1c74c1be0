"""compile.vela: full-int8 TFLite -> Ethos-U NPU command stream, with Vela's performance estimate."""

from __future__ import annotations

import csv
import subprocess
import sys
from typing import Literal

from builder.errors import ConversionError
from builder.steps.base import Step, StepContext, StepParams
from builder.util import atomic_copy


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

    def run(self, ctx: StepContext, params: Params) -> dict:
        model = ctx.input("model")
        out_dir = ctx.workdir / "work" / "vela" / (ctx.call.variant or "model")
        command = [sys.executable, "-m", "ethosu.vela.vela", str(model), "--output-dir", str(out_dir),
                   "--accelerator-config", params.accelerator, "--optimise", params.optimise]
        if params.system_config:
            command += ["--system-config", params.system_config]
        if params.memory_mode:
            command += ["--memory-mode", params.memory_mode]
        ctx.log.info("running %s", " ".join(command))
        proc = subprocess.run(command, capture_output=True, text=True)
        ctx.log.info("%s", proc.stdout)
        if proc.returncode != 0:
            raise ConversionError(f"vela failed on {model.name} (exit {proc.returncode})", cause="vela-failed",
                                  log_tail=(proc.stdout + proc.stderr).splitlines()[-30:],
                                  hint="Vela needs a fully int8 (or int16x8) TFLite model")
        atomic_copy(out_dir / f"{model.stem}_vela.tflite", ctx.output("model"))
        summaries = sorted(out_dir.glob(f"{model.stem}_summary_*.csv"))
        estimate = {}
        if summaries:
            with open(summaries[0], newline="") as fh:
                estimate = next(csv.DictReader(fh), {})
        return {"vela": {"accelerator": params.accelerator, "estimate": estimate}}
