"""recipes x targets: run each pair (in parallel with --jobs), then one status report over all."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from builder.errors import BuilderError, ConfigError
from builder.host import catalog, html_report
from builder.host.devices import Device, DevicePool
from builder.host.planner import ExtraMeasures
from builder.host.run import Outcome, run_recipe
from builder.host.step_cache import CachePolicy
from builder.records import StepOutcome
from builder.stage.causes import classify
from builder.util import atomic_write_bytes

VERIFY_CSV = "verify_{format}.csv"  # seed 000's name for it, for the artifacts of one format


def run_matrix(recipes: list[Path], targets: list[str], runner, *, out: Path, variants=None, offline=False,
               jobs: int = 1, devices: list[Device] | None = None, cache: CachePolicy | None = None,
               echo=print, trust_remote_code: bool = False, extra: ExtraMeasures = ExtraMeasures(),
               pool=None) -> list[Outcome]:
    """Every recipe x target. Up to `jobs` toolchain stages run at once on the build host; device stages
    take a free device of their target each, so one job's benchmark overlaps the next one's conversion.
    `pool`: where stages go instead (a cluster's, builder.host.cluster.ClusterPool)."""
    pairs = [(r, t) for r in recipes for t in targets]
    _refuse_shared_folders(pairs, out)
    pool = pool or DevicePool(devices or [], toolchain_jobs=jobs, echo=echo, probe=getattr(runner, "probe", None))

    def one(pair) -> Outcome:
        recipe, target = pair
        try:
            return run_recipe(recipe, target, runner, out=out, variants=variants, offline=offline, pool=pool,
                              cache=cache, echo=echo, trust_remote_code=trust_remote_code, extra=extra)
        except BuilderError as exc:
            if exc.exit_code == 2 or len(pairs) == 1:
                raise
            echo(f"[{recipe.stem} / {target}] FAILED: {exc.message}")
            return Outcome(recipe=recipe.stem, target=target, workdir=out, error=exc.message,
                           cause=getattr(exc, "cause", None), hint=exc.hint)

    with ThreadPoolExecutor(max_workers=min(len(pairs), pool.stages_at_once())) as threads:
        futures = [threads.submit(one, pair) for pair in pairs]
        try:
            outcomes = [f.result() for f in futures]
        except KeyboardInterrupt:  # only the main thread hears Ctrl-C: stop what the others run
            for f in futures:
                f.cancel()
            from builder.host.docker_api import remove_all_containers

            remove_all_containers()
            raise
    if len(pairs) > 1:
        write_status(outcomes, out)
        write_verification(outcomes, out)
        echo(f"status report: {out / 'status.md'}")
    return outcomes


def _refuse_shared_folders(pairs: list[tuple[Path, str]], out: Path) -> None:
    """Two runs of one command never share a folder: a recipe or target given twice, or two recipes of one name."""
    seen: dict[Path, Path] = {}
    for recipe, target in pairs:
        name = catalog.load_recipe(recipe, target).name
        folder = out / name / target
        if folder not in seen:
            seen[folder] = recipe
        elif seen[folder].resolve() == recipe.resolve():
            raise ConfigError(f"{recipe} on target {target} is asked for twice: both runs would write {folder}",
                              hint="name each recipe and each target once")
        else:
            raise ConfigError(f"{seen[folder]} and {recipe} are both named {name!r}: on target {target} both "
                              f"would write {folder}", hint="give each recipe its own `name:`, or run them with "
                                                            "different --out folders")


def _run_failure(outcome: Outcome) -> tuple[str, str | None]:
    """(cause, hint) of a run that failed as a whole."""
    if outcome.cause:
        return outcome.cause, outcome.hint
    return classify(StepOutcome(status="failed", error=outcome.error))


def write_status(outcomes: list[Outcome], out: Path) -> None:
    """Which model/target/variant succeeded, which failed, why, and what to try (seed 002's report);
    status.html beside it holds the same as a recipe x target x variant grid with speed-ups."""
    rows = []
    for o in outcomes:
        if o.error:
            cause, hint = _run_failure(o)
            rows.append({"recipe": o.recipe, "target": o.target, "variant": "*", "status": "failed",
                         "cause": cause, "error": o.error, "hint": hint})
        for r in o.results:
            f = r.failure
            rows.append({"recipe": o.recipe, "target": o.target, "variant": r.name, "status": r.status,
                         "cause": f and f.cause, "error": f and f.error, "hint": f and f.hint,
                         "p50_ms": r.benchmark.p50_ms if r.benchmark else None,
                         "top1_agreement": r.validation.top1_agreement if r.validation else None})
    atomic_write_bytes(out / "status.json", json.dumps(rows, indent=2).encode())
    ok = [r for r in rows if r["status"] == "ok"]
    bad = [r for r in rows if r["status"] != "ok"]
    lines = ["# Build status", "", f"{len(ok)} succeeded, {len(bad)} did not.", "", "## Succeeded", ""]
    lines += [f"- ✅ {r['recipe']} / {r['target']} / {r['variant']}" for r in ok] or ["- none"]
    lines += ["", "## Not succeeded", ""]
    lines += [f"- ❌ {r['recipe']} / {r['target']} / {r['variant']}: {r['status']}, cause `{r['cause']}`: {r['error']}"
              + (f"\n  - hint: {r['hint']}" if r["hint"] else "") for r in bad] or ["- none"]
    atomic_write_bytes(out / "status.md", ("\n".join(lines) + "\n").encode())
    runs = [{"recipe": o.recipe, "target": o.target, "variants": o.results, "error": o.error,
             "report": _report_link(o.workdir, out)} for o in outcomes]
    atomic_write_bytes(out / "status.html", html_report.matrix_page(runs).encode())


def _report_link(workdir: Path, out: Path) -> str | None:
    page = workdir / "report.html"
    return page.relative_to(out).as_posix() if page.is_file() and page.is_relative_to(out) else None


def _format_of(outcome: Outcome) -> str:
    """The format of a run's artifacts: its variants', or its target's for a run that failed before any."""
    return outcome.results[0].format if outcome.results else catalog.load_target(outcome.target).format


def write_verification(outcomes: list[Outcome], out: Path) -> None:
    """verify_<format>.csv per format of the artifacts (seed 000's verify_tflite.csv): seed 000's
    `file,ok,avg_ms,notes`, one row per artifact (a run that failed before it had any: its folder). OK, FAIL,
    or UNDECIDED when no gate was missed but one is undecided (exit code 3).

    As the seed's script writes it: no quoting, commas in notes become ";", lines one line."""
    def note(*parts) -> str:
        return " ".join(": ".join(str(p) for p in parts if p).replace(",", ";").split())

    files: dict[str, list[str]] = {}
    for o in outcomes:
        rows = files.setdefault(_format_of(o), ["file,ok,avg_ms,notes"])
        if o.error and not o.results:
            rows.append(f"{out / o.recipe / o.target},FAIL,,{note(_run_failure(o)[0], o.error)}")
        for r in o.results:
            mean = r.benchmark.mean_ms if r.benchmark else None
            f = r.failure
            missed = [f"{g.metric} = {g.value:.4g} vs {g.gate} {g.threshold}" if g.value is not None
                      else f"{g.metric} not measured" for g in (r.validation.gates if r.validation else []) if not g.passed]
            notes = "" if r.status == "ok" else note(r.status, (f and f.cause) or "; ".join(missed), f and f.error)
            ok = {"ok": "OK", "gate-undecided": "UNDECIDED", "not-validated": "NOT-VALIDATED"}.get(r.status, "FAIL")
            rows.append(f"{o.workdir / r.artifact},{ok},"
                        f"{'' if mean is None else f'{mean:.3f}'},{notes}")
    for fmt, rows in files.items():
        atomic_write_bytes(out / VERIFY_CSV.format(format=fmt), ("\n".join(rows) + "\n").encode())
