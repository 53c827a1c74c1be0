"""What a Jetson (or any CUDA machine) reports of its GPU stack: L4T and the JetPack that ships it, TensorRT,
CUDA and the power mode. A probe of builder.stage.device_facts (stdlib only, never raises); the facts go into a
benchmark's `device.extra.tensorrt`."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

from builder import records
from builder.records import ExtraSection, Strict
from builder.stage import device_facts
from builder.stage.device_facts import read_text, tool_output

JETPACK = {"35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
           "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1"}
"""Exact L4T release -> the JetPack that ships it (NVIDIA's JetPack archive). Any other release reports its
L4T version alone rather than a guessed JetPack."""


class JetsonFacts(Strict):
    """`device.extra.tensorrt` of a benchmark. On a Jetson the power mode stands for throttling state: there is
    no single throttled flag as on a Raspberry Pi."""

    l4t: str | None = None
    jetpack: str | None = None
    tensorrt: str | None = None
    jetson_power_mode: str | None = None
    jetson_power_mode_id: int | None = None
    cuda: str | None = None


def _cuda(root: Path) -> str | None:
    """The CUDA toolkit version: version.json since CUDA 11, version.txt before."""
    try:
        return json.loads(read_text(root / "usr/local/cuda/version.json") or "")["cuda"]["version"]
    except (ValueError, KeyError, TypeError):
        found = re.search(r"CUDA Version (\S+)", read_text(root / "usr/local/cuda/version.txt") or "")
        return found[1] if found else None


def jetson_facts(root: Path = Path("/")) -> dict:
    """L4T, JetPack, CUDA read under `root`; TensorRT and nvpmodel are this process's own view."""
    facts: dict = {}
    release = re.search(r"R(\d+) \(release\), REVISION: (\d+\.\d+)", read_text(root / "etc/nv_tegra_release") or "")
    if release:
        facts["l4t"] = f"{release[1]}.{release[2]}"
        facts["jetpack"] = JETPACK.get(facts["l4t"])
    try:
        facts["tensorrt"] = importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        pass
    mode = re.search(r"NV Power Mode:\s*(\S+)(?:\s+(\d+))?", tool_output("nvpmodel", "-q"))
    if mode:
        facts["jetson_power_mode"] = mode[1]
        facts["jetson_power_mode_id"] = int(mode[2]) if mode[2] else None
    facts["cuda"] = _cuda(root)
    return {key: value for key, value in facts.items() if value not in (None, "")}


device_facts.register_probe("tensorrt", jetson_facts)
records.register_extra("device", ExtraSection("tensorrt", JetsonFacts, moved=tuple(JetsonFacts.model_fields)))
