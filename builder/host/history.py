"""`builder history RECIPE -t TARGET`: each figure of each variant over the runs the tracking store holds, as
tables and as a page of plots (drawn and kept as report.html's are, html_report.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from rich.table import Table

from builder.host import html_report
from builder.host.tracked_runs import BENCHMARK_METRICS, BUILD_TAG, VALIDATION_METRICS, StoredRun

FIGURES = tuple(f for f in (*BENCHMARK_METRICS, *VALIDATION_METRICS) if f not in ("mean_ms", "std_ms", "init_ms"))


def by_variant(runs: list[StoredRun]) -> dict[str, list[StoredRun]]:
    """The store's runs (oldest first) of each variant."""
    out: dict[str, list[StoredRun]] = {}
    for run in runs:
        out.setdefault(run.params.get("variant", "?"), []).append(run)
    return out


def figures_of(runs: list[StoredRun]) -> list[str]:
    return [f for f in FIGURES if any(f in r.metrics for r in runs)]


def when(run: StoredRun) -> str:
    return datetime.fromtimestamp(run.started_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _value(run: StoredRun, figure: str) -> str:
    value = run.metrics.get(figure)
    return "-" if value is None else f"{value:.4g}"


def change(runs: list[StoredRun], figure: str) -> str:
    """The figure's change from its first run to its last, in percent."""
    values = [r.metrics[figure] for r in runs if figure in r.metrics]
    if len(values) < 2 or not values[0]:
        return ""
    return f"{(values[-1] - values[0]) / abs(values[0]) * 100:+.1f}%"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """The values as one line of bars, lowest to highest."""
    low, high = min(values), max(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1)) if high > low else 0] for v in values)


def tables(runs: list[StoredRun]) -> list[Table]:
    """One table per variant: a row per figure, with its first and last value over the runs, the change between
    them and its trend (a bar per run, oldest first)."""
    out = []
    for variant, mine in by_variant(runs).items():
        table = Table("figure", "runs", "first", "last", "change", "trend",
                      title=f"{variant}: {len(mine)} run(s), {when(mine[0])} to {when(mine[-1])} UTC")
        for figure in figures_of(mine):
            values = [r.metrics[figure] for r in mine if figure in r.metrics]
            table.add_row(figure, str(len(values)), f"{values[0]:.4g}", f"{values[-1]:.4g}", change(mine, figure),
                          sparkline(values))
        statuses = [r.tags.get("status", "?") for r in mine]
        table.add_row("status", str(len(statuses)), statuses[0], statuses[-1], "", "")
        out.append(table)
    return out


def _draw_trend(data: dict):
    fig, ax = html_report.canvas(6.5, 3.2)
    for variant, points in data["lines"].items():
        ax.plot([x for x, _ in points], [y for _, y in points], "-o", label=variant)
    ax.set_xticks(range(len(data["runs"])), data["runs"], rotation=30, ha="right", fontsize="x-small")
    ax.set_ylabel(data["figure"])
    ax.legend(fontsize="small")
    return fig


html_report.register_drawing("trend", _draw_trend)


def page(recipe: str, target: str, runs: list[StoredRun]) -> str:
    """One plot per figure (a line per variant over the runs), then each variant's table."""
    def build(run: StoredRun) -> str:
        return run.tags.get(BUILD_TAG, run.run_id)

    builds: dict[str, str] = {}  # a build's variants share its place on the x axis
    for r in runs:
        builds.setdefault(build(r), when(r))
    at = {build: i for i, build in enumerate(builds)}
    grouped = by_variant(runs)
    sections = [f"<p>{len(builds)} run(s) of {escape(recipe)} on {escape(target)} in the tracking store "
                f"({len(runs)} variant runs), oldest first.</p>"]
    for figure in figures_of(runs):
        lines = {variant: [(at[build(r)], r.metrics[figure]) for r in mine if figure in r.metrics]
                 for variant, mine in grouped.items()}
        sections.append(html_report.plot(f"{figure} per run", "trend",
                                         {"figure": figure, "runs": list(builds.values()), "lines": lines}))
    for variant, mine in grouped.items():
        figures = figures_of(mine)
        rows = [[when(r), r.params.get("device", ""), r.tags.get("status", ""), *(_value(r, f) for f in figures)]
                for r in mine]
        rows.append(["change", "", "", *(change(mine, f) for f in figures)])
        sections.append(html_report.section(variant, ["run (UTC)", "device", "status", *figures], rows, []))
    return html_report.page(f"{recipe} on {target}: history", sections)
