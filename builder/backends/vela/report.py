"""Vela's own section of report.md: the Ethos-U configuration each estimate is for, its cycles and MACs, and
the operators left to the CPU, which the estimate leaves out."""

from __future__ import annotations

from builder import report
from builder.backends.vela.runtime import VelaEstimate
from builder.records import VariantResult


def _cell(value) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def vela_section(results: list[VariantResult]) -> list[str]:
    estimates = [(r.name, e) for r in results
                 if r.benchmark and isinstance(e := (r.benchmark.extra or {}).get("vela"), VelaEstimate)]
    if not estimates:
        return []
    lines = ["## Vela's estimate", "", "| variant | accelerator | system config | memory mode | cycles | MACs "
             "| NPU operators | CPU operators |", "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join([name, *(_cell(getattr(e, f)) for f in ("accelerator", "system_config", "memory_mode",
                                                                          "cycles_total", "macs", "npu_operators",
                                                                          "cpu_operators"))]) + " |"
              for name, e in estimates]
    if any(e.cpu_operators for _, e in estimates):
        lines += ["", "Operators left to the CPU are not in the estimate: the NPU's share of the time only."]
    return lines


report.register_section(vela_section)
