"""The driver: load -> fetch -> plan -> run stages (with a runner) -> report -> verdict."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from builder import catalog, inputs, report
from builder.errors import GateError, StepError
from builder.plan import Plan, make_plan, recipe_hash
from builder.progress import DownloadProgress
from builder.util import atomic_write_bytes, remove
from builder.workdir import PLAN

Echo = Callable[[str], None]


class Runner(Protocol):
    name: str

    def prepare(self, plan: Plan, echo: Echo) -> dict:
        """Get ready to run `plan` (e.g. build images); return what the manifest should record."""

    def run_stage(self, plan: Plan, workdir: Path, stage: str, echo: Echo) -> list[dict]:
        """Run one stage's steps; return their records."""


@dataclass
class Outcome:
    recipe: str
    target: str
    workdir: Path
    results: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] in ("failed", "skipped")]

    @property
    def gate_failures(self) -> list[dict]:
        return [r for r in self.results if r["status"] == "gate-failed"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_recipe(recipe_path: Path, target_id: str, runner: Runner, *, out: Path, variants: list[str] | None = None,
               offline: bool = False, echo: Echo = print) -> Outcome:
    recipe = catalog.load_recipe(recipe_path, target_id)
    target = catalog.load_target(target_id)
    make_plan(recipe, target, variants=variants)  # fail on bad input before fetching anything
    workdir = out / recipe.name / target.id
    remove(workdir)  # a run never trusts a previous run's files
    workdir.mkdir(parents=True)
    run: dict = {"recipe_path": str(recipe_path), "recipe_sha256": recipe_hash(recipe_path), "runner": runner.name,
                 "started": _now(), "timings": {}}
    t0 = time.perf_counter()
    echo(f"[{recipe.name} / {target.id}] fetching inputs")
    fetched = inputs.materialize(recipe, workdir, offline=offline, progress=DownloadProgress(echo))
    run["sources"], run["warnings"] = fetched.fetched, list(fetched.warnings)
    run["timings"]["fetch_s"] = round(time.perf_counter() - t0, 2)

    plan = make_plan(recipe, target, variants=variants, source=fetched.source)
    run["warnings"] += plan.notes
    atomic_write_bytes(workdir / PLAN, json.dumps(plan.to_json(), indent=1).encode())
    run["images"] = runner.prepare(plan, echo)
    for stage in ("toolchain", "device"):
        t = time.perf_counter()
        echo(f"[{recipe.name} / {target.id}] {stage} stage ({runner.name})")
        runner.run_stage(plan, workdir, stage, echo)
        run["timings"][f"{stage}_s"] = round(time.perf_counter() - t, 2)
    run["timings"]["total_s"] = round(time.perf_counter() - t0, 2)
    run["finished"] = _now()
    results = report.write(plan, workdir, run)
    echo(f"[{recipe.name} / {target.id}] report: {workdir / 'report.md'}")
    return Outcome(recipe=recipe.name, target=target.id, workdir=workdir, results=results)


def verdict(outcomes: list[Outcome]) -> None:
    """Raise StepError for failed runs or variants, GateError for missed gates (all exit 1)."""
    broken = [o for o in outcomes if o.error]
    if broken:
        raise StepError(f"{len(broken)} run(s) failed:\n  " + "\n  ".join(f"{o.recipe}/{o.target}: {o.error}" for o in broken))
    failed = [(o, r) for o in outcomes for r in o.failed]
    if failed:
        o, r = failed[0]
        f = r.get("failure") or {}
        lines = [f"{o.recipe}/{o.target}/{r['name']}: {f.get('cause')}: {f.get('error')}" for o, r in failed]
        log = o.workdir / "logs" / f"{f.get('step')}.log"
        tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
        raise StepError(f"{len(failed)} variant(s) failed:\n  " + "\n  ".join(lines), hint=f.get("hint"), log_tail=tail)
    missed = [(o, r, g) for o in outcomes for r in o.gate_failures for g in r["validation"]["gates"] if not g["passed"]]
    if missed:
        lines = []
        for o, r, g in missed:
            value = g["value"]
            gap = f" (missed by {abs(value - g['threshold']):.4f})" if value is not None else ""
            lines.append(f"{o.recipe}/{o.target}/{r['name']}: {g['metric']} = {value} vs {g['gate']} {g['threshold']}{gap}")
        raise GateError("accuracy gate(s) missed:\n  " + "\n  ".join(lines))
