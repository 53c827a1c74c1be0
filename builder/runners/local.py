"""The local runner: the same step code, in the host's Python environment."""

from __future__ import annotations

from pathlib import Path

from builder.execute import run_stage
from builder.plan import Plan


class LocalRunner:
    name = "local"

    def prepare(self, plan: Plan, echo) -> dict:
        return {}

    def run_stage(self, plan: Plan, workdir: Path, stage: str, echo) -> list[dict]:
        return run_stage(workdir, stage, echo=echo)
