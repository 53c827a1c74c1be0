"""The quickstart's variants judged on ImageNet photos they never saw: does its PTQ hold, at what speed?

    .venv/bin/python bench/accuracy.py [-t x86-tflite -t openvino] [--data ../shared/data/imagenet-sample-500]
                                       [--runner local|docker] [--out build/bench-accuracy]

Runs the quickstart's recipe with its own calibration (its shipped photos) but validates every variant
on a labeled folder of photos it never saw (by default the 500 ImageNet photos of ../shared/data, one for
each even class), gated the way the issue asks: top-1 agreement with fp32 >= 0.98 and >= 99% of fp32's
top-1 accuracy kept (MLPerf's closed-division rule). Prints, per target and variant, the distinct images
that calibrated it, its agreement with fp32 and its accuracy with their 95% intervals over distinct
photos, the share of fp32's accuracy kept, and its p50 against fp32's from the same run; writes
<out>/accuracy.json. The README's commands do not need this data: it is for measuring, not for users.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from builder.config.paths import ALLOW_ENV
from builder.host.matrix import run_matrix
from builder.host.report import fp32_baseline, gates_word, rate_with_interval
from builder.host.runners.select import select_runner
from builder.records import VariantResult

ROOT = Path(__file__).resolve().parent.parent
GATES = {"min_top1_agreement": 0.98, "min_accuracy_ratio": 0.99}


def recipe(quickstart: Path, data: Path, out: Path) -> Path:
    """The quickstart, validated on `data` (a folder with images/ and labels.txt) under the issue's gates."""
    spec = yaml.safe_load(quickstart.read_text())
    spec["name"] = f"{spec['name']}-unseen"
    spec["validation"] = {"folder": str(data.resolve()), "labels": str((data / "labels.txt").resolve())}
    spec["gates"] = GATES
    spec.pop("targets", None)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def row(v: VariantResult, base: VariantResult | None) -> dict:
    val, bench = v.validation, v.benchmark
    p50, base_p50 = bench and bench.p50_ms, base and base.benchmark and base.benchmark.p50_ms
    return {
        "variant": v.name, "status": v.status, "gates": gates_word(val.gates if val else []),
        "calibrated_on": v.calibrated_on.images if v.calibrated_on else None,
        "photos": val and val.photos, "agreement": rate_with_interval(val, "top1_agreement"),
        "fp32_accuracy": val and val.reference_accuracy, "accuracy": rate_with_interval(val, "top1_accuracy"),
        "kept": rate_with_interval(val, "accuracy_ratio"), "p50_ms": p50,
        "speedup": round(base_p50 / p50, 2) if p50 and base_p50 else None,
    }


COLUMNS = ("variant", "status", "gates", "calibrated_on", "photos", "agreement", "fp32_accuracy", "accuracy", "kept",
           "p50_ms", "speedup")


def table(target: str, rows: list[dict]) -> list[str]:
    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [f"## {target}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return lines + ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows] + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", dest="targets", action="append")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-sample-500")
    parser.add_argument("--quickstart", type=Path, default=ROOT / "recipes" / "efficientnet-lite0.yaml")
    parser.add_argument("--runner", choices=["local", "docker"], default="local")
    parser.add_argument("--out", type=Path, default=Path("build/bench-accuracy"))
    args = parser.parse_args()
    if not (args.data / "labels.txt").is_file():
        parser.error(f"--data {args.data}: no labels.txt there (a folder of photos with the project's labels file)")
    targets = args.targets or ["x86-tflite", "openvino"]
    os.environ[ALLOW_ENV] = os.pathsep.join(filter(None, [os.environ.get(ALLOW_ENV), str(args.data.resolve())]))
    path = recipe(args.quickstart, args.data, args.out)
    outcomes = run_matrix([path], targets, select_runner(args.runner, echo=print), out=args.out, echo=print)
    report, lines = {}, []
    for o in outcomes:
        base = fp32_baseline(o.results)
        report[o.target] = {"error": o.error, "variants": [row(v, base) for v in o.results]}
        lines += table(o.target, report[o.target]["variants"]) if not o.error else [f"## {o.target}: {o.error}", ""]
    (args.out / "accuracy.json").write_text(json.dumps({"data": str(args.data), "gates": GATES, "targets": report},
                                                       indent=2))
    print("\n".join(["", *lines, f"written: {args.out / 'accuracy.json'}"]))


if __name__ == "__main__":
    main()
