"""A build system is judged by its second run: cold vs warm vs one variant changed, per runner.

    .venv/bin/python bench/rerun.py [--recipe recipes/efficientnet-lite0.yaml] [-t x86-tflite]
                                    [--runner local --runner docker] [--out build/bench-rerun]

For each runner, three `builder run` commands in a row, timed from outside (a new process each,
as a user types them): a cold run (`--no-cache`: every step runs, and is kept), a warm run with
nothing changed, and a run where only the int8 variant's options changed (its I/O becomes uint8).
Prints seconds and steps executed of each, and the warm and changed runs as a share of the cold
one; writes <out>/rerun.json. Downloads and images are warm in all three (their own caches).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _changed_recipe(recipe: Path, folder: Path) -> Path:
    """The same recipe with only the int8 variant changed."""
    data = yaml.safe_load(recipe.read_text())
    data["variants"]["int8"] = (data["variants"].get("int8") or {}) | {"io_dtype": "uint8"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / recipe.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(recipe: Path, target: str, runner: str, out: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "builder.host.cli", "run", str(recipe), "-t", target, "--runner", runner,
               "--out", str(out), *extra]
    print("  $", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: a gate missed, still a complete run
        sys.exit(f"builder run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    name = yaml.safe_load(recipe.read_text())["name"]
    stages = json.loads((out / name / target / "manifest.json").read_text())["stages"]
    executed = sum(stage.get("executed_steps", 0) for stage in stages.values())
    total = executed + sum(stage.get("cached_steps", 0) for stage in stages.values())
    return {"seconds": round(seconds, 2), "executed_steps": executed, "steps": total, "exit_code": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "efficientnet-lite0.yaml")
    parser.add_argument("-t", "--target", default="x86-tflite")
    parser.add_argument("--runner", action="append", choices=["local", "docker"])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench-rerun")
    args = parser.parse_args()
    changed = _changed_recipe(args.recipe, args.out / "changed-recipe")
    results: dict[str, dict] = {}
    for runner in args.runner or ["local", "docker"]:
        print(f"{runner}:", flush=True)
        out = args.out / runner
        results[runner] = {
            "cold": _run(args.recipe, args.target, runner, out, "--no-cache"),
            "warm": _run(args.recipe, args.target, runner, out),
            "int8 changed": _run(changed, args.target, runner, out),
        }
    print(f"\n{'runner':8s} {'run':13s} {'seconds':>8s} {'steps run':>10s} {'vs cold':>8s}")
    for runner, runs in results.items():
        cold = runs["cold"]["seconds"]
        for name, r in runs.items():
            print(f"{runner:8s} {name:13s} {r['seconds']:8.2f} {r['executed_steps']:>4d} of {r['steps']:<3d} "
                  f"{r['seconds'] / cold:8.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rerun.json").write_text(json.dumps({"recipe": str(args.recipe), "target": args.target,
                                                    "results": results}, indent=1))
    print(f"\n{args.out / 'rerun.json'}")


if __name__ == "__main__":
    main()
