"""Where the error comes from: the layer diffs of a run (`builder run --layer-diff`) in report.md and report.html.

Per quantized variant, its worst layers against fp32 (lowest SNR first: a table, and a plot on the page), how its
tensors were matched with fp32's, and how to open each node's error on the graph in Model Explorer.
"""

from __future__ import annotations

from html import escape

from builder.host import html_report
from builder.host.profile_report import short
from builder.records import LayerDiff, VariantResult
from builder.stage import model_explorer

TOP = 10  # layers in report.md's table per variant
PLOTTED = 15  # layers in report.html's plot
COLUMNS = ["#", "layer", "op", "fp32 layer", "matched by", "SNR dB", "cosine", "max abs error"]


def _diffed(results: list[VariantResult]) -> list[VariantResult]:
    return [r for r in results if r.layer_diff]


def _facts(r: VariantResult) -> str:
    d = r.layer_diff
    by_name = sum(x.matched_by == "name" for x in d.layers)
    line = (f"{r.name}: {len(d.layers)} layers compared with fp32's on {d.samples} validation samples "
            f"({by_name} matched by name, {len(d.layers) - by_name} by position")
    line += f"; {d.unmatched} matched none" if d.unmatched else ""
    line += f"; {len(d.skipped)} not read as float" if d.skipped else ""
    worst = d.layers[0]
    return line + f"). Worst: `{short(worst.name)}` ({worst.op_type}), {worst.snr_db:.1f} dB."


def _rows(d: LayerDiff) -> list[list[str]]:
    return [[str(i), short(x.name), x.op_type, "=" if x.fp32_name == x.name else short(x.fp32_name), x.matched_by,
             f"{x.snr_db:.1f}", f"{x.cosine:.4f}", f"{x.max_abs_error:.4g}"] for i, x in enumerate(d.layers[:TOP], 1)]


def _open_lines(results: list[VariantResult]) -> list[str]:
    files = [(r.artifact, r.layer_diff.node_data) for r in _diffed(results) if r.layer_diff.node_data]
    if not files:
        return []
    return ["Each node's error (noise/signal dB, -SNR: red is worst) on the graph, in Google's Model Explorer "
            "(not needed by a run):", "", *[f"    {model_explorer.how_to_open(a, f)}" for a, f in files], ""]


def markdown(results: list[VariantResult]) -> list[str]:
    """report.md's lines: each quantized variant's worst layers against fp32."""
    if not (diffed := _diffed(results)):
        return []
    lines = ["## Where the error comes from (layer by layer against fp32)", ""]
    for r in diffed:
        lines += [f"- {_facts(r)}", "", f"Worst layers of `{r.name}`:", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
                  *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(r.layer_diff)), ""]
    lines += _open_lines(results)
    lines.append("Every layer: `layer_diff_<variant>.csv` beside the artifacts, and `layer_diff` in results.json.")
    return lines


def html(results: list[VariantResult]) -> list[str]:
    """report.html's parts: a plot of each quantized variant's worst layers, and their table."""
    if not (diffed := _diffed(results)):
        return []
    parts = ["<h2>Where the error comes from (layer by layer against fp32)</h2>"]
    for r in diffed:
        layers = r.layer_diff.layers[:PLOTTED]
        parts += [f"<p>{escape(_facts(r))}</p>",
                  html_report.plot(f"{r.name}: the {len(layers)} worst of {len(r.layer_diff.layers)} layers "
                                   "(SNR dB against fp32: lower is worse)", "layer_diff",
                                   {"layers": [[short(x.name), x.snr_db, x.op_type] for x in layers]}),
                  html_report.section(f"{r.name}: worst layers against fp32", COLUMNS, _rows(r.layer_diff), [])]
    if opened := _open_lines(results):
        parts.append("<p>" + escape(opened[0]) + "</p><pre>" + escape("\n".join(x.strip() for x in opened[2:-1]))
                     + "</pre>")
    return parts


def _draw(data: dict):
    layers = data["layers"]
    fig, ax = html_report.canvas(6.5, 0.28 * len(layers) + 1.2)
    ax.barh([n for n, _, _ in reversed(layers)], [snr for _, snr, _ in reversed(layers)], color="#dc2626")
    for y, (_, snr, op) in enumerate(reversed(layers)):
        ax.annotate(op, (snr, y), textcoords="offset points", xytext=(3, -3), fontsize="x-small")
    ax.set_xlabel("SNR dB against fp32 (beside each bar: the op)")
    ax.tick_params(axis="y", labelsize="x-small")
    return fig


html_report.register_drawing("layer_diff", _draw)
