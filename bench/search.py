"""Accuracy-aware quantization on the quickstart: the searched variant against full int8, in one run.

    .venv/bin/python bench/search.py [-t x86-tflite -t openvino] [--min-top1 0.98] [--runner local|docker]
                                     [--max-candidates 6] [--max-float-layers 8] [--out build/bench-search]

The quickstart's recipe gets an `auto` variant gated on top-1 agreement with fp32 (--min-top1) and a
validation set large enough to decide such a gate: ten packaged photos x 16 crops x 2 flips, 320 samples.
Prints, per target, full int8 and the searched variant side by side (top-1 agreement with its 95% interval,
p50, p50 over full int8's), then every candidate the search tried; writes <out>/search.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from builder.host.matrix import run_matrix
from builder.host.report import rate_with_interval
from builder.host.runners.select import select_runner
from builder.records import VariantResult

PHOTOS = [f"skimage/data/{name}" for name in ("camera.png", "coins.png", "ihc.png", "motorcycle_right.png",
                                              "clock_motion.png")]


def recipe(quickstart: Path, min_top1: float, search: dict, out: Path) -> Path:
    data = yaml.safe_load(quickstart.read_text())
    data["validation"]["files"] += [{"pip": {"package": "scikit-image", "version": "0.26.0", "member": m}}
                                    for m in PHOTOS]
    data["validation"]["augment"] = {"crops": 16, "flips": True}
    data["variants"] = {"fp32": {}, "int8": {}, "auto": {"gates": {"min_top1_agreement": min_top1}, "search": search}}
    data.pop("targets", None)
    path = out / f"{data['name']}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def summary(results: list[VariantResult]) -> dict:
    by_name = {v.name: v for v in results}
    int8, auto = by_name.get("int8"), by_name.get("auto")
    p50 = {name: v.benchmark.p50_ms if v and v.benchmark else None for name, v in (("int8", int8), ("auto", auto))}
    search = auto.search if auto else None
    return {
        "int8": {"status": int8 and int8.status, "top1": rate_with_interval(int8 and int8.validation, "top1_agreement"),
                 "p50_ms": p50["int8"]},
        "auto": {"status": auto and auto.status, "chosen": search and search.chosen, "why": search and search.why,
                 "top1": rate_with_interval(auto and auto.validation, "top1_agreement"), "p50_ms": p50["auto"],
                 "p50_vs_int8": round(p50["auto"] / p50["int8"], 3) if p50["auto"] and p50["int8"] else None},
        "candidates": [{"name": c.name, "status": c.status, "p50_ms": c.p50_ms,
                        "top1": rate_with_interval(c.agreement, "top1_agreement"), "kept_float": len(c.kept_float)}
                       for c in (search.candidates if search else [])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/efficientnet-lite0.yaml"))
    parser.add_argument("-t", "--target", action="append", dest="targets")
    parser.add_argument("--min-top1", type=float, default=0.98)
    parser.add_argument("--max-candidates", type=int, default=6, help="the search's bound (a longer ladder)")
    parser.add_argument("--max-float-layers", type=int, default=8, help="the search's bound (more layers in float)")
    parser.add_argument("--runner", default="local", choices=["auto", "local", "docker"])
    parser.add_argument("--out", type=Path, default=Path("build/bench-search"))
    args = parser.parse_args()
    runner = select_runner(args.runner, echo=lambda line: None)
    search = {"max_candidates": args.max_candidates, "max_float_layers": args.max_float_layers}
    outcomes = run_matrix([recipe(args.recipe, args.min_top1, search, args.out)], args.targets or ["x86-tflite", "openvino"],
                          runner, out=args.out, echo=print)
    table = {o.target: summary(o.results) for o in outcomes}
    for target, row in table.items():
        print(f"\n{target} ({runner.name} runner), gate: top-1 agreement >= {args.min_top1}")
        print(f"  int8: {row['int8']}")
        print(f"  auto: {row['auto']}")
        for c in row["candidates"]:
            print(f"    {c}")
    (args.out / "search.json").write_text(json.dumps(table, indent=2))
    print(f"\nwritten: {args.out / 'search.json'}")


if __name__ == "__main__":
    main()
