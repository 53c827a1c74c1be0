"""`-j 1` against `-j 2` on one machine, side by side: does running jobs in parallel move the figures?

    .venv/bin/python bench/parallel.py [--recipe recipes/efficientnet-lite0.yaml] [-t x86-tflite -t openvino]
                                       [--runner local|docker] [--out build/bench-parallel]

The build host is a device too: conversions may run side by side, but a benchmark has the
machine alone. So each variant's p50 with -j 2 should match -j 1 within noise while the
wall time drops. Prints p50 (-j 2 / -j 1) per target and variant, and both wall times;
writes <out>/parallel.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from builder.host.matrix import run_matrix
from builder.host.runners.select import select_runner


def one(args, jobs: int) -> tuple[float, dict]:
    runner = select_runner(args.runner, echo=lambda line: None)
    started = time.perf_counter()
    outcomes = run_matrix([args.recipe], args.targets, runner, out=args.out / f"j{jobs}", jobs=jobs,
                          echo=lambda line: None)
    p50 = {(o.target, r.name): r.benchmark.p50_ms for o in outcomes for r in o.results if r.benchmark}
    return time.perf_counter() - started, p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/efficientnet-lite0.yaml"))
    parser.add_argument("-t", "--target", action="append", dest="targets")
    parser.add_argument("--runner", default="local", choices=["auto", "local", "docker"])
    parser.add_argument("--out", type=Path, default=Path("build/bench-parallel"))
    args = parser.parse_args()
    args.targets = args.targets or ["x86-tflite", "openvino"]
    wall1, p50_1 = one(args, 1)
    wall2, p50_2 = one(args, 2)
    rows = [{"target": t, "variant": v, "p50_j1_ms": round(p50_1[t, v], 3), "p50_j2_ms": round(p50_2[t, v], 3),
             "p50_j2_vs_j1": round(p50_2[t, v] / p50_1[t, v], 3)} for t, v in p50_1 if (t, v) in p50_2]
    print(f"{'target':>12} {'variant':>10} {'p50 -j1 ms':>11} {'p50 -j2 ms':>11} {'-j2/-j1':>8}")
    for r in rows:
        print(f"{r['target']:>12} {r['variant']:>10} {r['p50_j1_ms']:>11} {r['p50_j2_ms']:>11} {r['p50_j2_vs_j1']:>8}")
    print(f"wall time: -j 1 {wall1:.0f} s, -j 2 {wall2:.0f} s ({wall2 / wall1:.2f})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parallel.json").write_text(json.dumps({"rows": rows, "wall_j1_s": round(wall1, 1),
                                                        "wall_j2_s": round(wall2, 1)}, indent=1))


if __name__ == "__main__":
    main()
