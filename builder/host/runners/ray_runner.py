"""The cluster runner: each stage a Ray task on a node, run there by the runner that node makes (docker or local).

The run's folder travels with the task through Ray's object store, as a tar, and comes back the same way. We
chose that over a cache folder every node mounts: build hosts need no shared file system, and the step cache
stays where the driver keeps it (`~/.cache/edge-builder/steps`, or a team's folder): run.py places the hits
before a stage is sent, so only what must run travels, and keeps each step the task brought back. A node never
reads or writes the cache, so nothing a dead attempt did reaches it; and only the attempt Ray hands back is
unpacked into the run, so a late result of an attempt Ray gave up lands nowhere (what DockerRunner's fencing
token does for a device it gave up, the object store does here; inside the task that fencing still guards a
board's engine).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import ray
from ray.exceptions import RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from builder.errors import BuilderError, EngineError, EngineUnreachable
from builder.host import cluster
from builder.host.devices import HOST, Device
from builder.host.docker_tar import dir_tar, take_work_dir
from builder.host.runners.select import select_runner
from builder.host.step_cache import StageIdentity
from builder.plan import Plan

TOOLCHAIN_RETRIES = 3  # a toolchain stage whose node dies runs again on another build host
_WATCH_S = 5.0  # while a stage waits for its board: how often to ask Ray whether a live node still offers it


@dataclass(frozen=True)
class NodeRunner:
    """The runner each node makes for its stages: `docker` (the node's own engine, and the boards' engines
    from there) or `local` (the node's Python: a board that runs stages natively is a node itself)."""

    name: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def resource(self) -> str:
        """What a build host offers to take this runner's stages."""
        return self.name

    def device_for(self, device: Device) -> Device:
        """The device the node's runner is given: the board's engine under docker; under local the node is
        the board (this machine, by the board's name)."""
        return Device(name=device.name) if self.name == "local" else device


class _Lines:
    """A node's runner is made once per worker process; what it says goes to the task it runs now."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


_said = _Lines()


@cache
def _runner(spec: NodeRunner):
    return select_runner(spec.name, echo=_said, **dict(spec.options))


def _pack(workdir: Path) -> bytes:
    with dir_tar(workdir, "run", owner=(0, 0)) as chunks:
        return b"".join(chunks)


def _unpack(data: bytes, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    take_work_dir(iter([data]), workdir)


def stage_task(plan: Plan, tarball: bytes, stage: str, device: Device, spec: NodeRunner, who: dict) -> tuple:
    """On a node: the stage in a fresh folder, from the driver's tar; (info, the folder as a tar, lines, lease)."""
    _said.take()
    node = ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory(prefix="edge-builder-stage-") as tmp:
        workdir = Path(tmp) / "run"
        _unpack(tarball, workdir)
        started = time.time()
        held = contextlib.nullcontext() if device.is_host else cluster.lease_note(device, who)
        with held:
            info = _runner(spec).run_stage(plan, workdir, stage, _said, spec.device_for(device))
        lease = {"device": device.name, "node": node, "from": started, "to": time.time()}
        return info, _pack(workdir), _said.take(), lease


def identity_task(plan: Plan, stage: str, device: Device, spec: NodeRunner) -> StageIdentity:
    """On the board's node: what the board's stage runs in and on (its machine is part of its cache keys)."""
    return _runner(spec).identity(plan, stage, spec.device_for(device))


_stage_remote = ray.remote(stage_task)
_identity_remote = ray.remote(identity_task)


class RayRunner:
    """Runs toolchain stages and board stages as Ray tasks; a device stage without a board on this machine,
    with `here` (the same runner, made on the driver), as a run without a cluster would."""

    def __init__(self, spec: NodeRunner, here):
        self.spec = spec
        self.here = here
        self.name = here.name
        self.who = cluster.holder()

    def identity(self, plan: Plan, stage: str, device: Device = HOST) -> StageIdentity:
        if device.is_host:  # toolchain: its image's content hash is the same on every node
            return self.here.identity(plan, stage, device)
        ref = _identity_remote.options(num_cpus=0, scheduling_strategy=self._on_board_node(device)).remote(
            plan, stage, device, self.spec)
        return self._result(ref, cluster.device_resource(device), device)

    def run_stage(self, plan: Plan, workdir: Path, stage: str, echo, device: Device = HOST, on_step=None) -> dict:
        if stage == "device" and device.is_host:
            return self.here.run_stage(plan, workdir, stage, echo, device, on_step=on_step)
        # a board's retry would wait for a board whose node is gone: run.py's loop asks for another board instead
        resource, retries = ((self.spec.resource, TOOLCHAIN_RETRIES) if device.is_host
                             else (cluster.device_resource(device), 0))
        ref = _stage_remote.options(num_cpus=0, resources={resource: 1}, max_retries=retries,
                                    name=f"{plan.recipe.name}/{plan.target.id}/{stage}").remote(
            plan, _pack(workdir), stage, device, self.spec, self.who | {"recipe": plan.recipe.name,
                                                                       "target": plan.target.id})
        info, tarball, lines, lease = self._result(ref, resource, device)
        for line in lines:
            echo(line)
        echo(f"  ray: {stage} stage on node {lease['node'][:12]}"
             + ("" if device.is_host else f", {cluster.device_resource(device)} held {lease['from']:.3f} .. {lease['to']:.3f}"))
        _unpack(tarball, workdir)
        return info

    @staticmethod
    def _result(ref, resource: str, device: Device):
        """The task's value. Ray keeps a task waiting while no node offers its resource: one whose last node left
        ends here, a board's as an unreachable engine (run.py then asks for another board); a board's task
        whose node died likewise. The project's own errors come back as they were raised."""
        while not ray.wait([ref], timeout=_WATCH_S)[0]:
            if cluster.offered().get(resource, 0) < 1:
                ray.cancel(ref, force=True)
                error = EngineError if device.is_host else EngineUnreachable
                raise error(f"no live Ray node offers `{resource}` any more", hint="start one with `ray start "
                            f"--address HEAD:6379 --resources '{{\"{resource}\": 1}}'`")
        try:
            return ray.get(ref)
        except RayTaskError as exc:
            if isinstance(exc.cause, BuilderError):
                raise exc.cause from None
            raise EngineError(f"a stage's Ray task failed on its node: {type(exc.cause).__name__}: {exc.cause}",
                              hint="--debug shows where") from exc
        except RayError as exc:
            if device.is_host:
                raise EngineError(f"a stage's Ray task failed ({TOOLCHAIN_RETRIES} retries): {type(exc).__name__}",
                                  hint="`ray status` shows the cluster's nodes") from exc
            raise EngineUnreachable(f"device {device.name}: its Ray node died during the stage: "
                                    f"{type(exc).__name__}") from None

    @staticmethod
    def _on_board_node(device: Device):
        """Pinned to a live node that offers the board (soft=False: never another machine's figures)."""
        resource = cluster.device_resource(device)
        for node in ray.nodes():
            if node.get("Alive") and node.get("Resources", {}).get(resource):
                return NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        raise EngineUnreachable(f"device {device.name}: no live Ray node offers {resource}")


def join(address: str, here, options: dict, devices: list[Device], echo) -> tuple[RayRunner, cluster.ClusterPool]:
    """The runner and pool of `--cluster ADDRESS`: `here` is the runner made on this machine, and each node
    makes its own of the same name with `options` (select_runner's)."""
    cluster.connect(address)
    spec = NodeRunner(here.name, tuple(sorted(options.items())))
    cluster.require_build_hosts(spec.resource)
    echo(f"cluster: {address} (Ray {ray.__version__}): stages run as tasks on nodes offering `{spec.resource}`"
         + (f", boards as `device:NAME`: {', '.join(d.name for d in devices)}" if devices else ""))
    return RayRunner(spec, here), cluster.ClusterPool(devices, echo=echo)
