"""A Ray cluster in place of one machine (`builder run --cluster ADDRESS`, or RAY_ADDRESS).

Ray does here what DevicePool's threads, locks and probes do on one machine:
- build hosts are Ray nodes that offer the runner's resource (`docker`, or `local` for nodes that run stages
  in their own Python): a toolchain stage takes one unit on any of them; Ray queues it while all are busy and,
  when its node dies, runs it again on another (the task's `max_retries`);
- each board of the fleet is a resource of capacity one, `device:<name>`, offered by the node that reaches it
  (`ray start --resources '{"device:pi-1": 1}'`): a device stage holds it for its whole run, so every other
  stage that asks for that board, from any driver of any user, waits in Ray's queue;
- a node's death is Ray's to detect (its health checks); a board whose node is gone is no longer offered.

This module is imported only on that path: a run without a cluster never imports Ray.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator

import ray
from ray.experimental import internal_kv

from builder.errors import ConfigError, DeviceError, EngineError
from builder.host.devices import HOST, Device, HostLock

NAMESPACE = "edge-builder"
DEVICE_RESOURCE = "device:{name}"
_LEASE_KEY = "edge-builder/lease/{name}"


def device_resource(device: Device) -> str:
    return DEVICE_RESOURCE.format(name=device.name)


def connect(address: str) -> None:
    """Join the cluster at `address` (ray://HEAD:10001 through Ray Client, or HEAD:6379) as a driver."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING",
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EngineError(f"--cluster {address}: no Ray cluster answers there: {exc}",
                          hint="start one with `ray start --head` (see the README's Teams section), or give "
                               "its address as ray://HEAD:10001 or HEAD:6379") from None


def offered() -> dict[str, float]:
    """Every custom resource the live nodes offer, with its total (Ray's node table, not a list of ours)."""
    totals: Counter[str] = Counter()
    for node in ray.nodes():
        if node.get("Alive"):
            totals.update(node.get("Resources", {}))
    return dict(totals)


def require_build_hosts(resource: str) -> None:
    """Stop before queueing stages that no node could ever take (Ray would keep them waiting)."""
    if offered().get(resource, 0) < 1:
        raise ConfigError(f"--cluster: no Ray node offers the `{resource}` resource, so no stage could run",
                          hint=f"start each build host with `ray start --address HEAD:6379 --resources "
                               f"'{{\"{resource}\": 1}}'`")


class ClusterPool:
    """DevicePool's interface for run.py on a cluster. It only names the board a device stage asks Ray for:
    the lease, the queue and the health of nodes are Ray's.

    A target with no board in the fleet has its device stage on this machine, as without a cluster (one at
    a time: a benchmark has the machine alone). The board asked for is a live one of the target, free now if
    one is, else the one this driver has asked for least; a board whose engine stopped answering is left out
    for the rest of the run (Ray knows nodes, not the engines behind them)."""

    def __init__(self, devices: list[Device], echo: Callable[[str], None] = print):
        self.devices = devices
        self.echo = echo
        self.host = HostLock()
        self.down: dict[str, str] = {}
        self._asked: Counter[str] = Counter()

    def stages_at_once(self) -> int:
        return 64  # a driver's threads only wait on Ray: the cluster bounds what runs

    def for_target(self, target_id: str) -> list[Device]:
        return [d for d in self.devices if d.serves(target_id)]

    @contextlib.contextmanager
    def toolchain(self) -> Iterator[None]:
        yield  # Ray queues it on a build host's resource

    @contextlib.contextmanager
    def device(self, target_id: str) -> Iterator[Device]:
        boards = self.for_target(target_id)
        if not boards:
            with self.host.exclusive():
                yield HOST
            return
        live = offered()
        up = [d for d in boards if live.get(device_resource(d), 0) >= 1 and d.name not in self.down]
        if not up:
            gone = [f"{d.name}: {self.down.get(d.name, f'no live Ray node offers {device_resource(d)}')}"
                    for d in boards]
            raise DeviceError(f"no board of target {target_id} is on the cluster: " + "; ".join(gone),
                              cause="device-unavailable",
                              hint="start a node that reaches the board with `ray start --address HEAD:6379 "
                                   "--resources '{\"device:NAME\": 1}'` (`builder devices --cluster` lists them)")
        free = ray.available_resources()
        chosen = min(up, key=lambda d: (free.get(device_resource(d), 0) < 1, self._asked[d.name]))
        self._asked[chosen.name] += 1
        yield chosen

    def mark_down(self, device: Device, why: str) -> None:
        self.down[device.name] = why
        self.echo(f"device {device.name} is left out of this run: {why}")


def holder() -> dict:
    """Who asks for a board: what `builder devices --cluster` shows beside its lease."""
    return {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid()}


@contextlib.contextmanager
def lease_note(device: Device, who: dict) -> Iterator[None]:
    """Inside a device stage's task (which holds the board's resource): say who holds it, for the view. Only a
    note: the lease itself is the resource, and a note of a task that died is shown only while the board is
    held (by the next holder, who writes its own)."""
    key = _LEASE_KEY.format(name=device.name)
    internal_kv._internal_kv_put(key, json.dumps(who | {"since": time.time()}), overwrite=True)
    try:
        yield
    finally:
        internal_kv._internal_kv_del(key)


def leases() -> list[dict]:
    """Every board on the cluster: the nodes that offer it, whether it is held, and by whom."""
    free = ray.available_resources()
    boards: dict[str, dict] = {}
    for node in ray.nodes():
        for resource, total in node.get("Resources", {}).items():
            if not resource.startswith("device:"):
                continue
            name = resource.split(":", 1)[1]
            board = boards.setdefault(name, {"device": name, "resource": resource, "capacity": 0.0, "nodes": []})
            board["nodes"].append({"node": node["NodeManagerAddress"], "id": node["NodeID"], "alive": node["Alive"]})
            board["capacity"] += total if node["Alive"] else 0.0
    for board in boards.values():
        board["held"] = round(board["capacity"] - free.get(board["resource"], 0.0), 3)
        note = internal_kv._internal_kv_get(_LEASE_KEY.format(name=board["device"])) if board["held"] else None
        board["holder"] = json.loads(note) if note else None
    return sorted(boards.values(), key=lambda b: b["device"])
