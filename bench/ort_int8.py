"""ONNX Runtime static int8 on this CPU: fp32 against s8/s8 and u8/s8 activations/weights, side by side.

    .venv/bin/python bench/ort_int8.py [--recipe recipes/ppocr-cls.yaml] [--threads 2] [--runs 200]
                                       [--member rapidocr/models/PP-OCRv6_det_small.onnx --shape 1,3,640,640]
                                       [--out build/bench-ort-int8]

Builds the recipe's fp32 ONNX and its calibration and validation data with a local run
(explicit steps: onnx.simplify only), quantizes that ONNX with each configuration through
builder.backends.onnxruntime.quantize, then times every session round-robin (one inference of each in
turn, so a change in machine load hits all of them alike). Prints p50, p50 / fp32 and the
cosine to fp32 on the validation samples; writes <out>/ort_int8.json. `--member` and `--shape`
take another model from the recipe's pip package (the OCR detector next to ppocr-cls's classifier)
with the recipe's data, resized to that shape.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from builder.backends.onnxruntime.quantize import ort_quantize_static
from builder.host.matrix import run_matrix
from builder.host.runners.select import select_runner

CONFIGS = {  # name -> ort_quantize_static keyword arguments
    "s8/s8 QDQ": {"activation_type": "int8"},
    "s8/s8 QDQ symmetric (TensorRT)": {"activation_type": "int8", "symmetric_activations": True,
                                       "quantize_bias": False},
    "u8/s8 QDQ": {"activation_type": "uint8"},
    "u8/s8 QDQ reduce_range (CPU)": {"activation_type": "uint8", "reduce_range": True},
    "u8/s8 QOperator": {"activation_type": "uint8", "quant_format": "QOperator"},
}


def fp32_model(recipe: Path, out: Path, member: str | None, shape: list[int] | None) -> tuple[Path, Path]:
    """The recipe's fp32 ONNX (simplified) and its work dir, built by a local run on x86-tflite."""
    data = yaml.safe_load(recipe.read_text())
    if member:
        data["source"]["pip"]["member"] = member
    if shape:
        data["input"]["shape"] = shape
    name = f"{data['name']}-ort-bench"
    data |= {"name": name, "variants": {"fp32": {}}, "steps": [{"kind": "onnx.simplify", "variant": "fp32"}],
             "benchmark": {"warmup": 0, "runs": 1, "throughput": False}}  # timed here, side by side
    derived = out / f"{name}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    derived.write_text(yaml.safe_dump(data, sort_keys=False))
    outcome = run_matrix([derived], ["x86-tflite"], select_runner("local", echo=lambda line: None), out=out,
                         echo=lambda line: None)[0]
    fp32 = next(r for r in outcome.results if r.name == "fp32")
    if not (outcome.workdir / fp32.artifact).exists():
        raise SystemExit(f"fp32 build failed: {fp32.failure}")
    return outcome.workdir / fp32.artifact, outcome.workdir


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/ppocr-cls.yaml"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--member", help="another .onnx member of the recipe's pip source")
    parser.add_argument("--shape", type=lambda text: [int(d) for d in text.split(",")], help="input shape, e.g. 1,3,640,640")
    parser.add_argument("--out", type=Path, default=Path("build/bench-ort-int8"))
    args = parser.parse_args()

    fp32, workdir = fp32_model(args.recipe, args.out, args.member, args.shape)
    calibration = np.load(workdir / "work" / "data" / "calibration.npy")
    validation = np.load(workdir / "work" / "data" / "validation.npy")
    models = {"fp32": fp32}
    for i, (name, kwargs) in enumerate(CONFIGS.items()):
        models[name] = args.out / f"int8-{i}.onnx"
        ort_quantize_static(fp32, models[name], calibration, **kwargs)

    sessions = {name: session(path, args.threads) for name, path in models.items()}
    feeds = {name: s.get_inputs()[0].name for name, s in sessions.items()}
    x = validation[:1]
    outputs = {name: np.concatenate([o.ravel() for v in validation for o in s.run(None, {feeds[name]: v[None]})])
               for name, s in sessions.items()}  # every output of every validation sample
    for _ in range(args.warmup):
        for name, s in sessions.items():
            s.run(None, {feeds[name]: x})
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.runs):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {feeds[name]: x})
            times[name].append((time.perf_counter() - t0) * 1000.0)

    base = float(np.percentile(times["fp32"], 50))
    rows = [{"config": name, "p50_ms": round(float(np.percentile(t, 50)), 3),
             "p50_vs_fp32": round(float(np.percentile(t, 50)) / base, 3),
             "cosine_to_fp32": round(cosine(outputs[name], outputs["fp32"]), 4),
             "size_bytes": models[name].stat().st_size} for name, t in times.items()]
    print(f"{args.member or args.recipe.stem}: {args.runs} runs round-robin, {args.threads} threads, "
          f"{len(validation)} validation samples")
    print(f"{'config':>32} {'p50 ms':>8} {'/fp32':>6} {'cosine':>7} {'bytes':>9}")
    for r in rows:
        print(f"{r['config']:>32} {r['p50_ms']:>8} {r['p50_vs_fp32']:>6} {r['cosine_to_fp32']:>7} {r['size_bytes']:>9}")
    summary = {"recipe": str(args.recipe), "member": args.member, "threads": args.threads, "runs": args.runs, "rows": rows}
    (args.out / "ort_int8.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
