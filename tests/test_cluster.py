"""`--cluster`: stages as Ray tasks on several Ray nodes of this machine (ray.cluster_utils), boards as resources
of capacity one. These tests use the local runner: each node runs its stages in its own Python, and a board is
a node itself. tests/test_cluster_docker.py does the same with the CI's two device engines as the boards."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")  # the `cluster` extra (CI installs it)
from ray.cluster_utils import Cluster  # noqa: E402

from builder.host import cluster  # noqa: E402
from builder.host.devices import Device  # noqa: E402
from builder.host.matrix import run_matrix  # noqa: E402
from builder.host.runners.local import LocalRunner  # noqa: E402
from builder.host.runners.ray_runner import join  # noqa: E402
from builder.host.step_cache import CachePolicy  # noqa: E402

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"
TARGET = "x86-tflite"
OBJECT_STORE = 80 << 20  # the smallest Ray takes: memory is short on CI machines
BOARDS = ("pi-1", "pi-2")
_HELD = re.compile(r"device:(\S+) held ([\d.]+) \.\. ([\d.]+)")


def recipes(folder: Path, bench_seconds: float) -> list[Path]:
    """Two recipes of the tiny model (fp32 only), each benchmark at least `bench_seconds` long."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("tiny-a", "tiny-b"):
        data = yaml.safe_load(TINY.read_text())
        data |= {"name": name, "variants": {"fp32": {}}}
        data["benchmark"] |= {"min_seconds": bench_seconds}
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        paths.append(path)
    return paths


def fleet_file(folder: Path) -> Path:
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": b, "targets": [TARGET], "engine": "local"} for b in BOARDS]}))
    return path


def boards() -> list[Device]:
    return [Device(name=b, engine="local", targets=(TARGET,)) for b in BOARDS]


def held(lines: list[str]) -> list[tuple[str, float, float]]:
    """(board, from, to) of every device stage a driver printed."""
    return [(m[1], float(m[2]), float(m[3])) for line in lines if (m := _HELD.search(line))]


def overlapping(leases: list[tuple[str, float, float]]) -> list[tuple]:
    return [(a, b) for i, a in enumerate(leases) for b in leases[i + 1:]
            if a[0] == b[0] and a[1] < b[2] and b[1] < a[2]]


@pytest.fixture(scope="module")
def ray_cluster():
    """A head that runs nothing and two build hosts, each the node of one board."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE})
    nodes = {b: c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE, resources={"local": 1, f"device:{b}": 1})
             for b in BOARDS}
    c.wait_for_nodes()
    cluster.connect(c.address)
    yield c, nodes
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def warm(ray_cluster, tmp_path_factory):
    """The two recipes' toolchain stages run once on the cluster, into a step cache the tests copy: then a
    test runs only device stages (--remeasure), which are what leases are about."""
    root = tmp_path_factory.mktemp("warm")
    paths = recipes(root / "recipes", bench_seconds=5)
    runner, pool = join(ray_cluster[0].address, LocalRunner(), {"verbose": False}, boards(), lambda line: None)
    lines: list[str] = []
    outcomes = run_matrix(paths, [TARGET], runner, out=root / "out", pool=pool,
                          cache=CachePolicy(root / "cache"), echo=lines.append)
    assert [[r.status for r in o.results] for o in outcomes] == [["ok"], ["ok"]], lines
    toolchain_nodes = {line.split()[-1] for line in lines if "ray: toolchain stage on node" in line}
    assert len(toolchain_nodes) == 2, lines  # one build host each: Ray spread them
    return root, paths


def _driver(address: str, paths: list[Path], fleet: Path, out: Path, cache: Path) -> subprocess.Popen:
    env = os.environ | {"EDGE_BUILDER_STEP_CACHE": str(cache), "RAY_ADDRESS": address}
    return subprocess.Popen([sys.executable, "-m", "builder.cli", "run", *map(str, paths), "-t", TARGET,
                             "--runner", "local", "--fleet", str(fleet), "--remeasure", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_two_drivers_at_once_never_hold_one_board_together(ray_cluster, warm, tmp_path):
    root, paths = warm
    shutil.copytree(root / "cache", tmp_path / "cache")
    fleet = fleet_file(tmp_path)
    drivers = [_driver(ray_cluster[0].address, paths, fleet, tmp_path / f"out{i}", tmp_path / "cache") for i in (1, 2)]
    views = []
    while any(d.poll() is None for d in drivers):  # `builder devices --cluster` while they run
        view = subprocess.run([sys.executable, "-m", "builder.cli", "devices", "--cluster", ray_cluster[0].address,
                               "--json"], capture_output=True, text=True, timeout=120)
        assert view.returncode == 0, view.stdout + view.stderr
        views.append(json.loads(view.stdout))
    outputs = [d.communicate()[0] for d in drivers]
    for driver, output in zip(drivers, outputs):
        assert driver.returncode == 0, output
        assert "device stage: every step cached" not in output
    leases = held("\n".join(outputs).splitlines())
    assert len(leases) == 4 and {b for b, _, _ in leases} == set(BOARDS), outputs
    assert overlapping(leases) == [], leases
    shown = [b for view in views for b in view if b["held"]]
    assert shown, views  # a board was seen leased, with its holder
    assert all(b["holder"]["target"] == TARGET and b["holder"]["recipe"] in ("tiny-a", "tiny-b")
               for b in shown if b["holder"]), shown
    for i in (1, 2):
        for name in ("tiny-a", "tiny-b"):
            results = json.loads((tmp_path / f"out{i}" / name / TARGET / "results.json").read_text())
            assert results["variants"][0]["benchmark"]["device"]["device"] in BOARDS  # the board's name, not "host"


def test_a_board_whose_node_dies_mid_stage_hands_its_job_to_the_other(warm, tmp_path):
    """Its own cluster: this one loses a node."""
    root, _ = warm
    shutil.copytree(root / "cache", tmp_path / "cache")
    paths = recipes(tmp_path / "recipes", bench_seconds=6)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE})
    nodes = {b: c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE, resources={"local": 1, f"device:{b}": 1})
             for b in BOARDS}
    c.wait_for_nodes()
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from builder.host.devices import Device
        from builder.host.matrix import run_matrix
        from builder.host.runners.local import LocalRunner
        from builder.host.runners.ray_runner import join
        from builder.host.step_cache import CachePolicy
        devices = [Device(name=b, engine="local", targets=({TARGET!r},)) for b in {BOARDS!r}]
        runner, pool = join({c.address!r}, LocalRunner(), {{"verbose": False}}, devices, lambda line: print(line, flush=True))
        outcomes = run_matrix([Path(p) for p in {[str(p) for p in paths]!r}], [{TARGET!r}], runner,
                              out=Path({str(tmp_path / 'out')!r}), pool=pool,
                              cache=CachePolicy(Path({str(tmp_path / 'cache')!r}), remeasure=True),
                              echo=lambda line: print(line, flush=True))
        print("OUTCOMES", [(o.recipe, o.error, [r.status for r in o.results]) for o in outcomes], flush=True)
    """)
    try:
        driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        while not any("device stage (local on pi-2)" in line for line in lines):
            assert time.monotonic() < deadline and driver.poll() is None, lines
            time.sleep(0.2)
        time.sleep(2)  # inside the benchmark (3 s at least)
        c.remove_node(nodes["pi-2"], allow_graceful=False)
        driver.wait(timeout=300)
        reader.join(timeout=10)
        output = "".join(lines)
        assert driver.returncode == 0, output
        assert "device pi-2 is left out of this run" in output, output
        assert "OUTCOMES [('tiny-a', None, ['ok']), ('tiny-b', None, ['ok'])]" in output, output
        assert {b for b, _, _ in held(output.splitlines())} == {"pi-1"}, output  # only pi-1 finished any
    finally:
        c.shutdown()


def test_no_board_on_the_cluster_is_a_clear_failure(ray_cluster, warm, tmp_path):
    root, paths = warm
    shutil.copytree(root / "cache", tmp_path / "cache")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"devices": [{"name": "pi-9", "targets": [TARGET], "engine": "local"}]}))
    proc = subprocess.run([sys.executable, "-m", "builder.cli", "run", str(paths[0]), "-t", TARGET, "--runner", "local",
                           "--fleet", str(fleet), "--remeasure", "--out", str(tmp_path / "out"),
                           "--cluster", ray_cluster[0].address],
                          capture_output=True, text=True, env=os.environ | {"EDGE_BUILDER_STEP_CACHE": str(tmp_path / "cache")},
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no board of target x86-tflite is on the cluster: pi-9: no live Ray node offers device:pi-9" in proc.stdout


def test_without_build_hosts_the_run_stops_before_queueing(tmp_path):
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE})
    try:
        proc = subprocess.run([sys.executable, "-m", "builder.cli", "run", str(TINY), "-t", TARGET, "--runner", "local",
                               "--out", str(tmp_path / "out"), "--cluster", c.address],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "no Ray node offers the `local` resource" in proc.stdout + proc.stderr
    finally:
        c.shutdown()


def test_a_run_without_a_cluster_never_imports_ray(warm, tmp_path):
    """One machine stays the default: no --cluster and no RAY_ADDRESS, no Ray (checked as the step cache's test
    checks frameworks)."""
    root, paths = warm
    shutil.copytree(root / "cache", tmp_path / "cache")
    script = textwrap.dedent(f"""
        import json, sys
        from builder.host.cli import cli
        try:
            cli.main(["run", {str(paths[0])!r}, "-t", "{TARGET}", "--runner", "local", "--out", {str(tmp_path / "out")!r}],
                     standalone_mode=False)
        finally:
            print("LOADED", json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "ray"
                                               or m.startswith("builder.host.cluster") or m.endswith("ray_runner"))))
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"EDGE_BUILDER_STEP_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "toolchain stage: every step cached, nothing to run" in proc.stdout  # the cluster's steps, reused here
    assert "LOADED []" in proc.stdout, proc.stdout


def test_a_toolchain_stage_whose_node_dies_runs_again_on_another(tmp_path):
    """Ray's own retry: the only build host dies mid-conversion, a new one joins, the stage runs there."""
    path = recipes(tmp_path / "recipes", bench_seconds=0)[0]
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE})
    first = c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE, resources={"local": 1})
    c.wait_for_nodes()
    env = os.environ | {"EDGE_BUILDER_STEP_CACHE": str(tmp_path / "cache")}
    try:
        driver = subprocess.Popen([sys.executable, "-m", "builder.cli", "run", str(path), "-t", TARGET, "--runner",
                                   "local", "--out", str(tmp_path / "out"), "--cluster", c.address],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        while not any("toolchain stage (local)" in line for line in lines):
            assert time.monotonic() < deadline and driver.poll() is None, lines
            time.sleep(0.2)
        time.sleep(8)  # inside the conversion (its output comes back with the task)
        second = c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE, resources={"local": 1})
        c.remove_node(first, allow_graceful=False)
        driver.wait(timeout=600)
        reader.join(timeout=10)
        output = "".join(lines)
        assert driver.returncode == 0, output
        ran_on = [line.split()[-1] for line in lines if "ray: toolchain stage on node" in line]
        assert ran_on == [second.node_id[:12]], output
        results = json.loads((tmp_path / "out" / "tiny-a" / TARGET / "results.json").read_text())["variants"]
        assert [v["status"] for v in results] == ["ok"]
    finally:
        c.shutdown()


def test_the_pool_asks_for_a_free_live_board_and_leaves_out_one_marked_down(ray_cluster):
    pool = cluster.ClusterPool(boards(), echo=lambda line: None)

    @ray.remote(num_cpus=0, resources={"device:pi-1": 1})
    def hold(seconds: float) -> None:
        time.sleep(seconds)

    held_ref = hold.remote(20)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("device:pi-1", 0) >= 1:  # until Ray has placed it
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pool.device(TARGET) as chosen:
        assert chosen.name == "pi-2"  # pi-1 is leased (by another driver, as far as this pool knows)
    pool.mark_down(boards()[1], "its engine stopped answering")
    with pool.device(TARGET) as chosen:
        assert chosen.name == "pi-1"  # leased, but the only one left: the stage will wait in Ray's queue
    with pool.device("rpi") as chosen:
        assert chosen.is_host  # no board of that target: this machine, as without a cluster
    ray.cancel(held_ref, force=True)
