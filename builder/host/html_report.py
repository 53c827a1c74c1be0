"""report.html for a run, status.html for a matrix, and `builder compare --html`: one self-contained page each.

The plots are drawn with matplotlib and inlined as SVG, not with plotly offline: the page must open on an
air-gapped site, and an SVG is static markup with nothing to load and no script to fail in the browser; it
costs tens of KB a plot where plotly inlines some 4 MB of JavaScript into every file; and it prints.

A variant's per-layer quantization error, where a result has it, is read from its results.json entry as
`"layer_errors": {"metric": "<name>", "layers": [{"name": "<layer>", "value": <float>}, ...]}`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import io
import json
import os
import threading
from collections.abc import Sequence
from html import escape
from pathlib import Path

from builder.host.step_cache import step_cache_dir
from builder.records import BenchmarkResult, LayerErrors, Recommendation, Results, VariantResult, fp32_baseline
from builder.util import atomic_write_bytes

ACCURACY_FIGURES = ("top1_accuracy", "top1_agreement", "cosine")  # the first one any variant has is plotted
LAYERS_SHOWN = 25
_DRAWING = threading.Lock()  # matrix runs write their reports from threads; rcParams and font caches are global
STATUS_COLOURS = {"ok": "#d9f2d9", "gate-failed": "#fde2c8", "gate-undecided": "#fff3c4", "failed": "#f8d0d0",
                  "skipped": "#e6e6e6", "not-validated": "#fff3c4"}

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.plot svg{max-width:100%;height:auto}
.rec{background:#eef6ff;border-left:4px solid #3b82f6;padding:.6em 1em}.flag{color:#b45309}
.worse{color:#b91c1c;font-weight:bold}.better{color:#15803d}.noise{color:#777}"""


def _canvas(width: float, height: float):
    """A figure and its axes, without pyplot and its global figure manager."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


canvas = _canvas  # for the figures other report modules draw (register_drawing)


@functools.cache
def _drawing_code(kind: str) -> str:
    """What a figure's look depends on besides its data: the module that draws it and matplotlib's version."""
    drawn_by = Path(inspect.getsourcefile(DRAW[kind]) or __file__)
    return hashlib.sha256(drawn_by.read_bytes() + importlib.metadata.version("matplotlib").encode()).hexdigest()


def _svg(kind: str, data) -> str:
    """The figure `kind` of `data` as inline SVG, drawn once: it is kept by the hash of both, so a rerun
    whose figures did not change draws nothing and does not even load matplotlib."""
    key = hashlib.sha256(json.dumps([kind, data, _drawing_code(kind)], sort_keys=True).encode()).hexdigest()
    kept = step_cache_dir() / "figures" / f"{key}.svg"
    try:
        text = kept.read_text()
        os.utime(kept)  # last used, for `builder cache prune`
        return text
    except OSError:
        pass
    import matplotlib

    fig = DRAW[kind](data)
    buf = io.StringIO()
    with _DRAWING, matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, searchable
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # inline: without the XML declaration and doctype
    atomic_write_bytes(kept, text.encode())
    return text


def _plot(title: str, kind: str, data) -> str:
    return f'<figure class="plot"><figcaption>{escape(title)}</figcaption>{_svg(kind, data)}</figure>'


plot = _plot  # a titled figure of a kind another report module registered


def register_drawing(kind: str, draw) -> None:
    """A figure kind drawn by another report module: `draw(data)` returns a matplotlib Figure (`canvas`)."""
    DRAW[kind] = draw


def _timed(variants: list[VariantResult]) -> list[VariantResult]:
    return [v for v in variants if v.benchmark and v.benchmark.p50_ms]


def latency_plot(variants: list[VariantResult], baseline: dict[str, BenchmarkResult] | None = None) -> str:
    """p50 bars per variant, a whisker up to p99 with p90 marked; the baseline's p50 as a cross, if given."""
    bars = []
    for v in _timed(variants):
        b, old = v.benchmark, (baseline or {}).get(v.name)
        bars.append({"name": v.name, "p50": b.p50_ms, "p90": b.p90_ms or b.p50_ms, "p99": b.p99_ms or b.p50_ms,
                     "baseline": old.p50_ms if old else None})
    return _plot("Latency per variant: p50, with p90 and p99", "latency", bars)


def _draw_latency(bars: list[dict]):
    fig, ax = _canvas(max(4.0, 1.1 * len(bars) + 2), 3.6)
    xs = range(len(bars))
    ax.bar(xs, [b["p50"] for b in bars], color="#3b82f6", label="p50")
    for x, b in zip(xs, bars):
        ax.vlines(x, b["p50"], b["p99"], color="#111", linewidth=1)
    ax.scatter(xs, [b["p90"] for b in bars], marker="_", s=200, color="#111", label="p90 (tick), p99 (top)", zorder=3)
    old = [(x, b["baseline"]) for x, b in zip(xs, bars) if b["baseline"]]
    if old:
        ax.scatter([x for x, _ in old], [p for _, p in old], marker="x", s=60, color="#dc2626", label="baseline p50",
                   zorder=4)
    ax.set_xticks(list(xs), [b["name"] for b in bars])
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize="small")
    return fig


def _validated(variant: VariantResult, figure: str) -> float | None:
    return getattr(variant.validation, figure) if variant.validation else None


def accuracy_figure(variants: list[VariantResult]) -> str | None:
    return next((k for k in ACCURACY_FIGURES if any(_validated(v, k) is not None for v in variants)), None)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def scatter_plot(variants: list[VariantResult], figure: str, cost: str, label: str) -> str:
    """Accuracy against a cost (latency or size), the Pareto front drawn as a line through its points."""
    rows = [(v.name, cost_of(v, cost), _validated(v, figure)) for v in variants
            if _validated(v, figure) is not None and cost_of(v, cost)]
    if not rows:
        return ""
    data = {"rows": rows, "front": pareto_front([(c, a) for _, c, a in rows]), "x": label,
            "y": figure.replace("_", " ")}
    return _plot(f"{figure.replace('_', ' ')} against {label}", "scatter", data)


def _draw_scatter(data: dict):
    rows = data["rows"]
    fig, ax = _canvas(5.5, 3.8)
    ax.scatter([c for _, c, _ in rows], [a for _, _, a in rows], color="#94a3b8", label="variant", zorder=2)
    front = [rows[i] for i in data["front"]]
    ax.plot([c for _, c, _ in front], [a for _, _, a in front], "-o", color="#dc2626", label="Pareto front", zorder=3)
    for name, c, a in rows:
        ax.annotate(name, (c, a), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xlabel(data["x"])
    ax.set_ylabel(data["y"])
    ax.legend(fontsize="small")
    return fig


def cost_of(variant: VariantResult, cost: str) -> float | None:
    b = variant.benchmark
    if b is None:
        return None
    return b.p50_ms if cost == "latency" else (b.size_bytes or 0) / 1024 or None


def layer_plot(name: str, layer_errors: LayerErrors) -> str:
    """The layers with the largest quantization error, largest on top."""
    every = layer_errors.layers
    layers = sorted(every, key=lambda x: x.value, reverse=True)[:LAYERS_SHOWN]
    shown = f"the {len(layers)} largest of {len(every)}" if len(every) > len(layers) else "every layer"
    return _plot(f"{name}: per-layer quantization error ({shown})", "layers",
                 {"layers": [[x.name, x.value] for x in layers], "metric": layer_errors.metric})


def _draw_layers(data: dict):
    layers = data["layers"]
    fig, ax = _canvas(6.5, 0.25 * len(layers) + 1.2)
    ax.barh([n for n, _ in reversed(layers)], [v for _, v in reversed(layers)], color="#f59e0b")
    ax.set_xlabel(data["metric"])
    ax.tick_params(axis="y", labelsize="x-small")
    return fig


DRAW = {"latency": _draw_latency, "scatter": _draw_scatter, "layers": _draw_layers}


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def _recommendation(rec: Recommendation) -> str:
    if not rec.variant:
        body = "<b>No variant is built, timed and within every gate on this target.</b>"
    else:
        provisional = " provisionally" if rec.provisional else ""
        body = f"<b>Ship <code>{escape(rec.variant)}</code>{provisional}</b>: p50 {_num(rec.p50_ms)} ms"
        if rec.speedup_vs_fp32 is not None:
            body += f", {rec.speedup_vs_fp32:.2f}x the speed of {escape(rec.baseline or '')}"
        if rec.size_vs_fp32 is not None:
            body += f", {rec.size_vs_fp32:.2f}x its size"
        if not rec.gates_checked:
            body += ". The recipe sets no accuracy gate it was checked against"
        if rec.provisional:
            body += (". A gate is undecided: " + (f"about {rec.photos_needed} distinct validation photos would decide it"
                     if rec.photos_needed else "no number of photos would decide it")
                     + f"; the fastest variant with every gate passed is {escape(rec.otherwise or 'none')}")
    flags = "".join(f"<li>{escape(n)}: <span class=flag>{escape(', '.join(f))}</span></li>"
                    for n, f in rec.flags.items())
    return f'<div class="rec">{body}.{f"<ul>{flags}</ul>" if flags else ""}</div>'


def _with_interval(validation, name: str) -> str:
    """A figure with its 95% interval over distinct photos, or '-'."""
    value, bounds = getattr(validation, name, None), getattr(validation, f"{name}_interval", None)
    return _num(value, 4) + (f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else "")


def _variants_table(variants: list[VariantResult], figure: str | None) -> str:
    kept = any(v.validation and v.validation.accuracy_ratio is not None for v in variants)
    head = (["variant", "status", "calibrated on", "size KB", "p50 ms (quick harness)", "p90 ms", "p99 ms"]
            + ([f"{figure} [95% interval]"] if figure else []) + (["accuracy kept"] if kept else []))
    rows = []
    for v in variants:
        b = v.benchmark
        calibrated = f"{v.calibrated_on.images} images" if v.calibrated_on else "-"
        cells = [v.name, v.status, calibrated, _num(cost_of(v, "size"), 1), _num(b and b.p50_ms), _num(b and b.p90_ms),
                 _num(b and b.p99_ms)] + ([_with_interval(v.validation, figure)] if figure else []) \
            + ([_with_interval(v.validation, "accuracy_ratio")] if kept else [])
        rows.append("<tr>" + "".join(f"<td>{escape(str(c)) if i < 3 else c}</td>" for i, c in enumerate(cells)) + "</tr>")
    return _table(head, rows)


def _data_line(data: dict) -> str:
    """The sets the verdicts stand on, in distinct images."""
    parts = [f"{name}: {count.images} distinct images ({count.samples} samples)" for name, count in data.items()]
    return f"<p>{escape('; '.join(parts))}; intervals count distinct images, not samples.</p>" if parts else ""


def _table(head: list[str], rows: list[str]) -> str:
    return "<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def section(title: str, head: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """A titled table of plain cells and notes under it: a backend's own section of a run's page."""
    cells = ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows]
    return f"<h2>{escape(title)}</h2>" + _table(head, cells) + "".join(f"<p>{escape(n)}</p>" for n in notes)


def run_sections(payload: Results, baseline: Results | None = None) -> list[str]:
    """A run's recommendation, table and plots; with a baseline run, its p50s are marked on the latency plot."""
    variants = payload.variants
    figure = accuracy_figure(variants)
    parts = [f"<h2>{escape(payload.recipe)} on {escape(payload.target)}</h2>"]
    if payload.recommendation.model_fields_set:  # an older results.json may hold an empty one
        parts.append(_recommendation(payload.recommendation))
    parts.append(_data_line(payload.data) + _variants_table(variants, figure))
    if _timed(variants):
        old = {v.name: v.benchmark for v in (baseline.variants if baseline else []) if v.benchmark}
        parts.append(latency_plot(variants, old))
    if figure:
        parts += [scatter_plot(variants, figure, "latency", "p50 latency (ms)"),
                  scatter_plot(variants, figure, "size", "size (KB)")]
    parts += [layer_plot(v.name, v.layer_errors) for v in variants if v.layer_errors and v.layer_errors.layers]
    return parts


def page(title: str, sections: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>{''.join(sections)}</body></html>\n")


def run_page(payload: Results, backend_sections: Sequence[str] = ()) -> str:
    """A run's page; `backend_sections`: what the backends add to it (report.Section.html)."""
    return page(f"{payload.recipe} on {payload.target}", run_sections(payload)[1:] + list(backend_sections))


def matrix_page(runs: list[dict]) -> str:
    """A recipe x target x variant grid of status and speed-up against fp32, each run linked to its report.html.
    `runs`: {"recipe", "target", "variants" (VariantResults), "error", "report" (a relative link or None)}."""
    names = list(dict.fromkeys(v.name for r in runs for v in r["variants"]))
    rows = []
    for r in runs:
        base = fp32_baseline(r["variants"])
        base_p50 = base.benchmark.p50_ms if base else None
        by_name = {v.name: v for v in r["variants"]}
        label = escape(f"{r['recipe']} / {r['target']}")
        cells = [f'<td><a href="{escape(r["report"])}">{label}</a></td>' if r.get("report") else f"<td>{label}</td>"]
        for name in names:
            v = by_name.get(name)
            if v is None:
                status = "failed" if r.get("error") else None
                cells.append(f'<td style="background:{STATUS_COLOURS["failed"]}">failed</td>' if status else "<td></td>")
                continue
            p50 = v.benchmark.p50_ms if v.benchmark else None
            speed = f"<br>{base_p50 / p50:.2f}x" if p50 and base_p50 else ""
            cells.append(f'<td style="background:{STATUS_COLOURS.get(v.status, "#fff")}">'
                         f"{escape(v.status)}{speed}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = "<p>Each cell: the variant's status and its speed against the run's fp32 variant (p50).</p>"
    errors = [f"<li>{escape(r['recipe'])} / {escape(r['target'])}: {escape(r['error'])}</li>" for r in runs if r.get("error")]
    return page("Build status", [note, _table(["recipe / target", *names], rows)]
                + ([f"<h2>Runs that failed</h2><ul>{''.join(errors)}</ul>"] if errors else []))


def _change(figure: dict) -> str:
    if figure.get("change_pct") is None:
        return f"<td>{_num(figure.get('old'), 4)} → {_num(figure.get('new'), 4)}</td>"
    css = "noise" if figure["noise"] else "worse" if figure["worse"] else "better"
    noise = " (noise)" if figure["noise"] else ""
    return f'<td class="{css}">{figure["change_pct"]:+.1f}%{noise}</td>'


def comparison_page(rows: list[dict], runs: list[tuple[Results, Results | None]]) -> str:
    """`builder compare --html`: the deltas per recipe/target/variant, then each new run's plots with the old p50s."""
    figures = list(dict.fromkeys(f["name"] for r in rows for f in r["figures"]))
    body = []
    for r in rows:
        by_name = {f["name"]: f for f in r["figures"]}
        cells = [escape(f"{r['recipe']} / {r['target']} / {r['variant']}"),
                 escape(f"{r['old_status'] or '-'} → {r['new_status'] or '-'}")]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells)
                    + "".join(_change(by_name[f]) if f in by_name else "<td></td>" for f in figures)
                    + f"<td>{'<b class=worse>regression</b>' if r['regression'] else ''}</td></tr>")
    sections = ["<p>Change from the baseline (old) to the new run. A p50 change within twice the two medians' combined "
                "uncertainty (each run's p90 - p50 spread over the square root of its runs), or an agreement inside the "
                "old run's 95% interval, is marked as noise.</p>",
                _table(["recipe / target / variant", "status", *figures, ""], body)]
    for new, old in runs:
        sections += run_sections(new, old)
    return page("Runs compared", sections)
