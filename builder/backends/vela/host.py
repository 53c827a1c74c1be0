"""What Vela adds on the host: its own section of a run's report, the Ethos-U configuration each estimate is for,
its cycles and MACs, and the operators left to the CPU, which the estimate leaves out."""

from __future__ import annotations

from builder.backends.vela.runtime import VelaEstimate
from builder.host import report
from builder.records import VariantResult

COLUMNS = {"accelerator": "accelerator", "system_config": "system config", "memory_mode": "memory mode",
           "cycles_total": "cycles", "macs": "MACs", "npu_operators": "NPU operators", "cpu_operators": "CPU operators"}


def _cell(value) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def vela_section(results: list[VariantResult]) -> report.Section | None:
    estimates = [(r.name, e) for r in results
                 if r.benchmark and isinstance(e := (r.benchmark.extra or {}).get("vela"), VelaEstimate)]
    if not estimates:
        return None
    notes = (["Operators left to the CPU are not in the estimate: it times the NPU's share only."]
             if any(e.cpu_operators for _, e in estimates) else [])
    return report.Section("Vela's estimate", ["variant", *COLUMNS.values()],
                          [[name, *(_cell(getattr(e, f)) for f in COLUMNS)] for name, e in estimates], notes)


report.register_section(vela_section)
