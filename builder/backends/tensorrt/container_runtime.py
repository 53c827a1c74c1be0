"""The NVIDIA container runtime, which a Jetson's device stage runs with: it mounts the GPU's libraries (those
TensorRT loads) into running containers. How to install it, and to make it the engine's default."""

from __future__ import annotations

import shutil
from pathlib import Path

from builder import container_runtimes
from builder.backends.tensorrt.runtime import GPU_HINT


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
