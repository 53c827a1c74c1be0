"""The driver: load -> fetch -> plan -> run stages (with a runner) -> report -> verdict."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from builder import records
from builder.errors import BuilderError, DeviceError, EngineUnreachable, GateError, GateUndecided, StageDied, StepError
from builder.host import catalog, inputs, report, run_dir
from builder.host.devices import HOST, Device, DevicePool
from builder.host.planner import ExtraMeasures, make_plan, recipe_hash, source_path
from builder.host.progress import download_progress
from builder.host.step_cache import MADE_NOW, NEW, CachePolicy, StageIdentity
from builder.plan import Plan
from builder.records import VariantResult
from builder.stage import source_precision
from builder.stage.steps import registry
from builder.util import atomic_write_bytes
from builder.workdir import MANIFEST, PLAN, RECORDS, RUN, VERSIONS

Echo = Callable[[str], None]


class Runner(Protocol):
    name: str

    def identity(self, plan: Plan, stage: str, device: Device = HOST) -> StageIdentity:
        """What the stage's steps run in and where, known without building or running anything."""

    def run_stage(self, plan: Plan, workdir: Path, stage: str, echo: Echo, device: Device = HOST,
                  on_step: Callable[[str, Path], None] | None = None) -> dict:
        """Run one stage's steps (the device stage on `device`) that have no record yet; return its image
        and placement. `on_step(step_id, folder)` as each step finishes ok: `folder` holds its record, log
        and outputs at their places in the run (the run's folder itself, or a copy)."""


@dataclass
class Outcome:
    recipe: str
    target: str
    workdir: Path
    results: list[VariantResult] = field(default_factory=list)
    error: str | None = None
    cause: str | None = None
    hint: str | None = None

    @property
    def failed(self) -> list[VariantResult]:
        return [r for r in self.results if r.status in ("failed", "skipped")]

    @property
    def gate_failures(self) -> list[VariantResult]:
        return [r for r in self.results if r.status == "gate-failed"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_recipe(recipe_path: Path, target_id: str, runner: Runner, *, out: Path, variants: list[str] | None = None,
               offline: bool = False, pool: DevicePool | None = None, cache: CachePolicy | None = None,
               echo: Echo = print, trust_remote_code: bool = False, extra: ExtraMeasures = ExtraMeasures()) -> Outcome:
    """fetch -> plan -> toolchain stage (build host) -> device stage (a device of the target) -> report,
    in a fresh folder that replaces `out/<recipe>/<target>/` only once the report is written."""
    pool = pool or DevicePool([], echo=echo)
    recipe, target = _load(recipe_path, target_id, variants, trust_remote_code)
    with run_dir.claim(out / recipe.name / target.id) as folder:
        plan, run = _toolchain(recipe_path, recipe, target, runner, folder.staging, variants=variants,
                               offline=offline, pool=pool, cache=cache, echo=echo, trust_remote_code=trust_remote_code,
                               extra=extra)
        echo = _lines_of(echo, plan.recipe.name, plan.target.id)
        failure: DeviceError | None = None
        try:
            _device_stage(runner, plan, folder.staging, pool, run, cache, echo)
        except DeviceError as exc:
            if exc.cause == "device-needed":
                exc.hint = _finish_elsewhere(recipe_path, target_id, out, exc.hint)
            _skip_stage(plan, folder.staging, "device", exc)
            failure = exc
        outcome = finish(plan, folder.staging, run)
        folder.commit()
    echo(f"[{plan.recipe.name} / {plan.target.id}] report: {folder.final / 'report.md'}")
    outcome = replace(outcome, workdir=folder.final)
    return replace(outcome, error=failure.message, cause=failure.cause, hint=failure.hint) if failure else outcome


def run_toolchain(recipe_path: Path, target_id: str, runner: Runner, *, out: Path, variants: list[str] | None = None,
                  offline: bool = False, pool: DevicePool | None = None, cache: CachePolicy | None = None,
                  echo: Echo = print, trust_remote_code: bool = False) -> tuple[Plan, Path, dict]:
    """Everything up to the device stage, in a fresh `out/<recipe>/<target>/`; `work/run.json` keeps the run."""
    recipe, target = _load(recipe_path, target_id, variants, trust_remote_code)
    with run_dir.claim(out / recipe.name / target.id) as folder:
        plan, run = _toolchain(recipe_path, recipe, target, runner, folder.staging, variants=variants,
                               offline=offline, pool=pool or DevicePool([], echo=echo), cache=cache, echo=echo,
                               trust_remote_code=trust_remote_code)
        folder.commit()
    return plan, folder.final, run


def _load(recipe_path: Path, target_id: str, variants: list[str] | None, trust_remote_code: bool):
    recipe = catalog.load_recipe(recipe_path, target_id)
    target = catalog.load_target(target_id)
    make_plan(recipe, target, variants=variants, trust_remote_code=trust_remote_code)  # bad input: before fetching
    return recipe, target


def _toolchain(recipe_path: Path, recipe, target, runner: Runner, workdir: Path, *, variants: list[str] | None,
               offline: bool, pool: DevicePool, cache: CachePolicy | None, echo: Echo,
               trust_remote_code: bool, extra: ExtraMeasures = ExtraMeasures()) -> tuple[Plan, dict]:
    """fetch -> plan -> the toolchain stage, in `workdir` (a run's fresh folder)."""
    echo = _lines_of(echo, recipe.name, target.id)
    run: dict = {"recipe_path": str(recipe_path), "recipe_sha256": recipe_hash(recipe_path), "runner": runner.name,
                 "started": _now(), "timings": {}, "images": {}, "stages": {}}
    t0 = time.perf_counter()
    echo(f"[{recipe.name} / {target.id}] fetching inputs")
    fetched = inputs.materialize(recipe, workdir, offline=offline, progress=download_progress(echo))
    run["sources"], run["warnings"] = fetched.fetched, list(fetched.warnings)
    run["timings"]["fetch_s"] = round(time.perf_counter() - t0, 2)

    quantized = source_precision.inspect(workdir / source_path(fetched.source), fetched.source.resolved_format,
                                         shown=f"{recipe_path}: source {fetched.source.file or fetched.source.name}")
    plan = make_plan(recipe, target, variants=variants, source=fetched.source, quantized=quantized,
                     trust_remote_code=trust_remote_code, extra=extra)
    run["warnings"] += plan.notes
    atomic_write_bytes(workdir / PLAN, json.dumps(plan.to_json(), indent=1).encode())
    with pool.toolchain():
        _stage(runner, plan, workdir, "toolchain", HOST, run, cache, echo)
    atomic_write_bytes(workdir / RUN, json.dumps(run, indent=1).encode())
    return plan, run


def _lines_of(echo: Echo, recipe: str, target: str) -> Echo:
    """The echo of one recipe/target's lines: a console view (builder.host.console_view) tells overlapping
    runs apart by it, as the step lines carry no name."""
    of = getattr(echo, "of", None)
    return of(recipe, target) if of else echo


def _stage(runner: Runner, plan: Plan, workdir: Path, stage: str, device: Device, run: dict,
           cache: CachePolicy | None, echo: Echo) -> None:
    t = time.perf_counter()
    where = "" if device.is_host else f" on {device.name}"
    name = f"[{plan.recipe.name} / {plan.target.id}]"
    echo(f"{name} {stage} stage ({runner.name}{where})")
    run["stages"][stage] = {"started": _now()}
    calls = plan.stage_steps(stage)
    stage_cache = None
    if cache and calls:
        identity = runner.identity(plan, stage, device)
        stage_cache = cache.stage(workdir, f"{plan.recipe.name}\0{plan.target.id}", identity,
                                  warn=lambda line: echo(f"  warning: {line}"))
        to_run = _restore(stage_cache, calls, workdir, echo)
        run["stages"][stage] |= {"cached_steps": len(calls) - len(to_run), "placement": identity.placement}
        calls = to_run
    versions = workdir / VERSIONS / f"{stage}.json"
    stored: set[str] = set()

    def keep(step_id: str, folder: Path) -> None:
        """A step that just finished goes into the cache at once: a run killed later keeps it."""
        call = next((c for c in calls if c.id == step_id), None)
        if stage_cache and call:
            try:
                stage_cache.store(call, records.read_record(folder / RECORDS / f"{step_id}.json"), folder)
                stored.add(step_id)
            except (OSError, BuilderError) as exc:
                echo(f"  warning: step cache: {step_id} not kept yet: {exc}")

    if calls or not (stage_cache and stage_cache.place_versions(versions)):
        try:
            info = runner.run_stage(plan, workdir, stage, echo, device, on_step=keep)
        except StageDied as exc:
            echo(f"{name} {stage} stage died: {exc.message}")
            _fail_unrecorded(calls, workdir, exc)
            info = {}
        if info.get("image"):
            run["images"][stage] = info["image"]
        run["stages"][stage]["placement"] = info.get("placement")
        if stage_cache:
            stage_cache.keep_versions(versions)
            for call in calls:
                path = _record_path(workdir, call.id)
                if path.exists() and call.id not in stored:  # a runner that stopped midway wrote no record
                    stage_cache.store(call, records.read_record(path))
    else:
        if stage_cache.identity.image:
            run["images"][stage] = {"tag": stage_cache.identity.image, "engine": identity.placement["engine"],
                                    "cached": True}
        echo(f"{name} {stage} stage: every step cached, nothing to run")
    run["stages"][stage] |= {"finished": _now(), "executed_steps": len(calls)}
    run["timings"][f"{stage}_s"] = round(time.perf_counter() - t, 2)


def _restore(stage_cache, calls: list, workdir: Path, echo: Echo) -> list:
    """Place every step the cache holds (writing its record); return the calls that must run, saying why
    when it is not simply new."""
    to_run = []
    for call in calls:
        measures = registry.get(call.kind).measures
        cached = stage_cache.restore(call, measures)
        if cached is None:
            why = stage_cache.why_it_runs(call, measures)
            if why not in (NEW, MADE_NOW):
                echo(f"  runs: {call.id} ({why})")
            to_run.append(call)
            continue
        try:
            record = records.write_record(_record_path(workdir, call.id), cached)
        except BuilderError as exc:  # an entry kept before the record's model changed: the step runs again
            echo(f"  warning: step cache: {exc.message}; it runs")
            to_run.append(call)
            continue
        echo(f"  cached: {call.id} (ran {record.finished or 'before'})")
    return to_run


def _forget_stage(plan: Plan, workdir: Path, stage: str) -> None:
    for call in plan.stage_steps(stage):
        _record_path(workdir, call.id).unlink(missing_ok=True)


def _fail_unrecorded(calls: list, workdir: Path, exc: StageDied) -> None:
    """Each step a dead stage left without a record fails with the stage's cause: never absent, never ok."""
    for call in calls:
        path = _record_path(workdir, call.id)
        if not path.exists():
            records.write_record(path, {
                "id": call.id, "kind": call.kind, "stage": call.stage, "variant": call.variant, "outputs": {},
                "status": "failed", "seconds": 0.0, "cause": "stage-died", "log_tail": exc.log_tail,
                "error": f"the {call.stage} stage died before this step finished: {exc.message}",
                "hint": "the log tail shows why the stage's process ended; rerun once it is fixed"})


def _record_path(workdir: Path, step_id: str) -> Path:
    return workdir / RECORDS / f"{step_id}.json"


def _device_stage(runner: Runner, plan: Plan, workdir: Path, pool: DevicePool, run: dict,
                  cache: CachePolicy | None, echo: Echo) -> None:
    """Run the device stage on a device of the target; a device that stops answering hands the job on."""
    while True:
        with pool.device(plan.target.id) as device:
            _forget_stage(plan, workdir, "device")  # a given-up attempt's records are not this device's
            try:
                _stage(runner, plan, workdir, "device", device, run, cache, echo)
                return
            except EngineUnreachable as exc:
                if device.is_host:
                    raise
                pool.mark_down(device, exc.message)
                echo(f"[{plan.recipe.name} / {plan.target.id}] moving the device stage off {device.name}")


def _finish_elsewhere(recipe_path: Path, target_id: str, out: Path, hint: str | None) -> str:
    """The exact commands that finish a run whose device stage needs a device this host is not."""
    return (f"{hint + '; ' if hint else ''}finish it on the device: "
            f"`builder run {recipe_path} -t {target_id} --out {out} --device ssh://USER@DEVICE`, or without a "
            f"network to it: `builder bundle {recipe_path} -t {target_id} --out {out}`, run the archive's run.sh "
            f"on the device, then `builder collect ARCHIVE --out {out}`")


def _skip_stage(plan: Plan, workdir: Path, stage: str, exc: DeviceError) -> None:
    """Record every step of a stage that could not run, with the classified cause (never as ok)."""
    for call in plan.stage_steps(stage):
        records.write_record(_record_path(workdir, call.id), {
            "id": call.id, "kind": call.kind, "stage": call.stage, "variant": call.variant, "outputs": {},
            "status": "skipped", "seconds": 0.0, "cause": exc.cause, "error": exc.message, "hint": exc.hint})


def finish(plan: Plan, workdir: Path, run: dict) -> Outcome:
    """Write the report of the run in `workdir`."""
    run["timings"]["total_s"] = round(sum(v for k, v in run["timings"].items() if k != "total_s"), 2)
    run["finished"] = _now()
    results = report.write(plan, workdir, run)
    return Outcome(recipe=plan.recipe.name, target=plan.target.id, workdir=workdir, results=results)


def summary(outcomes: list[Outcome]) -> list[str]:
    """A few lines per recipe/target for the end of a run: its steps, its time, the recommendation, the report."""
    lines = []
    for o in outcomes:
        name = f"{o.recipe} / {o.target}"
        manifest = o.workdir / MANIFEST
        if not manifest.is_file():  # it failed before it had a report
            lines.append(f"{name}: FAILED: {o.cause + ': ' if o.cause else ''}{o.error}")
            continue
        man = json.loads(manifest.read_text())
        counts = Counter("cached" if s.get("cached") else s["status"] for s in man["steps"])
        skipped = f", {counts['skipped']} skipped" if counts["skipped"] else ""
        lines.append(f"{name}: {len(man['steps'])} steps: {counts['ok']} ran, {counts['cached']} cached, "
                     f"{counts['failed']} failed{skipped}; {man['timings']['total_s']:.1f} s")
        if o.error:
            lines.append(f"  not finished: {o.cause + ': ' if o.cause else ''}{o.error}")
        rec = records.load_results(o.workdir / "results.json").recommendation
        lines.append(f"  recommendation: {_recommendation_line(rec)}")
        lines.append(f"  report: {o.workdir / 'report.md'} (and report.html)")
    return lines


def _recommendation_line(rec: records.Recommendation) -> str:
    """results.json's recommendation in one plain line."""
    if not rec.variant:
        return "none: no variant is built, timed and within every gate on this target"
    kb = f", {rec.size_bytes / 1024:.1f} KB" if rec.size_bytes else ""
    line = f"ship {rec.variant}{' provisionally' if rec.provisional else ''}: p50 {rec.p50_ms:.3f} ms{kb}"
    if rec.speedup_vs_fp32 is not None and rec.variant != rec.baseline:
        line += f"; {rec.speedup_vs_fp32:.2f}x the speed of {rec.baseline}"
        if rec.size_vs_fp32 is not None:
            line += f", {rec.size_vs_fp32:.2f}x its size"
    if rec.emulated or rec.estimate:
        line += " (timings " + ("emulated)" if rec.emulated else "estimated)")
    if rec.provisional:
        line += ("; a gate is undecided: " + (f"about {rec.photos_needed} distinct validation photos would decide it"
                 if rec.photos_needed else "no number of photos would decide it")
                 + f"; decided: {rec.otherwise or 'none'}")
    return line


def verdict(outcomes: list[Outcome], *, accept_undecided: bool = False) -> None:
    """Raise StepError for failed runs or variants, GateError for missed gates (all exit 1), GateUndecided
    (exit 3) for undecided gates unless they are accepted."""
    broken = [o for o in outcomes if o.error]
    if broken:
        raise StepError(f"{len(broken)} run(s) failed:\n  " + "\n  ".join(
            f"{o.recipe}/{o.target}: {o.cause + ': ' if o.cause else ''}{o.error}" for o in broken),
            hint=next((o.hint for o in broken if o.hint), None))
    failed = [(o, r) for o in outcomes for r in o.failed]
    if failed:
        lines = [f"{o.recipe}/{o.target}/{r.name}: {r.failure and r.failure.cause}: {r.failure and r.failure.error}"
                 for o, r in failed]
        o, first = failed[0]
        log = o.workdir / "logs" / f"{first.failure.step}.log" if first.failure else None
        tail = log.read_text(errors="replace").splitlines()[-30:] if log and log.exists() else []
        raise StepError(f"{len(failed)} variant(s) failed:\n  " + "\n  ".join(lines),
                        hint=first.failure and first.failure.hint, log_tail=tail)
    missed = [(o, r, g) for o in outcomes for r in o.gate_failures for g in (r.validation.gates if r.validation else [])
              if g.outcome == "fail"]
    if missed:
        lines = []
        for o, r, g in missed:
            gap = f" (missed by {abs(g.value - g.threshold):.4f})" if g.value is not None else ""
            lines.append(f"{o.recipe}/{o.target}/{r.name}: {g.metric} = {g.value} vs {g.gate} {g.threshold}{gap}")
        raise GateError("accuracy gate(s) missed:\n  " + "\n  ".join(lines))
    undecided = [(o, r, g) for o in outcomes for r in o.results if r.status == "gate-undecided"
                 for g in r.validation.gates if g.outcome == "undecided"]
    if undecided and not accept_undecided:
        lines = [f"{o.recipe}/{o.target}/{r.name}: {g.metric} = {g.value:.4g} {_interval_text(g.interval)} vs {g.gate} "
                 f"{g.threshold}" + (f": about {g.photos_needed} distinct photos would decide it" if g.photos_needed else "")
                 for o, r, g in undecided]
        raise GateUndecided("accuracy gate(s) undecided: the validation set is too small to tell\n  " + "\n  ".join(lines),
                            hint="validate on more distinct photos (`validation:`), or accept the provisional "
                                 "verdict with --accept-undecided")


def _interval_text(bounds) -> str:
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else ""
