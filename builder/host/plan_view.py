"""Human-readable view of a plan (`builder plan`)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from builder.host import container_runtimes
from builder.host.inputs import planned_images
from builder.plan import Plan
from builder.stage.steps import registry
from builder.stage.steps.data import CALIBRATION_FLOOR


def data_lines(plan: Plan) -> list[str]:
    """The calibration and validation sets in distinct images, which variants calibrate, and a warning below
    the calibration floor."""
    lines = []
    for name in ("calibration", "validation"):
        dataset = getattr(plan.recipe, name)
        if dataset is None:
            continue
        images = planned_images(dataset)
        count = f"{images} distinct image(s)" if images is not None else "distinct images counted once fetched"
        calibrating = sorted({s.variant for s in plan.steps if "calibration" in s.inputs and s.variant})
        uses = f", calibrating {', '.join(calibrating)}" if name == "calibration" and calibrating else ""
        lines.append(f"{name}: {count}{uses}")
        if name == "calibration" and images is not None and not dataset.synthetic and images < CALIBRATION_FLOOR:
            lines.append(f"warning: calibration has {images} distinct image(s), fewer than {CALIBRATION_FLOOR}")
    return lines


def show_plan(plan: Plan, console: Console, cached: dict[str, str] | None = None) -> None:
    r, t = plan.recipe, plan.target
    console.print(f"[bold]{r.name}[/bold] on [bold]{t.id}[/bold]: {t.name}")
    source = f"{plan.source.name} ({plan.source.resolved_format})"
    if r.fallback and plan.source is r.source:
        source += f"; fallback: {r.fallback.name} ({r.fallback.resolved_format})"
    console.print(f"source: {source}", markup=False)
    console.print(f"images: toolchain from {t.images.toolchain.template} ({t.images.toolchain.lock}), "
                  f"device from {t.images.device.template} ({t.images.device.lock}) for {t.platform}", markup=False)
    if t.requires.container_runtime:
        runtime = container_runtimes.get(t.requires.container_runtime)
        console.print(f"requires: {runtime.title} on the device engine. {t.requires.note or ''}", markup=False)
    for line in data_lines(plan):
        console.print(line, markup=False)
    table = Table("step", "stage", "reads -> writes", *(["step cache"] if cached else []))
    for s in plan.steps:
        stage = s.stage + (" (on device)" if s.kind in t.device_only else "")
        table.add_row(s.id, stage, f"{', '.join(s.inputs.values()) or '-'} -> {', '.join(s.outputs.values()) or 'results'}",
                      *([cached[s.id]] if cached else []))
    console.print(table)
    for kind in dict.fromkeys(s.kind for s in plan.steps):
        console.print(f"  {kind}: {registry.get(kind).summary}", markup=False)
    console.print("artifacts:", markup=False)
    for v, path in plan.artifacts.items():
        console.print(f"  {v:10s} {path}  ({r.precision_of(v)}, io {r.io_dtype_of(v)})", markup=False)
    for v, why in plan.skipped.items():
        console.print(f"  {v:10s} not built: {why}", markup=False)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"outputs: <out>/{r.name}/{t.id}/ (manifest.json, results.json, results.csv, report.md, logs/)",
                  markup=False)
