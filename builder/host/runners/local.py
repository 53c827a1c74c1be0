"""The local runner: the same step code, in the host's Python environment.

Each stage runs in its own `python -m builder.stage.execute` process, as it would in a
container: a stage's memory figures are its own, TensorFlow's global state does
not leak between stages, and parallel matrix runs do not share loggers.
This machine is the only device it knows: a target of another platform is
measured here all the same, and marked as not on the target.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

from builder import versions
from builder.errors import ConfigError, DeviceError, StageDied
from builder.host import container_runtimes, images, locks
from builder.host.devices import HOST, Device
from builder.host.step_cache import StageIdentity
from builder.placement import Placement
from builder.plan import Plan
from builder.stage.device_facts import machine_identity
from builder.stage.execute import STEPS_FAILED, finished_step


def host_platform() -> str:
    machine = platform.machine().lower()
    docker_arch = {uname: arch for arch, uname in locks.ARCHES.items()}
    return f"linux/{docker_arch.get(machine, machine)}"


@cache
def environment() -> str:
    """This Python's version and the version of every package the images lock (all that step code may
    import, directly or not), and the project's step code, as one digest."""
    installed = {}
    for name in locks.locked_packages():
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed[name] = None
    digest = hashlib.sha256(json.dumps([versions.collect(), installed], sort_keys=True).encode())
    for name, data in images.code_files().items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return f"local:{digest.hexdigest()}"


class LocalRunner:
    name = "local"

    def __init__(self, verbose: bool = False):
        self.verbose = verbose  # the tools' own output on the console too

    def identity(self, plan: Plan, stage: str, device: Device = HOST) -> StageIdentity:
        return StageIdentity(environment(), self._placement(plan, device).model_dump(), machine=machine_identity())

    @staticmethod
    def _placement(plan: Plan, device: Device) -> Placement:
        """This machine (named as the device: a cluster's board may be a node itself), standing in for the
        target when it is of another platform."""
        return Placement(device=device.name, on_target=host_platform() == plan.target.platform)

    def run_stage(self, plan: Plan, workdir: Path, stage: str, echo, device: Device = HOST, on_step=None) -> dict:
        if not device.is_host:
            raise ConfigError(f"device {device.name}: the local runner runs on this machine only",
                              hint="use --runner docker to run device stages on a device's engine")
        needed = plan.target.requires.container_runtime
        runtime = container_runtimes.get(needed) if stage == "device" and needed else None
        if runtime and runtime.present_here and not runtime.present_here():
            raise DeviceError(f"target {plan.target.id} needs a device: this machine has no {runtime.reaches}",
                              cause="device-needed", hint=plan.target.requires.note)
        placement = self._placement(plan, device)
        command = [sys.executable, "-m", "builder.stage.execute", str(workdir), "--stage", stage, *placement.args(),
                   *(["--verbose"] if self.verbose else [])]
        tail: list[str] = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = (tail + [line])[-30:]
                if on_step and (step := finished_step(line)):
                    on_step(step, workdir)
                echo(line)
        if proc.returncode not in (0, STEPS_FAILED):
            raise StageDied(f"the {stage} stage of {plan.target.id} exited with {proc.returncode}", log_tail=tail)
        return {"placement": placement.model_dump()}
