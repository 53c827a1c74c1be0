"""manifest.json, results.json, results.csv, report.md and report.html from a plan and its step records.

The report names no vendor: a backend adds its own sections to report.md and report.html (`register_section`)
and its own words to the line of each machine the benchmarks ran on (`register_device_words`), read from the
`extra` sections it declares in the records.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from builder import __version__, formats, plugins
from builder.host import html_report, layer_diff_report, profile_report
from builder.host.compare import p50_noise
from builder.plan import Plan
from builder.records import (
    Agreement,
    BenchmarkRecord,
    BenchmarkResult,
    DataCount,
    DeviceFacts,
    Failure,
    LayerDiffRecord,
    ProfileRecord,
    Recommendation,
    Results,
    StepRecord,
    ValidateRecord,
    ValidationResult,
    VariantResult,
    fp32_baseline,
    write_results,
)
from builder.stage.causes import classify
from builder.stage.execute import describe_output, read_records
from builder.util import atomic_write_bytes
from builder.workdir import MANIFEST, VERSIONS

LOADGEN_COLUMNS = ("loadgen_scenario", "loadgen_validity", "loadgen_percentile_latency_ms", "loadgen_samples_per_second")
CSV_FIELDS = (
    "variant", "status", "precision", "format", "io_dtype", "size_bytes", "runtime", "threads", "runs", "emulated",
    "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_fps", "init_ms", "peak_rss_mb",
    *LOADGEN_COLUMNS,
    "photos", "top1_agreement", "top5_agreement", "top1_accuracy", "accuracy_ratio", "cosine", "max_abs_error", "snr_db",
    "source_cosine", "source_top1_agreement", "source_snr_db", "gates", "cause",
)
M = TypeVar("M", BenchmarkResult, ValidationResult)


@dataclass
class Section:
    """A backend's own section of report.md and report.html: a titled table of its figures, and notes under it."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> list[str]:
        return [f"## {self.title}", "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns),
                *("| " + " | ".join(row) + " |" for row in self.rows), *(["", *self.notes] if self.notes else [])]

    def html(self) -> str:
        return html_report.section(self.title, self.columns, self.rows, self.notes)


ReportSection = Callable[[list[VariantResult]], Section | None]
"""A backend's own section of a run's report, or None when the run has nothing of it."""
DeviceWords = Callable[[DeviceFacts], list[str]]
"""What a backend adds to the line of a machine the benchmarks ran on (its SDK, its power mode)."""
_SECTIONS: list[ReportSection] = []
_DEVICE_WORDS: list[DeviceWords] = []


def register_section(section: ReportSection) -> None:
    _SECTIONS.append(section)


def register_device_words(words: DeviceWords) -> None:
    _DEVICE_WORDS.append(words)


def loadgen_section(results: list[VariantResult]) -> Section | None:
    """LoadGen's figures per variant (benchmark.scenario single-stream or offline), or why it did not run."""
    runs = [(r.name, lg) for r in results if r.benchmark and (lg := r.benchmark.loadgen)]
    if not runs:
        return None
    rows, notes = [], []
    for name, lg in runs:
        latency = (f"p{lg.target_latency_percentile * 100:g} {_fmt(lg.percentile_latency_ms)} ms"
                   if lg.percentile_latency_ms is not None else "-")
        s = lg.settings
        used = "-" if s is None else (
            f"{_fmt(s.min_query_count)} queries, {_fmt(s.min_duration_ms)} ms" if lg.scenario == "single-stream"
            else f"{_fmt(s.samples_per_query)} samples in a query, {_fmt(s.min_duration_ms)} ms")
        rows.append([name, lg.scenario, lg.validity or "not run", latency, _fmt(lg.early_stopping_ms),
                     _fmt(lg.samples_per_second, 1), _fmt(lg.query_count), used])
        if not lg.available:
            notes.append(f"{name}: {lg.note}")
    notes.append("LoadGen's own figures, read from its logs (" + ", ".join(sorted({p for _, lg in runs for p in lg.logs or []}))
                 + "); the Variants table's p50, p90, p99 and fps are the quick harness's (our timer)."
                 if any(lg.logs for _, lg in runs) else "The Variants table's figures are the quick harness's (our timer).")
    return Section("LoadGen (MLCommons): MLPerf scenarios",
                   ["variant", "scenario", "result", "latency", "early-stopping estimate ms", "samples/s", "queries",
                    "settings used"], rows, notes)


register_section(loadgen_section)  # the core's own: before the backends' (they register when loaded)


def backend_sections(results: list[VariantResult]) -> list[Section]:
    """The sections the backends have of these results."""
    plugins.load(host=True)
    return [own for section in _SECTIONS if (own := section(results))]


def _variant_records(records: dict[str, StepRecord], variant: str) -> list[StepRecord]:
    return [r for r in records.values() if r.variant == variant]


def _artifact_files(workdir: Path, rel: str) -> list[str]:
    fmt = formats.of_file(rel)
    files = [rel, *(fmt.companion_files(rel).values() if fmt else ())]  # an IR's weights with its .xml
    return [f for f in files if (workdir / f).exists()]


def _measured(result: M | None, record: StepRecord) -> M | None:
    """A benchmark or validation result; one reused from the step cache says so, with the date it was taken."""
    if result is None or not record.cached:
        return result
    return result.model_copy(update={"cached": True, "measured": record.finished})


def made_by(plan: Plan, records: dict[str, StepRecord], variant: str) -> list[StepRecord]:
    """The records of the steps that made a variant's artifact, first to last: a step shared with another
    variant, or an `artifact.copy` of another variant's model, is followed to where the model was made."""
    producer = {rel: call for call in plan.steps for rel in call.outputs.values()}
    chain, rel = [], plan.artifacts[variant]
    while (call := producer.get(rel)) and call.id in records:
        chain.append(records[call.id])
        rel = call.inputs.get("model")
    return chain[::-1]


def data_counts(records: dict[str, StepRecord]) -> dict[str, DataCount]:
    """The calibration and validation sets as data.prepare counted them."""
    return {name: DataCount(samples=figures["samples"], images=figures.get("images", figures["samples"]),
                            labeled=figures.get("labeled", False))
            for r in records.values() if r.kind == "data.prepare" and r.status == "ok" and r.result
            for name, figures in r.result.items() if name in ("calibration", "validation")}


def _calibrated(plan: Plan, chain: list[StepRecord]) -> bool:
    """Whether a step that made the variant's artifact read the calibration set."""
    calls = {call.id: call for call in plan.steps}
    return any("calibration" in calls[r.id].inputs for r in chain)


# steps asked for beside a variant's own (kind -> what it gives): their failure fails no variant, the warnings say so
OPTIONAL = {"profile": "per-layer profile", "layer_diff": "layer diff"}


def variant_results(plan: Plan, records: dict[str, StepRecord]) -> list[VariantResult]:
    out = []
    calibration = data_counts(records).get("calibration")
    for v in plan.variants:
        recs = [r for r in _variant_records(records, v) if r.kind not in OPTIONAL]
        profile = next((r.result.profile for r in _variant_records(records, v)
                        if isinstance(r, ProfileRecord) and r.status == "ok" and r.result), None)
        diff = next((r.result.layer_diff for r in _variant_records(records, v)
                     if isinstance(r, LayerDiffRecord) and r.status == "ok" and r.result), None)
        failed = [r for r in recs if r.status != "ok"]
        bench = next((_measured(r.result.benchmark, r) for r in recs
                      if isinstance(r, BenchmarkRecord) and r.status == "ok" and r.result), None)
        validation = next((_measured(r.result.validation, r) for r in recs
                           if isinstance(r, ValidateRecord) and r.status == "ok" and r.result), None)
        chain = made_by(plan, records, v)
        conversions = [r.result for r in chain if r.status == "ok" and r.result is not None]
        status = "failed" if any(r.status == "failed" for r in recs) else ("skipped" if failed else "ok")
        failure = None
        first_failure = next((r for r in recs if r.status == "failed"), None) or (failed[0] if failed else None)
        while first_failure and first_failure.blocked_by in records:  # report the root cause, not the skip
            first_failure = records[first_failure.blocked_by]
        if first_failure:
            cause, hint = classify(first_failure, source_format=plan.source.resolved_format)
            failure = Failure(step=first_failure.id, error=first_failure.error, cause=cause, hint=hint)
            if first_failure.status == "failed":  # a step it needs failed, even one shared with other variants
                status = "failed"
        unrecorded = [c.id for c in plan.steps if c.variant in (v, None) and c.id not in records and c.kind not in OPTIONAL]
        if unrecorded and not failure:  # ok only with every step's record
            status = "failed"
            failure = Failure(step=unrecorded[0], error=f"{len(unrecorded)} step(s) left no record, e.g. "
                              f"{unrecorded[0]}: the run stopped before them", cause="no-record",
                              hint="rerun; if it happens again, the step logs and the console show where it stopped")
        outcomes = {g.outcome for g in (validation.gates if validation else [])}
        if status == "ok" and outcomes - {"pass"}:
            status = "gate-failed" if "fail" in outcomes else "gate-undecided"
        if status == "ok" and validation is None:
            status = "not-validated"
        out.append(VariantResult(
            name=v, artifact=plan.artifacts[v], format=plan.target.format, precision=plan.recipe.precision_of(v),
            io_dtype=next((c["io_dtype"] for c in reversed(conversions) if "io_dtype" in c),  # what the artifact has
                          plan.recipe.io_dtype_of(v)),
            status=status, benchmark=bench, validation=validation, conversion=conversions[-1] if conversions else None,
            layer_errors=_last(conversions, "layer_errors"), search=_last(conversions, "search"),
            profile=profile_report.with_p50(profile, bench), layer_diff=diff,
            calibrated_on=calibration if _calibrated(plan, chain) else None,
            **({"failure": failure} if failure else {})))  # a variant that built has no `failure` key
    return out


# a task's own figure (task_metrics) -> its column
TASK_FIGURES = {"detection_f1": "detection F1", "map50": "mAP@.5", "map": "mAP@.5:.95", "miou": "mIoU", "psnr_db": "PSNR dB",
                "cer": "CER"}


def _last(conversions: list[dict], key: str):
    """What the last step that reported `key` (a search's candidates, per-layer errors) said."""
    return next((c[key] for c in reversed(conversions) if c.get(key)), None)


def _search_lines(results: list[VariantResult]) -> list[str]:
    lines = []
    for r in results:
        if not r.search:
            continue
        lines += ["", f"## How `{r.name}` was chosen", "", f"{r.search.why}.", "",
                  "| candidate | built | p50 ms (quick) | size KB | top-1 agr. | cosine | gates | kept in float |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in r.search.candidates:
            a = c.agreement
            gates = ", ".join(f"{g.gate} {g.outcome}" for g in c.gates) or "-"
            kept = f"{len(c.kept_float)} layer(s)" if c.kept_float else "-"
            lines.append("| " + " | ".join([
                f"**{c.name}**" if c.name == r.search.chosen else c.name, c.status if c.status == "ok" else c.error or "",
                _fmt(c.p50_ms), _fmt(c.size_bytes / 1024, 1) if c.size_bytes else "-",
                rate_with_interval(a, "top1_agreement"), _fmt(_of(a, "cosine"), 5), gates, kept]) + " |")
        if effect := (r.conversion or {}).get("effect_in_float"):
            lines += ["", "Layers ranked by their effect in float (" + effect["metric"] + "): "
                      + ", ".join(f"`{e['name']}` {e['value']}" for e in effect["layers"])]
    return lines


def _versions(workdir: Path) -> dict:
    folder = workdir / VERSIONS
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def _step_warnings(records: dict[str, StepRecord]) -> list[str]:
    """What the steps warn of (a measuring step's typed result has no warnings), and the profiles and layer diffs
    that failed (a variant is reported without them)."""
    return [w for r in records.values() if isinstance(r.result, dict) for w in r.result.get("warnings", [])] + [
        f"{r.id} failed, {r.variant} has no {OPTIONAL[r.kind]}: {r.error}" for r in records.values()
        if r.kind in OPTIONAL and r.status == "failed"]


def _made_by(recs: list[StepRecord]) -> dict:
    """Which conversion path made an artifact, where its converter names one, and the edits made to its source
    (e.g. a signature added)."""
    conv = next((conv for r in reversed(recs)
                 if r.status == "ok" and (conv := (r.result or {}).get("conversion") or {}).get("path")), {})
    made = {"path": conv["path"]} if conv.get("path") else {}
    if conv.get("prepared"):
        made["source_edits"] = conv["prepared"]
    return made


def manifest(plan: Plan, workdir: Path, records: dict[str, StepRecord], run: dict) -> dict:
    artifacts = []
    for v in plan.variants:
        made = _made_by(made_by(plan, records, v))
        for rel in _artifact_files(workdir, plan.artifacts[v]):
            artifacts.append(describe_output(workdir, rel) | {"variant": v, "format": plan.target.format,
                                                              "precision": plan.recipe.precision_of(v)} | made)
    return {
        "schema": 1,
        "tool": {"name": "edge-builder", "version": __version__},
        "recipe": {"name": plan.recipe.name, "path": run.get("recipe_path"), "sha256": run.get("recipe_sha256")},
        "target": {"id": plan.target.id, "platform": plan.target.platform, "format": plan.target.format,
                   "runtime": plan.target.runtime},
        "runner": run.get("runner"),
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
                 "python": platform.python_version()},
        "images": run.get("images", {}),
        "stages": run.get("stages", {}),
        **({"collected_from": run["collected_from"]} if run.get("collected_from") else {}),
        "tool_versions": _versions(workdir),
        "source": {"name": plan.source.name, "format": plan.source.resolved_format},
        "sources": run.get("sources", []),
        "artifacts": artifacts,
        "steps": [{"id": r.id, "name": r.kind, "variant": r.variant, "stage": r.stage, "status": r.status,
                   "seconds": r.seconds, **({"error": r.error} if r.error else {}),
                   **({"cached": True, "finished": r.finished} if r.cached else {})}
                  for r in records.values()],
        "timings": run.get("timings", {}),
        "started": run.get("started"),
        "finished": run.get("finished"),
        "warnings": list(dict.fromkeys(run.get("warnings", []) + _step_warnings(records))),
    }


def _of(model: BaseModel | None, name: str):
    """A figure of a result that may be missing (not built, not validated), or None."""
    return getattr(model, name, None) if model is not None else None


def gates_word(gates: list) -> str:
    """A variant's gates in one word: pass, FAIL (any missed), UNDECIDED (none missed, some undecided), or ''."""
    outcomes = {g.outcome for g in gates}
    return "" if not gates else "FAIL" if "fail" in outcomes else "UNDECIDED" if "undecided" in outcomes else "pass"


def _csv_row(entry: VariantResult) -> dict:
    bench, val = entry.benchmark, entry.validation
    gates = val.gates if val else []
    return {
        **{k: getattr(entry, k) for k in ("status", "precision", "format", "io_dtype")},
        "variant": entry.name,
        **{k: _of(bench, k) for k in CSV_FIELDS if k in BenchmarkResult.model_fields},
        **{k: _of(_of(bench, "loadgen"), k.removeprefix("loadgen_")) for k in LOADGEN_COLUMNS},
        **{k: _of(val, k) for k in ("photos", "top1_agreement", "top5_agreement", "top1_accuracy", "accuracy_ratio",
                                    "cosine", "max_abs_error", "snr_db")},
        **{f"source_{k}": _of(_of(val, "source"), k) for k in ("cosine", "top1_agreement", "snr_db")},
        "gates": gates_word(gates),
        "cause": entry.failure.cause if entry.failure else "",
    }


def _interval(bounds: tuple[float, float]) -> str:
    return f"[{bounds[0]:.2f}, {bounds[1]:.2f}]"


def rate_with_interval(figures: BaseModel | None, name: str) -> str:
    """A rate with its 95% interval: 0.920 [0.81, 0.97]."""
    bounds = _of(figures, f"{name}_interval")
    return _fmt(_of(figures, name)) + (f" {_interval(bounds)}" if bounds else "")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def estimate_words(bench: BenchmarkResult) -> str:
    """Whose estimate the timings are, and for what: "<tool>'s estimate for the NPU"."""
    return ((f"{bench.estimated_by}'s estimate" if bench.estimated_by else "an estimate")
            + (f" for the {bench.estimated_for}" if bench.estimated_for else ""))


def _other_measurements(results: list[VariantResult]) -> list[str]:
    """Async throughput, a vendor's own tools and an estimate's origin, per variant."""
    lines = []
    for r in results:
        b = r.benchmark
        if b is None:
            continue
        parts = []
        if b.async_:
            parts.append(f"async throughput {_fmt(b.async_.throughput_fps, 1)} fps ({b.async_.requests} requests)")
        for tool, figures in (b.tools or {}).items():  # a tool's own figures, as it reports them
            if figures.get("error"):
                parts.append(f"{tool}: not run ({figures['error']})")
                continue
            parts.append(f"{tool}: mean {_fmt(figures.get('mean_ms'))} ms, {_fmt(figures.get('throughput_fps'), 1)} fps")
            if vs := (b.vs_tools or {}).get(tool):  # ours within 5% of the tool, or why not
                parts[-1] += f", our p50 / its {_fmt(vs.p50_ratio)}" + (f" ({vs.why})" if vs.why else "")
        if b.estimate:
            parts.append(f"timings are {estimate_words(b)}, not a measurement")
        if parts:
            lines.append(f"- {r.name}: " + "; ".join(parts))
    return lines


def measured_on(bench: BenchmarkResult | None) -> str:
    """Where a benchmark's figures come from, for the variants table."""
    if not bench:
        return "-"
    if bench.estimate:
        return "estimate (not measured)"
    device = bench.device.device if bench.device else "host"
    if bench.emulated:
        return f"{device}, emulated"
    if bench.throttled:
        device += ", THROTTLED"
    return device if bench.on_target else f"{device}, not the target"


def _device_lines(results: list[VariantResult]) -> list[str]:
    """One line per machine the benchmarks ran on: name, engine, CPU, cores, memory, OS, board, and what the
    backends add."""
    seen = {}
    for r in results:
        if r.benchmark and (d := r.benchmark.device):
            seen.setdefault(d.device, d)
    lines = []
    plugins.load(host=True)
    for name, d in seen.items():
        facts = [d.board_model, d.cpu_model, f"{d.logical_cores} cores" if d.logical_cores else None,
                 f"{d.memory_total_bytes / 2**30:.1f} GiB" if d.memory_total_bytes else None,
                 d.os, d.kernel, *(word for words in _DEVICE_WORDS for word in words(d))]
        lines.append(f"- device `{name}` via {d.engine}: " + ", ".join(f for f in facts if f))
    return lines + [""] if lines else []


def _p50(r: VariantResult) -> float | None:
    return r.benchmark.p50_ms if r.benchmark else None


def _flags(r: VariantResult, base: VariantResult | None) -> list[str]:
    p50 = _p50(r)
    flags = {"failed": ["failed"], "skipped": ["not built"], "gate-failed": ["fails a gate"],
             "gate-undecided": ["gate undecided"], "not-validated": ["not validated"]}.get(r.status, [])
    if not p50 and r.status == "ok":
        flags.append("not timed")
    if base and r is not base and p50 and p50 > (fp32 := base.benchmark.p50_ms):
        beyond_noise = p50 - fp32 > p50_noise(base.benchmark, r.benchmark)
        flags.append(f"{'slower' if beyond_noise else 'maybe slower'} than fp32 (p50 {p50:.3f} ms vs {fp32:.3f} ms"
                     + ("" if beyond_noise else ", within the benchmarks' noise") + ")")
    return flags


def _photos_needed(r: VariantResult) -> int | None:
    """The distinct photos that would decide every undecided gate of a variant (None: no number would)."""
    needs = [g.photos_needed for g in r.validation.gates if g.outcome == "undecided"] if r.validation else []
    return None if not needs or None in needs else max(needs)


def recommendation(results: list[VariantResult]) -> Recommendation:
    """The fastest variant that meets every gate on this target, with its speed-up and size against fp32;
    every other variant that is slower than fp32 or misses a gate is flagged. A faster variant whose only
    problem is an undecided gate is recommended provisionally, with the photos that would decide it, and the
    fastest decided one beside it."""
    base = fp32_baseline(results)
    decided = min((r for r in results if r.status == "ok" and _p50(r)), key=_p50, default=None)
    undecided = min((r for r in results if r.status == "gate-undecided" and _p50(r)), key=_p50, default=None)
    best = undecided if undecided and (not decided or _p50(undecided) < _p50(decided)) else decided
    rec = {"variant": best and best.name, "baseline": base and base.name,
           "flags": {r.name: f for r in results if (f := _flags(r, base))}}
    if best is undecided and best:
        rec |= {"provisional": True, "photos_needed": _photos_needed(best), "otherwise": decided and decided.name}
    if best:
        b = best.benchmark
        rec |= {"p50_ms": b.p50_ms, "size_bytes": b.size_bytes,
                "gates_checked": len(best.validation.gates) if best.validation else 0,
                "emulated": b.emulated, "estimate": b.estimate}
    if best and base:
        bb = base.benchmark
        rec["speedup_vs_fp32"] = bb.p50_ms / best.benchmark.p50_ms
        if bb.size_bytes and rec["size_bytes"]:
            rec["size_vs_fp32"] = rec["size_bytes"] / bb.size_bytes
    return Recommendation(**rec)


def recommendation_lines(rec: Recommendation) -> list[str]:
    lines = ["## Recommendation", ""]
    if not rec.variant:
        lines.append("**No variant is built, timed and within every gate on this target.**")
    else:
        kb = f", {rec.size_bytes / 1024:.1f} KB" if rec.size_bytes else ""
        line = f"**Ship `{rec.variant}`{' provisionally' if rec.provisional else ''}**: p50 {rec.p50_ms:.3f} ms{kb}"
        if rec.speedup_vs_fp32 is not None:
            line += f"; {rec.speedup_vs_fp32:.2f}x the speed of {rec.baseline}"
            if rec.size_vs_fp32 is not None:
                line += f", {rec.size_vs_fp32:.2f}x its size"
        lines.append(line + ".")
        if rec.provisional:
            lines.append(f"It passes every gate that is decided, but some are undecided (below): "
                         f"{_deciding(rec.photos_needed)}. Until then, the fastest variant with every gate passed "
                         f"is {f'`{rec.otherwise}`' if rec.otherwise else 'none'}.")
        if not rec.gates_checked:
            lines.append("The recipe sets no accuracy gate that this variant was checked against.")
        if rec.emulated or rec.estimate:
            lines.append("The timings it is chosen by are " + ("emulated." if rec.emulated else "an estimate."))
    lines += [""] + [f"- {name}: **{', '.join(flags)}**" for name, flags in rec.flags.items()]
    return lines + [""]


def _deciding(photos: int | None) -> str:
    return (f"about {photos} distinct validation photos would decide them" if photos
            else "no number of photos would decide them, the figure sits on the threshold")


def _samples(count: DataCount) -> str:
    return f" ({count.samples} samples with crops and flips)" if count.samples != count.images else ""


def _data_lines(data: dict[str, DataCount], results: list[VariantResult]) -> list[str]:
    """What the verdicts stand on: distinct images, not crops, in each set."""
    lines = []
    if cal := data.get("calibration"):
        calibrated = [r.name for r in results if r.calibrated_on]
        lines.append(f"- calibration: **{cal.images} distinct images**{_samples(cal)}"
                     + (f", calibrating {', '.join(calibrated)}" if calibrated else ""))
    if val := data.get("validation"):
        labeled = next((v.labeled_photos for r in results if (v := r.validation) and v.labeled_photos), None)
        lines.append(f"- validation: **{val.images} distinct images**{_samples(val)}"
                     + (f", {labeled} of them labeled" if labeled else "")
                     + "; intervals count distinct images, not samples")
    return lines + [""] if lines else []


def markdown(plan: Plan, results: list[VariantResult], man: dict, rec: Recommendation,
             data: dict[str, DataCount]) -> str:
    lines = [f"# {plan.recipe.name} on {plan.target.id}", "", *recommendation_lines(rec),
             plan.recipe.description.strip(), "",
             f"- target: {plan.target.name} ({plan.target.platform}, {plan.target.format} via {plan.target.runtime})",
             f"- runner: {man['runner']}; source: {man['source']['name']} ({man['source']['format']})", ""]
    if man["warnings"]:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in man["warnings"]] + [""]
    lines += _data_lines(data, results)
    emulated = any(r.benchmark and r.benchmark.emulated for r in results)
    off_target = any(b and not b.estimate and not b.emulated and not b.on_target for b in (r.benchmark for r in results))
    lines += _device_lines(results)
    tasks = [f for f in TASK_FIGURES if any(_of(r.validation, f) is not None for r in results)]
    sourced = [(f, f in Agreement.model_fields) for f in tasks]  # mAP is against ground truth: no source column
    task_columns = "".join(f" | {TASK_FIGURES[f]}" + (f" | source {TASK_FIGURES[f]}" if s else "") for f, s in sourced)
    lines += ["## Variants", "",
              "| variant | status | measured on | size KB | p50 ms | p90 ms | p99 ms | fps | peak MB "
              f"| top-1 agr. | top-5 agr. | accuracy | accuracy kept | cosine | SNR dB | source cosine | source top-1"
              f"{task_columns} |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * task_columns.count(" | ")]
    for r in results:
        b, v = r.benchmark, r.validation
        src = _of(v, "source")
        lines.append("| " + " | ".join([
            r.name, r.status, measured_on(b), _fmt((b.size_bytes or 0) / 1024, 1) if b else "-",
            _fmt(_of(b, "p50_ms")), _fmt(_of(b, "p90_ms")), _fmt(_of(b, "p99_ms")), _fmt(_of(b, "throughput_fps"), 1),
            _fmt(_of(b, "peak_rss_mb"), 1), rate_with_interval(v, "top1_agreement"), rate_with_interval(v, "top5_agreement"),
            rate_with_interval(v, "top1_accuracy"), rate_with_interval(v, "accuracy_ratio"), _fmt(_of(v, "cosine"), 5),
            _fmt(_of(v, "snr_db"), 1),
            _fmt(_of(src, "cosine"), 5), rate_with_interval(src, "top1_agreement"),
            *[x for f, s in sourced for x in [_fmt(_of(v, f), 4), *([_fmt(_of(src, f), 4)] if s else [])]]]) + " |")
    if any(r.benchmark and not r.benchmark.estimate for r in results):
        lines += ["", "p50, p90, p99 and fps: the quick harness (our timer: a warm-up, then `benchmark.runs` timed "
                  "inferences), not an MLPerf scenario (`benchmark.scenario: single-stream | offline` adds LoadGen's)."]
    if any(r.validation and r.validation.source for r in results):
        lines += ["", "Agreement and cosine compare each variant with the fp32 artifact; the source columns compare "
                  "it with the source model run in its own framework."]
    lines += _search_lines(results)
    extra = _other_measurements(results)
    if extra:
        lines += ["", "## Other measurements (side by side with the table above)", ""] + extra
    for section in backend_sections(results):
        lines += ["", *section.markdown()]
    if profiled := profile_report.markdown(results):
        lines += ["", *profiled]
    if diffed := layer_diff_report.markdown(results):
        lines += ["", *diffed]
    if emulated:
        lines += ["", "**Timings are EMULATED (QEMU on a different host architecture): they are not device timings.**"]
    for r in results:
        if r.benchmark and r.benchmark.throttled:
            lines += ["", f"**{r.name} was timed while the device reported {', '.join(r.benchmark.throttled)}: "
                      "its figures are not the device's best (cooling, power supply; see thermal_before/after in "
                      "results.json).**"]
    if off_target:
        lines += ["", f"**Timings marked `not the target` were taken on a machine that is not a {plan.target.platform} "
                  f"device: they are not comparable with the target's own figures or estimates.**"]
    fallbacks = [(r.name, ops) for r in results if r.precision in ("int8", "int16x8")  # a converter's own report
                 and (ops := ((r.conversion or {}).get("conversion") or {}).get("float_ops"))]
    if fallbacks:
        lines += ["", "## Not fully quantized", ""]
        lines += [f"- {name}: ops left in float: {', '.join(ops)}" for name, ops in fallbacks]
    paths = [(r.name, conv["path"]) for r in results if (conv := r.conversion or {}).get("path")]
    if paths:
        lines += ["", "## How each variant was made", ""] + [f"- {name}: {path}" for name, path in paths]
    stored = [(r.name, kind) for r in results if (kind := (r.conversion or {}).get("weights_stored_as"))]
    lines += [f"- {name}: the source stores its weights as {kind}; this artifact has them as dense fp32"
              for name, kind in stored]
    failures = [(r.name, r.failure) for r in results if r.failure]
    if failures:
        lines += ["", "## Failures", ""]
        for name, f in failures:
            hint = f" Hint: {f.hint}" if f.hint else ""
            lines.append(f"- **{name}**: `{f.cause}` in {f.step}: {f.error}{hint}")
    gates = [(r.name, g) for r in results for g in (r.validation.gates if r.validation else []) if not g.passed]
    if gates:
        lines += ["", "## Accuracy gates missed or undecided", ""]
        lines += [f"- {name}: {g.metric} = {_fmt(g.value, 4)}, gate {g.gate} {g.threshold}"
                  + (f": UNDECIDED, the 95% interval {_interval(g.interval)} straddles it; "
                     + (f"about {g.photos_needed} distinct validation photos would decide it" if g.photos_needed
                        else "no number of photos would decide it") if g.outcome == "undecided" else "")
                  for name, g in gates]
    if plan.skipped:
        lines += ["", "## Not built", ""] + [f"- {v}: {why}" for v, why in plan.skipped.items()]
    lines += ["", "## Steps", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['id']} | {s['status']}{' (cached, ran ' + s['finished'] + ')' if s.get('cached') else ''} "
              f"| {s['seconds']:.1f} |" for s in man["steps"]]
    lines += ["", "Plots: `report.html`. Machine-readable: `manifest.json`, `results.json`, `results.csv`; "
              "per-step logs in `logs/`.", ""]
    return "\n".join(lines)


def write(plan: Plan, workdir: Path, run: dict) -> list[VariantResult]:
    """Write the five report files; return the per-variant results (results.json's `variants`)."""
    records = read_records(workdir)
    results = variant_results(plan, records)
    man = manifest(plan, workdir, records, run)
    atomic_write_bytes(workdir / MANIFEST, json.dumps(man, indent=2).encode())
    rec = recommendation(results)
    data = data_counts(records)
    payload = Results(recipe=plan.recipe.name, target=plan.target.id, recommendation=rec, variants=results,
                      data=data, skipped=plan.skipped, warnings=man["warnings"])
    write_results(workdir / "results.json", payload)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_csv_row(r) for r in results)
    atomic_write_bytes(workdir / "results.csv", buf.getvalue().encode())
    atomic_write_bytes(workdir / "report.md", markdown(plan, results, man, rec, data).encode())
    atomic_write_bytes(workdir / "report.html",
                       html_report.run_page(payload, [s.html() for s in backend_sections(results)]
                                            + profile_report.html(results) + layer_diff_report.html(results)).encode())
    return results
