"""Where the time goes: the per-layer profiles of a run (`builder run --profile`) in report.md and report.html.

Per variant, its slowest layers (a table, and a plot on the page); per quantized variant, what quantization
changed against fp32 layer by layer (faster, slower, left in float), where the layers match by name, or by
position when both graphs run the same ops in the same order; and how to open the times on the graph in Model
Explorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from builder.host import html_report
from builder.records import BenchmarkResult, LayerTime, Profile, VariantResult, fp32_baseline
from builder.stage import model_explorer, profiling

TOP = 10  # layers in report.md's table per variant
PLOTTED = 15  # layers in report.html's plots
NAME_WIDTH = 60
CHANGED = 0.1  # a layer 10% faster or slower than fp32's changed


def with_p50(profile: Profile | None, bench: BenchmarkResult | None) -> Profile | None:
    """A variant's profile, with its layers' sum against the benchmark's p50 (and why they differ, where they do)."""
    if profile is None or bench is None or profile.estimate != bench.estimate:
        return profile
    found = profiling.against_p50(profile.total_ms, bench.p50_ms, caveat=profile.caveat, emulated=bench.emulated)
    return profile.model_copy(update=found) if found else profile


def short(name: str) -> str:
    """A layer's name fit for a table: a fused op's first name, its start if it is long."""
    first = name.split(";")[0]
    return first if len(first) <= NAME_WIDTH else first[:NAME_WIDTH - 1] + "…"


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _facts(r: VariantResult) -> list[str]:
    """What a profile stands on: its profiler and runs, its sum against the p50, the delegate's partitions."""
    p = r.profile
    what = "an estimate" if p.estimate else f"{p.runs} inferences"
    line = f"{r.name}: {len(p.layers)} layers by {p.profiler} ({what}); the layers sum to {_ms(p.total_ms)} ms"
    if p.vs_p50 is not None:
        line += f", {p.vs_p50:.2f}x the benchmark's p50" + (f" (not within 20%: {p.why})" if p.why else "")
    facts = [line + "."]
    if p.partitions is not None:
        facts.append(f"{r.name}: the delegate made {p.partitions} partition(s) of the graph.")
    facts += [f"{r.name}: **{w}**" for w in p.warnings]
    return facts


def _top_rows(p: Profile) -> list[list[str]]:
    return [[str(i), short(x.name), x.op_type, _ms(x.ms), f"{x.share:.1%}", x.precision or "-", x.unit or "-"]
            for i, x in enumerate(p.layers[:TOP], 1)]


TOP_COLUMNS = ["#", "layer", "op", "ms", "share", "precision", "unit"]


@dataclass(frozen=True)
class Change:
    """One layer of a quantized variant against the same layer of fp32."""

    name: str
    op_type: str
    fp32_ms: float
    ms: float
    precision: str | None
    integer: bool  # the variant is quantized to integers: a layer in fp32 stayed in float

    @property
    def ratio(self) -> float:
        return self.ms / self.fp32_ms if self.fp32_ms else float("inf")

    @property
    def verdict(self) -> str:
        if self.integer and self.precision and self.precision.startswith("fp"):
            return "stayed in float"
        return "faster" if self.ratio < 1 - CHANGED else "slower" if self.ratio > 1 + CHANGED else "about the same"


def _in_order(p: Profile) -> list[LayerTime] | None:
    """The layers in graph order, where their node ids are op indexes."""
    if not all(x.node_id.isdigit() for x in p.layers):
        return None
    return sorted(p.layers, key=lambda x: int(x.node_id))


def changes(base: Profile, other: Profile, integer: bool = True) -> tuple[list[Change], str]:
    """`other`'s layers matched with `base`'s: by name, else by position when both run the same ops in order;
    and how they were matched. `integer`: `other` is quantized to integers."""
    by_name = {x.name: x for x in base.layers}
    matched = [(by_name[x.name], x) for x in other.layers if x.name in by_name]
    how = "by name"
    if len(matched) < len(other.layers) / 2:
        ours, theirs = _in_order(base), _in_order(other)
        if ours and theirs and [x.op_type for x in ours] == [x.op_type for x in theirs]:
            matched, how = list(zip(ours, theirs)), "by position (the same ops in the same order)"
    return [Change(x.name, x.op_type, b.ms, x.ms, x.precision, integer) for b, x in matched], how


def comparisons(results: list[VariantResult]) -> list[tuple[VariantResult, list[Change], str]]:
    """Each quantized variant's layers against fp32's, where both have a profile and some layers match."""
    base = fp32_baseline(results)
    if base is None or base.profile is None:
        return []
    found = []
    for r in results:
        if r is base or r.precision == "fp32" or r.profile is None or r.profile.estimate != base.profile.estimate:
            continue
        matched, how = changes(base.profile, r.profile, integer=not r.precision.startswith("fp"))
        if matched:
            found.append((r, matched, how))
    return found


def _summary(r: VariantResult, matched: list[Change], how: str) -> str:
    counts = {v: sum(c.verdict == v for c in matched) for v in ("faster", "slower", "stayed in float", "about the same")}
    return (f"{r.name}: {len(matched)} of its {len(r.profile.layers)} layers matched fp32's {how}: "
            f"{counts['faster']} faster, {counts['slower']} slower, {counts['stayed in float']} stayed in float, "
            f"{counts['about the same']} about the same.")


def _biggest(matched: list[Change]) -> list[Change]:
    return sorted(matched, key=lambda c: abs(c.ms - c.fp32_ms), reverse=True)[:TOP]


CHANGE_COLUMNS = ["layer", "op", "fp32 ms", "ms", "change", "precision", ""]


def _change_rows(matched: list[Change]) -> list[list[str]]:
    return [[short(c.name), c.op_type, _ms(c.fp32_ms), _ms(c.ms), f"{c.ratio:.2f}x", c.precision or "-", c.verdict]
            for c in _biggest(matched)]


def _open_lines(results: list[VariantResult]) -> list[str]:
    files = [(r.profile.node_data_for or r.artifact, r.profile.node_data) for r in results
             if r.profile and r.profile.node_data]
    if not files:
        return []
    return ["The layers' times on the graph, in Google's Model Explorer (not needed by a run):", "",
            *[f"    {model_explorer.how_to_open(artifact, data)}" for artifact, data in files], ""]


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)]


def markdown(results: list[VariantResult]) -> list[str]:
    """report.md's lines: each variant's slowest layers, and what quantization changed against fp32."""
    profiled = [r for r in results if r.profile]
    if not profiled:
        return []
    lines = ["## Where the time goes (per-layer profile)", ""]
    for r in profiled:
        lines += [*(f"- {fact}" for fact in _facts(r)), "", f"Slowest layers of `{r.name}`:", "",
                  *_table(TOP_COLUMNS, _top_rows(r.profile)), ""]
    for r, matched, how in comparisons(results):
        lines += [f"### `{r.name}` against fp32, layer by layer", "", _summary(r, matched, how), "",
                  *_table(CHANGE_COLUMNS, _change_rows(matched)), ""]
    lines += _open_lines(results)
    lines.append("Every layer: `profile_<variant>.csv` beside the artifacts, and `profile` in results.json.")
    return lines


def html(results: list[VariantResult]) -> list[str]:
    """report.html's parts: a plot of each variant's slowest layers, and each quantized variant's changes."""
    profiled = [r for r in results if r.profile]
    if not profiled:
        return []
    parts = ["<h2>Where the time goes (per-layer profile)</h2>"]
    for r in profiled:
        parts.append("".join(f"<p>{escape(fact.replace('**', ''))}</p>" for fact in _facts(r)))
        layers = r.profile.layers[:PLOTTED]
        parts.append(html_report.plot(
            f"{r.name}: the {len(layers)} slowest of {len(r.profile.layers)} layers (ms per inference)", "profile",
            {"layers": [[short(x.name), x.ms, ", ".join(filter(None, (x.precision, x.unit))) or "?"] for x in layers]}))
    for r, matched, how in comparisons(results):
        shown = _biggest(matched)[:PLOTTED]
        parts += [html_report.plot(f"{r.name} against fp32: the layers that changed most (ms per inference)",
                                   "profile_change", {"layers": [[short(c.name), c.fp32_ms, c.ms] for c in shown],
                                                      "name": r.name}),
                  html_report.section(f"{r.name} against fp32, layer by layer", CHANGE_COLUMNS,
                                      _change_rows(matched), [_summary(r, matched, how)])]
    if opened := _open_lines(results):
        parts.append("<p>" + escape(opened[0]) + "</p><pre>" + escape("\n".join(x.strip() for x in opened[2:-1]))
                     + "</pre>")
    return parts


PRECISION_COLOURS = {"int8": "#16a34a", "fp16": "#f59e0b", "int16": "#8b5cf6"}


def _draw_profile(data: dict):
    layers = data["layers"]
    fig, ax = html_report.canvas(6.5, 0.28 * len(layers) + 1.2)
    colours = [PRECISION_COLOURS.get(p.split()[0], "#3b82f6") for _, _, p in reversed(layers)]
    ax.barh([n for n, _, _ in reversed(layers)], [ms for _, ms, _ in reversed(layers)], color=colours)
    for y, (_, ms, precision) in enumerate(reversed(layers)):
        ax.annotate(precision, (ms, y), textcoords="offset points", xytext=(3, -3), fontsize="x-small")
    ax.set_xlabel("ms per inference (colour: precision; beside each bar: precision, unit)")
    ax.tick_params(axis="y", labelsize="x-small")
    return fig


def _draw_change(data: dict):
    layers = data["layers"]
    fig, ax = html_report.canvas(6.5, 0.32 * len(layers) + 1.2)
    ys = range(len(layers))
    ax.barh([y + 0.2 for y in ys], [b for _, b, _ in reversed(layers)], height=0.4, color="#94a3b8", label="fp32")
    ax.barh([y - 0.2 for y in ys], [m for _, _, m in reversed(layers)], height=0.4, color="#3b82f6",
            label=data["name"])
    ax.set_yticks(list(ys), [n for n, _, _ in reversed(layers)])
    ax.set_xlabel("ms per inference")
    ax.tick_params(axis="y", labelsize="x-small")
    ax.legend(fontsize="small")
    return fig


html_report.register_drawing("profile", _draw_profile)
html_report.register_drawing("profile_change", _draw_change)
