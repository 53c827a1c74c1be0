"""What machine a benchmark really ran on, and whether it was in a state to give good numbers.

Reads /proc, /sys and /etc (visible read-only inside a container too) and asks `vcgencmd` when it is
on PATH. Its readers are stdlib only: they run in the small arm64 device images, also under QEMU, where
/proc/cpuinfo may describe the host's CPU rather than the emulated one. Every reader gives nothing for a
missing or unreadable file and never raises, and a key with no value is left out, so a result states only
what the machine itself reported. A backend adds its own readers (`register_probe`: its accelerator's SDK,
its board's power mode); their facts go into a benchmark's `device.extra`, under the backend's section.

    python -m builder.stage.device_facts      # both, as JSON
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from builder import plugins
from builder.errors import BuilderError

INFERENCE_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16",
                   "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")
"""The ISA extensions inference kernels dispatch on, as /proc/cpuinfo names them:
x86 `flags` first, then ARM `Features` (asimddp is dot-product, asimdhp fp16 arithmetic)."""

ARM_CORES = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd05"): "Cortex-A55", ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd41"): "Cortex-A78", ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd44"): "Cortex-X1", ("0x41", "0xd49"): "Neoverse-N2", ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x4e", "0x004"): "Carmel",
}
"""(CPU implementer, CPU part) -> core, from Linux's arch/arm64/include/asm/cputype.h: arm64 kernels print no
`model name`, only these two numbers."""

THROTTLE_BITS = {0: "under_voltage_now", 1: "freq_capped_now", 2: "throttled_now", 3: "soft_temp_limit_now",
                 16: "under_voltage_occurred", 17: "freq_capped_occurred", 18: "throttled_occurred",
                 19: "soft_temp_limit_occurred"}
"""The bits of a Raspberry Pi's `vcgencmd get_throttled`; the "occurred" ones are sticky since boot."""
FIRMWARE_THROTTLED = Path("sys/devices/platform/soc/soc:firmware/get_throttled")
"""The same word from the Raspberry Pi firmware driver (hex without 0x), readable inside a container."""


Probe = Callable[[Path], dict]
"""A backend's reader of its own facts under a root: like the readers here, it never raises and leaves out
what the machine does not report."""
_PROBES: dict[str, Probe] = {}


def register_probe(name: str, probe: Probe) -> None:
    """A backend's probe; `name` is its section of a benchmark's `device.extra` (records.register_extra)."""
    _PROBES[name] = probe


def read_text(path: Path) -> str | None:
    """A file's text without the NUL and whitespace around it (device-tree strings end in NUL), or None."""
    try:
        return path.read_text(errors="replace").strip("\x00 \t\n") or None
    except OSError:  # absent, unreadable, or a sysfs node that refuses to be read (EINVAL, ENODATA)
        return None


def _int(path: Path) -> int | None:
    try:
        return int(read_text(path) or "")
    except ValueError:  # absent, or a word such as cgroup v2's "max"
        return None


def tool_output(*command: str) -> str:
    """A tool's output if it is on PATH and answers within 5 s, else ""; a hung vcgencmd must not hang a run."""
    exe = shutil.which(command[0])
    if exe is None:
        return ""
    try:
        return subprocess.run([exe, *command[1:]], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpuinfo(root: Path) -> dict[str, list[str]]:
    """Every value of each /proc/cpuinfo key, in order: one per core for most keys."""
    fields: dict[str, list[str]] = {}
    for line in (read_text(root / "proc/cpuinfo") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    return fields


def _cpu_model(info: dict[str, list[str]]) -> str:
    """x86's model name; on ARM the core names (a big.LITTLE SoC gives "Cortex-A55 + Cortex-A76"), else the
    SoC or board name the kernel prints instead."""
    if info.get("model name"):
        return info["model name"][0]
    ids = zip(info.get("CPU implementer", []), info.get("CPU part", []))
    cores = dict.fromkeys(ARM_CORES[key] for key in ((imp.lower(), part.lower()) for imp, part in ids) if key in ARM_CORES)
    if cores:
        return " + ".join(cores)
    return next((info[key][0] for key in ("Hardware", "Model") if info.get(key)), "unknown")


def _cgroup_cpus(root: Path) -> float | None:
    """The CPUs a container may use by quota (cgroup v2 cpu.max, else v1 CFS), None when unlimited."""
    v2 = (read_text(root / "sys/fs/cgroup/cpu.max") or "").split()
    quota, period = v2 if len(v2) == 2 else (read_text(root / "sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                                              read_text(root / "sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    try:
        return round(int(quota) / int(period), 2) if int(quota) > 0 else None
    except (TypeError, ValueError, ZeroDivisionError):  # "max", -1 or absent: no limit
        return None


def machine_identity(root: Path = Path("/")) -> dict:
    """Which machine this is, known without running anything: its CPU, core count and machine id (what a
    cached measurement must match to be reused here)."""
    return {"cpu_model": _cpu_model(_cpuinfo(root)), "cores": os.cpu_count(),
            "machine_id": (read_text(root / "etc/machine-id") or os.uname().nodename).strip()}


def generic_facts(root: Path = Path("/")) -> dict:
    """What the machine is: CPU, cores, memory, OS and board.

    Files are read under `root`; cores and uname are this process's own view: `cpus_allowed` is a container's
    cpuset, `kernel` the host's even in a container, `arch` the emulated one under QEMU."""
    info = _cpuinfo(root)
    features = set((info.get("flags") or info.get("Features") or [""])[0].split())
    uname = os.uname()
    facts: dict = {"cpu_model": _cpu_model(info), "cpu_flags": [f for f in INFERENCE_FLAGS if f in features],
                   "logical_cores": os.cpu_count(),
                   "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                   "cgroup_cpu_quota": _cgroup_cpus(root), "kernel": uname.release, "arch": uname.machine}
    total = re.search(r"^MemTotal:\s+(\d+) kB", read_text(root / "proc/meminfo") or "", re.M)
    facts["memory_total_bytes"] = int(total[1]) * 1024 if total else None
    limit = _int(root / "sys/fs/cgroup/memory.max") or _int(root / "sys/fs/cgroup/memory/memory.limit_in_bytes")
    if limit and (facts["memory_total_bytes"] is None or limit < facts["memory_total_bytes"]):
        facts["cgroup_memory_limit_bytes"] = limit  # cgroup v1 writes "no limit" as a huge number
    os_release = read_text(root / "etc/os-release") or read_text(root / "usr/lib/os-release") or ""
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', os_release, re.M)
    facts["os"] = pretty[1] if pretty else None
    facts["board_model"] = next(filter(None, map(read_text, (root / "proc/device-tree/model",
                                                             root / "sys/firmware/devicetree/base/model",
                                                             root / "sys/class/dmi/id/product_name"))), None)
    return {key: value for key, value in facts.items() if value not in (None, "", [])}


def backend_facts(root: Path = Path("/")) -> dict[str, dict]:
    """Each backend probe's facts, by its section; a probe that found nothing is left out."""
    try:
        plugins.load()
    except BuilderError:  # a backend that does not load probes nothing; the run that needs it says why
        pass
    return {name: facts for name, probe in sorted(_PROBES.items()) if (facts := probe(root))}


def machine_facts(root: Path = Path("/")) -> dict:
    """The generic facts and every backend's beside them, in one mapping."""
    return generic_facts(root) | {key: value for facts in backend_facts(root).values() for key, value in facts.items()}


def recorded_facts(root: Path = Path("/")) -> dict:
    """What a benchmark records of its machine, and `builder devices` shows: the generic facts, and each backend's
    in its `extra` section."""
    found = backend_facts(root)
    return generic_facts(root) | ({"extra": found} if found else {})


def thermal_state(root: Path = Path("/")) -> dict:
    """Whether the machine was in a state to give good numbers: CPU governor and clocks, temperatures and,
    on a Raspberry Pi, its throttling flags. A typical x86 VM has none of these, and gives {}."""
    state: dict = {}
    policies = sorted((root / "sys/devices/system/cpu/cpufreq").glob("policy*"), key=lambda p: (len(p.name), p.name))
    governors = {p.name: g for p in policies if (g := read_text(p / "scaling_governor"))}
    if governors:  # one value when all policies agree, the usual case
        state["cpu_governor"] = next(iter(governors.values())) if len(set(governors.values())) == 1 else governors
    freqs = {p.name: {name: khz // 1000 for name in ("cur", "min", "max")
                      if (khz := _int(p / f"scaling_{name}_freq")) is not None} for p in policies}
    state["cpu_freq_mhz"] = {policy: mhz for policy, mhz in freqs.items() if mhz}
    temperatures: dict[str, float] = {}
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=lambda p: (len(p.name), p.name))
    for zone in zones:
        millidegrees = _int(zone / "temp")
        if millidegrees is not None:
            name = read_text(zone / "type") or zone.name
            temperatures[f"{name} ({zone.name})" if name in temperatures else name] = millidegrees / 1000
    state["temperatures_c"] = temperatures
    raw = _throttled_raw(root)
    if raw:
        bits = int(raw, 16)
        state["throttled"] = {"raw": raw, **{name: bool(bits >> bit & 1) for bit, name in THROTTLE_BITS.items()}}
    return {key: value for key, value in state.items() if value}


def _throttled_raw(root: Path) -> str | None:
    """A Raspberry Pi's throttling word ("0x50005"): `vcgencmd get_throttled`, else the firmware driver's sysfs
    node, which a container sees without vcgencmd or /dev/vchiq (the device image has neither)."""
    found = re.search(r"throttled=(0x[0-9a-fA-F]+)", tool_output("vcgencmd", "get_throttled"))
    if found:
        return found[1]
    text = read_text(root / FIRMWARE_THROTTLED)
    return f"0x{text.lower()}" if text and re.fullmatch(r"[0-9a-fA-F]+", text) else None


def throttled_during(before: dict, after: dict) -> list[str]:
    """The throttling a Pi reported as happening before or after the timed runs ("under_voltage_now", ...):
    a benchmark taken so is not the device's figure. The sticky "occurred" bits do not count: they stay set
    from any moment since boot."""
    now = [name for name in THROTTLE_BITS.values() if name.endswith("_now")]
    return [name for name in now if any((state.get("throttled") or {}).get(name) for state in (before, after))]


def main() -> None:
    print(json.dumps({"machine": machine_facts(), "thermal": thermal_state()}, indent=2))


if __name__ == "__main__":  # the backends register their probes with the module, not with __main__
    from builder.stage import device_facts

    device_facts.main()
