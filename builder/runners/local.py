"""The local runner: the same step code, in the host's Python environment.

Each stage runs in its own `python -m builder.execute` process, as it would in a
container: a stage's memory figures are its own, TensorFlow's global state does
not leak between stages, and parallel matrix runs do not share loggers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from builder.errors import StepError
from builder.execute import read_records
from builder.plan import Plan


class LocalRunner:
    name = "local"

    def prepare(self, plan: Plan, echo) -> dict:
        return {}

    def run_stage(self, plan: Plan, workdir: Path, stage: str, echo) -> list[dict]:
        command = [sys.executable, "-m", "builder.execute", str(workdir), "--stage", stage]
        tail: list[str] = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = (tail + [line])[-30:]
                echo(line)
        if proc.returncode not in (0, 1):  # 1 = some step failed and said so in its record
            raise StepError(f"the {stage} stage of {plan.target.id} exited with {proc.returncode}", log_tail=tail)
        return [r for r in read_records(workdir).values() if r["stage"] == stage]
