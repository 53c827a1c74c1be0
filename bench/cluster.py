"""The cluster path on Ray nodes of this machine: one node against two, and what a stage costs through Ray.

    .venv/bin/python bench/cluster.py [--recipes 4] [-t x86-tflite -t rpi] [--repeat 5] [--out build/bench-cluster]

Needs the `cluster` extra. Starts Ray nodes here (ray.cluster_utils, small object stores), each a build host
(`local: 1`) and a board (`device:node-N`) that runs its stages with the local runner, and:
1. runs a matrix of N copies of the tiny test model (fp32) x the targets, everything built (no step cache),
   on one node, then on two: the wall times and their ratio. On a machine of few cores the two nodes share
   them, so the ratio is bounded by the cores, not by Ray;
2. runs one recipe/target's device stage (the toolchain stage cached) `--repeat` times through the local
   runner and through a one-node cluster: the per-stage overhead of the cluster path (tasks, the run folder
   through the object store, a worker's runner) is the difference of the means.
Prints both and writes <out>/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import ray
import yaml
from ray.cluster_utils import Cluster

from builder.host.devices import Device
from builder.host.matrix import run_matrix
from builder.host.run import run_recipe
from builder.host.runners.local import LocalRunner
from builder.host.runners.ray_runner import join
from builder.host.step_cache import CachePolicy

TINY = Path(__file__).resolve().parent.parent / "tests" / "recipes" / "tiny-mobilenet.yaml"
OBJECT_STORE = 80 << 20
_quiet = lambda line: None  # noqa: E731


def recipes(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        data = yaml.safe_load(TINY.read_text()) | {"name": f"tiny-{i}", "variants": {"fp32": {}}}
        path = folder / f"tiny-{i}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        paths.append(path)
    return paths


def start(nodes: int, targets: list[str]) -> tuple[Cluster, list[Device]]:
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE})
    for n in range(1, nodes + 1):
        c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE, resources={"local": 1, f"device:node-{n}": 1})
    c.wait_for_nodes()
    return c, [Device(name=f"node-{n}", engine="local", targets=tuple(targets)) for n in range(1, nodes + 1)]


def on_cluster(nodes: int, paths: list[Path], targets: list[str], out: Path) -> float:
    c, boards = start(nodes, targets)
    try:
        runner, pool = join(c.address, LocalRunner(), {"verbose": False}, boards, _quiet)
        started = time.perf_counter()
        outcomes = run_matrix(paths, targets, runner, out=out, pool=pool, echo=_quiet,
                              cache=CachePolicy(out / "cache", reuse=False))
        wall = time.perf_counter() - started
        failed = [(o.recipe, o.target, o.error) for o in outcomes if o.error or o.failed]
        if failed:
            raise SystemExit(f"the {nodes}-node matrix failed: {failed}")
        return wall
    finally:
        ray.shutdown()
        c.shutdown()


def stage_overhead(path: Path, target: str, repeat: int, out: Path) -> dict:
    """Mean seconds of a run whose only work is its device stage (--remeasure), local path against cluster."""
    cache = out / "cache"
    run_recipe(path, target, LocalRunner(), out=out / "warm", cache=CachePolicy(cache), echo=_quiet)

    def timed(runner, pool=None) -> list[float]:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            run_recipe(path, target, runner, out=out / "o", pool=pool, echo=_quiet,
                       cache=CachePolicy(cache, remeasure=True))
            times.append(time.perf_counter() - started)
        return times

    local = timed(LocalRunner())
    c, boards = start(1, [target])
    try:
        runner, pool = join(c.address, LocalRunner(), {"verbose": False}, boards, _quiet)
        timed(runner, pool)  # the node's worker makes its runner once: not a stage's cost
        remote = timed(runner, pool)
    finally:
        ray.shutdown()
        c.shutdown()
    return {"local_s": [round(t, 2) for t in local], "cluster_s": [round(t, 2) for t in remote],
            "overhead_s": round(statistics.mean(remote) - statistics.mean(local), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=int, default=4)
    parser.add_argument("-t", "--target", action="append", dest="targets")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("build/bench-cluster"))
    args = parser.parse_args()
    targets = args.targets or ["x86-tflite", "rpi"]
    paths = recipes(args.out / "recipes", args.recipes)
    overhead = stage_overhead(paths[0], targets[0], args.repeat, args.out / "overhead")  # first: it warms the disk
    one = on_cluster(1, paths, targets, args.out / "one-node")
    two = on_cluster(2, paths, targets, args.out / "two-nodes")
    report = {"matrix": f"{args.recipes} recipes x {', '.join(targets)}", "one_node_s": round(one, 1),
              "two_nodes_s": round(two, 1), "one_over_two": round(one / two, 2), "stage": overhead}
    print(f"matrix {report['matrix']}: one node {one:.0f} s, two nodes {two:.0f} s, ratio {one / two:.2f}")
    print(f"a device stage: local path {statistics.mean(overhead['local_s']):.2f} s, cluster path "
          f"{statistics.mean(overhead['cluster_s']):.2f} s: overhead {overhead['overhead_s']:.2f} s per stage")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
