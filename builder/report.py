"""manifest.json, results.json, results.csv, report.md and report.html from a plan and its step records."""

from __future__ import annotations

import csv
import io
import json
import platform
import socket
from pathlib import Path

from builder import __version__
from builder.causes import classify
from builder.compare import p50_noise
from builder.execute import describe_output, read_records
from builder.plan import Plan
from builder.util import atomic_write_bytes
from builder.workdir import MANIFEST, VERSIONS

CSV_FIELDS = (
    "variant", "status", "precision", "format", "io_dtype", "size_bytes", "runtime", "threads", "runs", "emulated",
    "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_fps", "init_ms", "peak_rss_mb",
    "top1_agreement", "top5_agreement", "top1_accuracy", "cosine", "max_abs_error", "snr_db",
    "source_cosine", "source_top1_agreement", "source_snr_db", "gates", "cause",
)


def _variant_records(records: dict, variant: str) -> list[dict]:
    return [r for r in records.values() if r.get("variant") == variant]


def _artifact_files(workdir: Path, rel: str) -> list[str]:
    files = [rel]
    if rel.endswith(".xml"):
        files.append(rel[:-4] + ".bin")
    return [f for f in files if (workdir / f).exists()]


def _measured(record: dict, name: str) -> dict:
    """A benchmark or validation result; one reused from the step cache says so, with the date it was taken."""
    result = record["result"][name]
    return result | {"cached": True, "measured": record.get("finished")} if record.get("cached") else result


def made_by(plan: Plan, records: dict, variant: str) -> list[dict]:
    """The records of the steps that made a variant's artifact, first to last: a step shared with another
    variant, or an `artifact.copy` of another variant's model, is followed to where the model was made."""
    producer = {rel: call for call in plan.steps for rel in call.outputs.values()}
    chain, rel = [], plan.artifacts[variant]
    while (call := producer.get(rel)) and call.id in records:
        chain.append(records[call.id])
        rel = call.inputs.get("model")
    return chain[::-1]


def variant_results(plan: Plan, records: dict) -> list[dict]:
    out = []
    for v in plan.variants:
        recs = _variant_records(records, v)
        failed = [r for r in recs if r["status"] != "ok"]
        bench = next((_measured(r, "benchmark") for r in recs if r["kind"] == "benchmark" and r["status"] == "ok"), None)
        validation = next((_measured(r, "validation") for r in recs if r["kind"] == "validate" and r["status"] == "ok"),
                          None)
        conversions = [r["result"] for r in made_by(plan, records, v) if r["status"] == "ok"]
        entry = {
            "name": v,
            "artifact": plan.artifacts[v],
            "format": plan.target.format,
            "precision": plan.recipe.precision_of(v),
            "io_dtype": next((c["io_dtype"] for c in reversed(conversions) if "io_dtype" in c),  # what the artifact has
                             plan.recipe.io_dtype_of(v)),
            "status": "failed" if any(r["status"] == "failed" for r in recs) else ("skipped" if failed else "ok"),
            "benchmark": bench,
            "validation": validation,
            "conversion": conversions[-1] if conversions else None,
        }
        first_failure = next((r for r in recs if r["status"] == "failed"), None) or (failed[0] if failed else None)
        while first_failure and first_failure.get("blocked_by") in records:  # report the root cause, not the skip
            first_failure = records[first_failure["blocked_by"]]
        if first_failure:
            cause, hint = classify(first_failure, source_format=plan.source.resolved_format)
            entry["failure"] = {"step": first_failure["id"], "error": first_failure.get("error"), "cause": cause, "hint": hint}
            if first_failure["status"] == "failed":  # a step it needs failed, even one shared with other variants
                entry["status"] = "failed"
        outcomes = {g.get("outcome", "pass" if g["passed"] else "fail") for g in (validation or {}).get("gates", [])}
        if entry["status"] == "ok" and outcomes - {"pass"}:
            entry["status"] = "gate-failed" if "fail" in outcomes else "gate-undecided"
        out.append(entry)
    return out


def _versions(workdir: Path) -> dict:
    folder = workdir / VERSIONS
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def _step_warnings(records: dict) -> list[str]:
    return [w for r in records.values() for w in (r.get("result") or {}).get("warnings", [])]


def _made_by(recs: list[dict]) -> dict:
    """Which conversion path made a TFLite artifact, and the edits made to its source (e.g. a signature added)."""
    conv = next((r["result"].get("conversion") or {} for r in reversed(recs)
                 if r["status"] == "ok" and r["kind"] == "convert.tflite"), {})
    made = {"path": conv["path"]} if conv.get("path") else {}
    if conv.get("prepared"):
        made["source_edits"] = conv["prepared"]
    return made


def manifest(plan: Plan, workdir: Path, records: dict, run: dict) -> dict:
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
        "steps": [{"id": r["id"], "name": r["kind"], "variant": r.get("variant"), "stage": r["stage"],
                   "status": r["status"], "seconds": r["seconds"], **({"error": r["error"]} if r.get("error") else {}),
                   **({"cached": True, "finished": r.get("finished")} if r.get("cached") else {})}
                  for r in records.values()],
        "timings": run.get("timings", {}),
        "started": run.get("started"),
        "finished": run.get("finished"),
        "warnings": list(dict.fromkeys(run.get("warnings", []) + _step_warnings(records))),
    }


def _csv_row(entry: dict) -> dict:
    bench = entry.get("benchmark") or {}
    val = entry.get("validation") or {}
    gates = val.get("gates") or []
    return {
        **{k: entry.get(k) for k in ("status", "precision", "format", "io_dtype")},
        "variant": entry["name"],
        **{k: bench.get(k) for k in CSV_FIELDS if k in bench},
        **{k: val.get(k) for k in ("top1_agreement", "top5_agreement", "top1_accuracy", "cosine", "max_abs_error", "snr_db")},
        **{f"source_{k}": (val.get("source") or {}).get(k) for k in ("cosine", "top1_agreement", "snr_db")},
        "gates": ("pass" if all(g["passed"] for g in gates) else "FAIL") if gates else "",
        "cause": (entry.get("failure") or {}).get("cause", ""),
    }


def _interval(bounds: list[float]) -> str:
    return f"[{bounds[0]:.2f}, {bounds[1]:.2f}]"


def _rate(figures: dict, name: str) -> str:
    """A rate with its 95% interval: 0.920 [0.81, 0.97]."""
    bounds = figures.get(f"{name}_interval")
    return _fmt(figures.get(name)) + (f" {_interval(bounds)}" if bounds else "")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _other_measurements(results: list[dict]) -> list[str]:
    """Async throughput and external tools (benchmark_app, benchmark_model, Vela's estimate) per variant."""
    lines = []
    for r in results:
        b = r.get("benchmark") or {}
        parts = []
        if b.get("async"):
            parts.append(f"async throughput {_fmt(b['async']['throughput_fps'], 1)} fps ({b['async']['requests']} requests)")
        for tool, figures in (b.get("tools") or {}).items():
            parts.append(f"{tool}: mean {_fmt(figures.get('mean_ms'))} ms, {_fmt(figures.get('throughput_fps'), 1)} fps")
            if vs := (b.get("vs_tools") or {}).get(tool):  # ours within 5% of the tool, or why not
                parts[-1] += f", our p50 / its {_fmt(vs['p50_ratio'])}" + (f" ({vs['why']})" if vs["why"] else "")
        if b.get("estimate"):
            parts.append("timings are Vela's estimate for the NPU, not a measurement")
        if parts:
            lines.append(f"- {r['name']}: " + "; ".join(parts))
    return lines


def measured_on(bench: dict) -> str:
    """Where a benchmark's figures come from, for the variants table."""
    if not bench:
        return "-"
    if bench.get("estimate"):
        return "estimate (not measured)"
    device = (bench.get("device") or {}).get("device", "host")
    if bench.get("emulated"):
        return f"{device}, emulated"
    return device if bench.get("on_target", True) else f"{device}, not the target"


def _device_lines(results: list[dict]) -> list[str]:
    """One line per machine the benchmarks ran on: name, engine, CPU, cores, memory, OS, board."""
    seen: dict[str, dict] = {}
    for r in results:
        d = (r.get("benchmark") or {}).get("device")
        if d:
            seen.setdefault(d["device"], d)
    lines = []
    for name, d in seen.items():
        facts = [d.get("board_model"), d.get("cpu_model"), f"{d['logical_cores']} cores" if d.get("logical_cores") else None,
                 f"{d['memory_total_bytes'] / 2**30:.1f} GiB" if d.get("memory_total_bytes") else None,
                 d.get("os"), d.get("kernel"), d.get("l4t") and f"L4T {d['l4t']}", d.get("jetson_power_mode")]
        lines.append(f"- device `{name}` via {d.get('engine')}: " + ", ".join(f for f in facts if f))
    return lines + [""] if lines else []


def fp32_baseline(results: list[dict]) -> dict | None:
    """The fp32 variant with a timing: what speed-ups and sizes are measured against."""
    timed = [r for r in results if r["precision"] == "fp32" and (r.get("benchmark") or {}).get("p50_ms")]
    return next((r for r in timed if r["name"] == "fp32"), timed[0] if timed else None)


def _flags(r: dict, base: dict | None) -> list[str]:
    p50 = (r.get("benchmark") or {}).get("p50_ms")
    flags = {"failed": ["failed"], "skipped": ["not built"], "gate-failed": ["fails a gate"],
             "gate-undecided": ["gate undecided"]}.get(r["status"], [])
    if not p50 and r["status"] == "ok":
        flags.append("not timed")
    if base and r is not base and p50 and p50 > (fp32 := base["benchmark"]["p50_ms"]):
        beyond_noise = p50 - fp32 > p50_noise(base["benchmark"], r["benchmark"])
        flags.append(f"{'slower' if beyond_noise else 'maybe slower'} than fp32 (p50 {p50:.3f} ms vs {fp32:.3f} ms"
                     + ("" if beyond_noise else ", within the benchmarks' noise") + ")")
    return flags


def recommendation(results: list[dict]) -> dict:
    """The fastest variant that meets every gate on this target, with its speed-up and size against fp32;
    every other variant that is slower than fp32 or misses a gate is flagged."""
    base = fp32_baseline(results)
    timed = [r for r in results if r["status"] == "ok" and (r.get("benchmark") or {}).get("p50_ms")]
    best = min(timed, key=lambda r: r["benchmark"]["p50_ms"], default=None)
    rec = {"variant": best and best["name"], "baseline": base and base["name"],
           "flags": {r["name"]: f for r in results if (f := _flags(r, base))}}
    if best:
        b = best["benchmark"]
        rec |= {"p50_ms": b["p50_ms"], "size_bytes": b.get("size_bytes"),
                "gates_checked": len((best.get("validation") or {}).get("gates") or []),
                "emulated": bool(b.get("emulated")), "estimate": bool(b.get("estimate"))}
    if best and base:
        bb = base["benchmark"]
        rec["speedup_vs_fp32"] = bb["p50_ms"] / best["benchmark"]["p50_ms"]
        if bb.get("size_bytes") and rec["size_bytes"]:
            rec["size_vs_fp32"] = rec["size_bytes"] / bb["size_bytes"]
    return rec


def _recommendation_lines(rec: dict) -> list[str]:
    lines = ["## Recommendation", ""]
    if not rec["variant"]:
        lines.append("**No variant is built, timed and within every gate on this target.**")
    else:
        kb = f", {rec['size_bytes'] / 1024:.1f} KB" if rec.get("size_bytes") else ""
        line = f"**Ship `{rec['variant']}`**: p50 {rec['p50_ms']:.3f} ms{kb}"
        if rec.get("speedup_vs_fp32") is not None:
            line += f"; {rec['speedup_vs_fp32']:.2f}x the speed of {rec['baseline']}"
            if rec.get("size_vs_fp32") is not None:
                line += f", {rec['size_vs_fp32']:.2f}x its size"
        lines.append(line + ".")
        if not rec["gates_checked"]:
            lines.append("The recipe sets no accuracy gate that this variant was checked against.")
        if rec["emulated"] or rec["estimate"]:
            lines.append("The timings it is chosen by are " + ("emulated." if rec["emulated"] else "an estimate."))
    lines += [""] + [f"- {name}: **{', '.join(flags)}**" for name, flags in rec["flags"].items()]
    return lines + [""]


def markdown(plan: Plan, results: list[dict], man: dict, rec: dict) -> str:
    lines = [f"# {plan.recipe.name} on {plan.target.id}", "", *_recommendation_lines(rec),
             plan.recipe.description.strip(), "",
             f"- target: {plan.target.name} ({plan.target.platform}, {plan.target.format} via {plan.target.runtime})",
             f"- runner: {man['runner']}; source: {man['source']['name']} ({man['source']['format']})", ""]
    if man["warnings"]:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in man["warnings"]] + [""]
    emulated = any((r.get("benchmark") or {}).get("emulated") for r in results)
    off_target = any(b and not b.get("estimate") and not b.get("emulated") and b.get("on_target") is False
                     for b in (r.get("benchmark") for r in results))
    lines += _device_lines(results)
    lines += ["## Variants", "",
              "| variant | status | measured on | size KB | p50 ms | p90 ms | p99 ms | fps | peak MB "
              "| top-1 agr. | top-5 agr. | accuracy | cosine | SNR dB | source cosine | source top-1 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        b, v = r.get("benchmark") or {}, r.get("validation") or {}
        src = v.get("source") or {}
        lines.append("| " + " | ".join([
            r["name"], r["status"], measured_on(b), _fmt((b.get("size_bytes") or 0) / 1024, 1) if b else "-",
            _fmt(b.get("p50_ms")), _fmt(b.get("p90_ms")), _fmt(b.get("p99_ms")), _fmt(b.get("throughput_fps"), 1),
            _fmt(b.get("peak_rss_mb"), 1), _rate(v, "top1_agreement"), _rate(v, "top5_agreement"),
            _rate(v, "top1_accuracy"), _fmt(v.get("cosine"), 5), _fmt(v.get("snr_db"), 1),
            _fmt(src.get("cosine"), 5), _rate(src, "top1_agreement")]) + " |")
    if any(v.get("source") for v in (r.get("validation") or {} for r in results)):
        lines += ["", "Agreement and cosine compare each variant with the fp32 artifact; the source columns compare "
                  "it with the source model run in its own framework."]
    extra = _other_measurements(results)
    if extra:
        lines += ["", "## Other measurements (side by side with the table above)", ""] + extra
    if emulated:
        lines += ["", "**Timings are EMULATED (QEMU on a different host architecture): they are not device timings.**"]
    if off_target:
        lines += ["", f"**Timings marked `not the target` were taken on a machine that is not a {plan.target.platform} "
                  f"device: they are not comparable with the target's own figures or estimates.**"]
    fallbacks = [(r["name"], ops) for r in results if r["precision"] in ("int8", "int16x8")
                 and (ops := ((r.get("conversion") or {}).get("conversion") or {}).get("float_ops"))]
    if fallbacks:
        lines += ["", "## Not fully quantized", ""]
        lines += [f"- {name}: ops left in float: {', '.join(ops)}" for name, ops in fallbacks]
    paths = [(r["name"], conv["path"]) for r in results if (conv := r.get("conversion") or {}).get("path")]
    if paths:
        lines += ["", "## How each variant was made", ""] + [f"- {name}: {path}" for name, path in paths]
    stored = [(r["name"], kind) for r in results if (kind := (r.get("conversion") or {}).get("weights_stored_as"))]
    lines += [f"- {name}: the source stores its weights as {kind}; this artifact has them as dense fp32"
              for name, kind in stored]
    failures = [r for r in results if r.get("failure")]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            f = r["failure"]
            hint = f" Hint: {f['hint']}" if f["hint"] else ""
            lines.append(f"- **{r['name']}**: `{f['cause']}` in {f['step']}: {f['error']}{hint}")
    gates = [(r["name"], g) for r in results for g in (r.get("validation") or {}).get("gates", []) if not g["passed"]]
    if gates:
        lines += ["", "## Accuracy gates missed or undecided", ""]
        lines += [f"- {name}: {g['metric']} = {_fmt(g['value'], 4)}, gate {g['gate']} {g['threshold']}"
                  + (f": UNDECIDED, the 95% interval {_interval(g['interval'])} straddles it; about "
                     f"{g['samples_needed'] or 'many'} validation samples would decide" if g.get("outcome") == "undecided"
                     else "") for name, g in gates]
    if plan.skipped:
        lines += ["", "## Not built", ""] + [f"- {v}: {why}" for v, why in plan.skipped.items()]
    lines += ["", "## Steps", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['id']} | {s['status']}{' (cached, ran ' + s['finished'] + ')' if s.get('cached') else ''} "
              f"| {s['seconds']:.1f} |" for s in man["steps"]]
    lines += ["", "Plots: `report.html`. Machine-readable: `manifest.json`, `results.json`, `results.csv`; "
              "per-step logs in `logs/`.", ""]
    return "\n".join(lines)


def write(plan: Plan, workdir: Path, run: dict) -> list[dict]:
    """Write the five report files; return the per-variant results."""
    from builder import html_report  # it imports this module

    records = read_records(workdir)
    results = variant_results(plan, records)
    man = manifest(plan, workdir, records, run)
    atomic_write_bytes(workdir / MANIFEST, json.dumps(man, indent=2).encode())
    rec = recommendation(results)
    payload = {"recipe": plan.recipe.name, "target": plan.target.id, "recommendation": rec, "variants": results,
               "skipped": plan.skipped, "warnings": man["warnings"]}
    atomic_write_bytes(workdir / "results.json", json.dumps(payload, indent=2).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_csv_row(r) for r in results)
    atomic_write_bytes(workdir / "results.csv", buf.getvalue().encode())
    atomic_write_bytes(workdir / "report.md", markdown(plan, results, man, rec).encode())
    atomic_write_bytes(workdir / "report.html", html_report.run_page(payload).encode())
    return results
