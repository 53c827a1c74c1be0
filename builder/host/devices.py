"""Where device stages run: the devices of a fleet, and a pool that hands them out one job at a time.

A device is a Docker engine (ssh://, tcp://, unix:// or a context) that runs the
device stages of some targets. Without one, the build host is the device: its
toolchain stages may run side by side, but a device stage (a benchmark) takes
the machine alone. A device that stops answering is marked down and its job
moves to another device of the same target.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from builder.config.fleet import DeviceSpec, EngineTLS, Fleet
from builder.config.loader import load_model
from builder.errors import ConfigError, DeviceError

FLEET_ENV = "EDGE_BUILDER_FLEET"


@dataclass(frozen=True)
class Device:
    name: str
    engine: str | None = None            # None: this machine (the build engine, or this Python)
    targets: tuple[str, ...] | None = None  # None: every target of the run
    labels: dict[str, str] = field(default_factory=dict)
    jobs: int = 1
    tls: EngineTLS | None = None

    @property
    def is_host(self) -> bool:
        return self.engine is None

    @property
    def tls_files(self) -> tuple[Path, Path, Path] | None:
        return (self.tls.ca_cert, self.tls.client_cert, self.tls.client_key) if self.tls else None

    def serves(self, target_id: str) -> bool:
        return self.targets is None or target_id in self.targets

    @classmethod
    def from_spec(cls, spec: DeviceSpec) -> Device:
        return cls(name=spec.name, engine=spec.engine, targets=tuple(spec.targets), labels=dict(spec.labels),
                   jobs=spec.jobs, tls=spec.tls)


HOST = Device(name="host")


def load_fleet(path: Path | None) -> Fleet:
    """The fleet file given (else $EDGE_BUILDER_FLEET); an empty fleet when there is none."""
    path = path or (Path(os.environ[FLEET_ENV]) if os.environ.get(FLEET_ENV) else None)
    if path is None:
        return Fleet()
    if not path.is_file():
        raise ConfigError(f"fleet file {path} does not exist", hint=f"give --fleet FILE or {FLEET_ENV}=FILE")
    return load_model(path, Fleet)


def choose_devices(fleet: Fleet, wanted: list[str]) -> list[Device]:
    """`--device` values (fleet names, engine URLs or context names), else every device of the fleet."""
    if not wanted:
        return [Device.from_spec(d) for d in fleet.devices]
    by_name = {d.name: d for d in fleet.devices}
    chosen = []
    for value in wanted:
        if value in by_name:
            chosen.append(Device.from_spec(by_name[value]))
        elif "://" in value or not fleet.devices:  # an ad-hoc engine serves every target of the run
            chosen.append(Device(name=_name_of(value), engine=value))
        else:
            raise ConfigError(f"--device {value}: no such device in the fleet",
                              hint=f"fleet devices: {', '.join(by_name)}; or give an engine URL like ssh://user@host")
    return chosen


def _name_of(address: str) -> str:
    """ssh://pi@rpi5:22 -> rpi5: what the results call an ad-hoc device."""
    rest = address.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split(":")[0].strip("/") or address


class HostLock:
    """Readers (toolchain stages) share the build host; a writer (a host device stage) has it alone.

    Writers go first: once a benchmark waits, no new conversion starts on the host.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writer and not self._readers)
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class DevicePool:
    """Hands out a free, answering device of a target; the host when the target has none.

    A device marked down is probed again (`probe(device) -> bool`, e.g. a new engine connection) once it
    has been down `readmit_after` seconds, whenever a job waits for a device or finds none up; one that
    answers is back in the pool.
    """

    def __init__(self, devices: list[Device], *, toolchain_jobs: int = 1, echo: Callable[[str], None] = print,
                 probe: Callable[[Device], bool] | None = None, readmit_after: float = 30.0):
        self.devices = devices
        self.echo = echo
        self.host = HostLock()
        self.toolchain_jobs = toolchain_jobs
        self._toolchain_slots = threading.Semaphore(toolchain_jobs)
        self.down: dict[str, str] = {}
        self._down_since: dict[str, float] = {}
        self.probe, self.readmit_after = probe, readmit_after
        self._busy = {d.name: 0 for d in devices}
        self._cond = threading.Condition()

    def for_target(self, target_id: str) -> list[Device]:
        return [d for d in self.devices if d.serves(target_id)]

    def stages_at_once(self) -> int:
        return self.toolchain_jobs + sum(d.jobs for d in self.devices) + 1  # the +1: the build host as a device

    @contextlib.contextmanager
    def toolchain(self) -> Iterator[None]:
        """A toolchain stage on the build host: up to `toolchain_jobs` at once, never during a host benchmark."""
        with self._toolchain_slots, self.host.shared():
            yield

    @contextlib.contextmanager
    def device(self, target_id: str) -> Iterator[Device]:
        """A device of `target_id` for one device stage; waits while all of them are busy."""
        if not self.for_target(target_id):
            with self.host.exclusive():
                yield HOST
            return
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._free(target_id) is not None or not self._up(target_id),
                                    timeout=self.readmit_after if self.probe and self.down else None)
                chosen = self._free(target_id)
                if chosen is not None:
                    self._busy[chosen.name] += 1
                    break
                none_up = not self._up(target_id)
            if not self._readmit(target_id) and none_up:
                raise DeviceError(
                    f"no device of target {target_id} answers: "
                    + "; ".join(f"{name}: {why}" for name, why in self.down.items()),
                    cause="device-unavailable",
                    hint="bring a device back (`builder devices` shows which answer), or add one to the fleet",
                )
        try:
            yield chosen
        finally:
            with self._cond:
                self._busy[chosen.name] -= 1
                self._cond.notify_all()

    def mark_down(self, device: Device, why: str) -> None:
        with self._cond:
            self.down[device.name] = why
            self._down_since[device.name] = time.monotonic()
            self._cond.notify_all()
        self.echo(f"device {device.name} is down: {why}")

    def _readmit(self, target_id: str) -> bool:
        """Probe the target's devices down long enough (outside the lock: a probe takes seconds); True if
        one is back."""
        if not self.probe:
            return False
        now = time.monotonic()
        with self._cond:
            due = [d for d in self.for_target(target_id)
                   if d.name in self.down and now - self._down_since[d.name] >= self.readmit_after]
        back = [d for d in due if self.probe(d)]
        with self._cond:
            for d in back:
                self.down.pop(d.name, None)
            self._cond.notify_all()
        for d in back:
            self.echo(f"device {d.name} answers again: back in the pool")
        return bool(back)

    def _up(self, target_id: str) -> list[Device]:
        return [d for d in self.for_target(target_id) if d.name not in self.down]

    def _free(self, target_id: str) -> Device | None:
        free = [d for d in self._up(target_id) if self._busy[d.name] < d.jobs]
        return min(free, key=lambda d: self._busy[d.name] / d.jobs) if free else None
