"""`--cluster` with the docker runner: two Ray nodes of this machine are the build hosts (the build engine) and
the CI's two device engines (.ci/devices.sh) the boards, each a node's `device:<name>` resource. What each board
ran is read from its engine's own event stream (container start and die), not from what the runs say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")  # the `cluster` extra (CI installs it)
from ray.cluster_utils import Cluster  # noqa: E402

from builder.host.docker_api import MANAGED_LABEL  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "recipes" / "tiny-mobilenet.yaml"
OBJECT_STORE = 80 << 20
BOARDS = ("eb-dev1", "eb-dev2")
STAGE_LABEL = "dev.edge-builder.recipe"  # on a stage's container (runners/docker.py), not on an image build's
RUN = uuid.uuid4().hex[:6]


def two_recipes(folder: Path) -> list[Path]:
    """tiny-a-<id>, tiny-b-<id>: names no other run on the shared device engines has (their events are told
    apart by them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in (f"tiny-a-{RUN}", f"tiny-b-{RUN}"):
        path = folder / f"{name}.yaml"
        path.write_text(TINY.read_text().replace("name: tiny-mobilenet", f"name: {name}"))
        paths.append(path)
    return paths


def fleet_file(folder: Path, urls: list[str], registry: str) -> Path:
    lines = [f"registry: {registry}/edge-builder", "devices:"]
    for name, url in zip(BOARDS, urls):
        lines += [f"  - name: {name}", "    targets: [rpi]", f"    engine: {url}"]
    path = folder / "fleet.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_cluster() -> tuple[Cluster, dict]:
    """A head that runs nothing; two build hosts (the build engine of DOCKER_HOST), each reaching one board."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE})
    nodes = {b: c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE, resources={"docker": 1, f"device:{b}": 1})
             for b in BOARDS}
    c.wait_for_nodes()
    return c, nodes


def driver(address: str, paths: list[Path], fleet: Path, out: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "builder.cli", "run", *map(str, paths), "-t", "rpi",
                             "--variant", "fp32", "--runner", "docker", "--fleet", str(fleet), "--remeasure",
                             "--out", str(out), "--cluster", address],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"EDGE_BUILDER_STEP_CACHE": str(cache), "COLUMNS": "300"})


def stage_containers(socket: str, since: float) -> list[tuple[str, float, float]]:
    """(container, started, died) of every stage container of this test's recipes that the engine ran since
    `since`, from its event stream."""
    import docker

    client = docker.DockerClient(base_url=socket)
    try:
        events = client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                               filters={"type": "container", "label": STAGE_LABEL})
        started: dict[str, float] = {}
        spans = []
        for event in events:
            if not event["Actor"]["Attributes"].get(STAGE_LABEL, "").endswith(f"-{RUN}"):
                continue  # another run's, on an engine that tests share
            cid, when = event["id"], event["timeNano"] / 1e9
            if event["status"] == "start":
                started[cid] = when
            elif event["status"] == "die" and cid in started:
                spans.append((cid, started.pop(cid), when))
        return spans + [(cid, t, float("inf")) for cid, t in started.items()]
    finally:
        client.close()


def overlapping(spans: list[tuple[str, float, float]]) -> list[tuple]:
    return [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[1] < b[2] and b[1] < a[2]]


def remove_stage_containers(socket: str) -> None:
    import docker

    client = docker.DockerClient(base_url=socket)
    for container in client.containers.list(all=True, filters={"label": MANAGED_LABEL}):
        container.remove(force=True)
    client.close()


def test_two_drivers_at_once_never_run_two_stages_on_one_board(device_urls, device_sockets, test_registry,
                                                               tmp_path):
    """2 recipes x rpi from each of two drivers started together: 4 device stages, 2 boards."""
    paths = two_recipes(tmp_path / "recipes")
    fleet = fleet_file(tmp_path, device_urls, test_registry)
    c, _ = start_cluster()
    since = time.time() - 1
    try:
        drivers = [driver(c.address, paths, fleet, tmp_path / f"out{i}", tmp_path / "cache") for i in (1, 2)]
        outputs = [d.communicate(timeout=1500)[0] for d in drivers]
    finally:
        c.shutdown()
    for d, output in zip(drivers, outputs):
        assert d.returncode == 0, output[-5000:]
        assert "Traceback" not in output
    spans = {b: stage_containers(socket, since) for b, socket in zip(BOARDS, device_sockets)}
    assert sum(len(s) for s in spans.values()) == 4, spans  # each driver's two device stages, on the boards
    for board, board_spans in spans.items():
        assert overlapping(board_spans) == [], (board, board_spans)
    assert all(spans.values()), spans  # both boards took stages


def test_a_build_host_killed_mid_stage_leaves_every_job_to_the_other(device_urls, device_sockets, test_registry,
                                                                     tmp_path):
    """eb-dev2's node dies during its device stage: that job finishes on eb-dev1, and the run exits 0."""
    paths = two_recipes(tmp_path / "recipes")
    fleet = fleet_file(tmp_path, device_urls, test_registry)
    c, nodes = start_cluster()
    lines: list[str] = []
    try:
        proc = driver(c.address, paths, fleet, tmp_path / "out", tmp_path / "cache")
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 1200
        while not any("device stage (docker on eb-dev2)" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines[-60:])
            time.sleep(0.5)
        time.sleep(5)  # into the stage: the device image or its container
        c.remove_node(nodes["eb-dev2"], allow_graceful=False)
        proc.wait(timeout=1500)
        reader.join(timeout=10)
    finally:
        c.shutdown()
        remove_stage_containers(device_sockets[1])  # the lost node's container, which its engine kept
    output = "".join(lines)
    assert proc.returncode == 0, output[-5000:]
    assert "device eb-dev2 is left out of this run" in output, output[-5000:]
    for recipe in (f"tiny-a-{RUN}", f"tiny-b-{RUN}"):
        results = json.loads((tmp_path / "out" / recipe / "rpi" / "results.json").read_text())["variants"]
        assert results[0]["status"] == "ok"
        assert results[0]["benchmark"]["device"]["device"] == "eb-dev1"
