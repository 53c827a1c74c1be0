"""What TensorRT adds on the host: a Jetson's words on the report's line of the machine a benchmark ran on (its L4T
release and power mode), and the NVIDIA container runtime, which a Jetson's device stage runs with: it mounts the
GPU's libraries (those TensorRT loads) into running containers (how to install it, and to make it the engine's
default)."""

from __future__ import annotations

import shutil
from pathlib import Path

from builder.backends.tensorrt.facts import JetsonFacts
from builder.backends.tensorrt.runtime import GPU_HINT
from builder.host import container_runtimes, report
from builder.records import DeviceFacts


def jetson_words(device: DeviceFacts) -> list[str]:
    facts = (device.extra or {}).get("tensorrt")
    if not isinstance(facts, JetsonFacts):
        return []
    return [word for word in (facts.l4t and f"L4T {facts.l4t}", facts.jetson_power_mode) if word]


report.register_device_words(jetson_words)


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/etc/nv_tegra_release").exists()


container_runtimes.register(container_runtimes.ContainerRuntime(
    "nvidia", vendor="NVIDIA",
    install="install the NVIDIA container toolkit", install_note="JetPack: sudo apt install nvidia-container",
    unreachable_hint=GPU_HINT,
    as_default=("sudo nvidia-ctk runtime configure --runtime=docker --set-as-default && sudo systemctl restart "
                "docker (or \"default-runtime\": \"nvidia\" in /etc/docker/daemon.json)"),
    default_needed_by="a `docker build` that imports TensorRT",
    reaches="NVIDIA GPU", present_here=has_nvidia_gpu,
))
