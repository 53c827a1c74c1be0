"""Speed and size of every variant relative to fp32, side by side in one run.

    .venv/bin/python bench/variants.py [--recipe recipes/efficientnet-lite0.yaml] [-t x86-tflite -t openvino]
                                       [--runner local|docker] [--out build/bench]

Prints a table of ratios (variant / fp32: p50 latency, throughput, async throughput
where the runtime has it, size) and writes it to <out>/bench.json. Ratios from one
run on one machine are comparable; absolute milliseconds are not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from builder.host.matrix import run_matrix
from builder.host.runners.select import select_runner
from builder.records import VariantResult


def ratios(results: list[VariantResult]) -> list[dict]:
    by_name = {v.name: v for v in results if v.benchmark}
    base = by_name["fp32"].benchmark
    rows = []
    for name, v in by_name.items():
        b = v.benchmark
        row = {
            "variant": name,
            "status": v.status,
            "p50_ms": round(b.p50_ms, 3),
            "p50_vs_fp32": round(b.p50_ms / base.p50_ms, 3),
            "fps_vs_fp32": round(b.throughput_fps / base.throughput_fps, 3),
            "size_vs_fp32": round(b.size_bytes / base.size_bytes, 3),
            "top1_agreement": v.validation.top1_agreement if v.validation else None,
            "emulated": b.emulated,
        }
        if b.async_ and base.async_:
            row["async_fps"] = round(b.async_.throughput_fps, 1)
            row["async_fps_vs_fp32"] = round(b.async_.throughput_fps / base.async_.throughput_fps, 3)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/efficientnet-lite0.yaml"))
    parser.add_argument("-t", "--target", action="append", dest="targets")
    parser.add_argument("--runner", default="local", choices=["auto", "local", "docker"])
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    args = parser.parse_args()
    runner = select_runner(args.runner, echo=lambda line: None)
    outcomes = run_matrix([args.recipe], args.targets or ["x86-tflite", "openvino"], runner, out=args.out,
                          echo=lambda line: None)
    table = {o.target: ratios(o.results) for o in outcomes}
    for target, rows in table.items():
        print(f"\n{args.recipe.stem} on {target} ({runner.name} runner)")
        keys = list(dict.fromkeys(k for row in rows for k in row))
        print("  ".join(f"{k:>17}" for k in keys))
        for row in rows:
            print("  ".join(f"{str(row.get(k, '-')):>17}" for k in keys))
    (args.out / "bench.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
