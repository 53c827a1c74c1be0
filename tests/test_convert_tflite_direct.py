"""Downloaded float .tflite files quantized as TFLite (issue 11), on mediapipe 0.10.21's real models:
fp16-stored weights, sparse weights (DENSIFY), a custom op, no signature defs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from builder.backends.litert import tflite_float, tflite_quant
from builder.backends.litert.tflite import tflite_ops
from builder.backends.litert.tflite_variant import NO_OP, check_variant
from builder.errors import ConversionError
from builder.host.catalog import load_recipe, load_target
from builder.host.cli import cli
from builder.host.planner import make_plan

MODELS = {  # mediapipe model (conftest.mediapipe_models) -> (input side, least cosine to the source on noise inputs)
    "face_detection_short_range": (128, 0.95),
    "pose_detection": (224, 0.95),
    # a mask of noise is near zero everywhere: int8 gives 0.76 here, 0.93 on photos
    "selfie_segmentation": (256, 0.7),
    "face_detection_full_range_sparse": (192, 0.95),
}
RECIPES = Path(__file__).parent.parent / "recipes"
pytestmark = pytest.mark.slow  # real quantizers on real models (the mediapipe wheel is downloaded once)


def _outputs(model: Path, x: np.ndarray) -> list[np.ndarray]:
    from builder.stage.runtimes import load

    return load(model).run([x])


def _cosine(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    x, y = np.concatenate([v.ravel() for v in a]), np.concatenate([v.ravel() for v in b])
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _samples(side: int, n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, side, side, 3)).astype(np.float32)


def test_fp16_and_sparse_weights_fold_into_a_float_model_with_a_signature(mediapipe_models, tmp_path):
    source = mediapipe_models["pose_detection"]
    before = tflite_float.describe(source)
    assert before["signatures"] == 0 and before["fp16_weights"] > 0 and before["sparse_tensors"]

    report = tflite_float.float_model(source, tmp_path / "float.tflite")
    after = tflite_float.describe(tmp_path / "float.tflite")
    assert report["signature_added"] == "serving_default"
    assert report["sparse_tensors_densified"] == before["sparse_tensors"]
    assert after == {"signatures": 1, "fp16_weights": 0, "sparse_tensors": []}
    ops = tflite_ops(tmp_path / "float.tflite")["ops"]
    assert "DENSIFY" not in ops and "DEQUANTIZE" not in ops
    x = _samples(224, 1)
    assert _cosine(_outputs(source, x), _outputs(tmp_path / "float.tflite", x)) > 0.99999


@pytest.mark.parametrize("name", list(MODELS)[:3])
@pytest.mark.parametrize("precision", ["dynamic", "weight_only", "int8"])
def test_ai_edge_quantizer_quantizes_real_mediapipe_models(mediapipe_models, tmp_path, name, precision):
    source, (side, least) = mediapipe_models[name], MODELS[name]
    out = tmp_path / f"{precision}.tflite"
    report = tflite_quant.quantize(source, out, precision=precision, samples=_samples(side))
    info = tflite_ops(out)
    assert report["path"] == "ai-edge-quantizer" and report["prepared"]["signature_added"]
    if name != "pose_detection":  # standalone RELUs (which split XNNPACK's graph once quantized) are fused
        assert report["prepared"]["fused_relus"] > 0 and "RELU" not in tflite_ops(out)["ops"]
    assert info["weight_dtypes"].get("int8", 0) > 0 and "float16" not in info["weight_dtypes"]
    if precision == "int8":
        assert info["input_dtypes"] == ["int8"]
    check_variant(precision, info, out.stat().st_size, tflite_ops(source), source.stat().st_size)
    x = _samples(side, 2)[1:]
    assert _cosine(_outputs(source, x), _outputs(out, x)) > least


def test_fp16_of_a_model_that_stores_fp16_weights_differs_from_its_dense_fp32(mediapipe_models, tmp_path):
    source = mediapipe_models["face_detection_short_range"]
    fp32, fp16 = tmp_path / "fp32.tflite", tmp_path / "fp16.tflite"
    tflite_float.float_model(source, fp32)
    tflite_quant.quantize(source, fp16, precision="fp16")
    check_variant("fp16", tflite_ops(fp16), fp16.stat().st_size, tflite_ops(fp32), fp32.stat().st_size)
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size
    x = _samples(128, 1)
    assert _cosine(_outputs(fp32, x), _outputs(fp16, x)) > 0.999


def test_fp16_without_float_weights_is_not_different_from_fp32(tmp_path):
    """A model with no weights to cast (pooling only): its "fp16" would be fp32 again."""
    import tensorflow as tf

    keras = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), tf.keras.layers.AveragePooling2D(2),
                                 tf.keras.layers.ReLU()])
    source = tmp_path / "pool.tflite"
    source.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras).convert())
    out = tmp_path / "fp16.tflite"
    tflite_quant.quantize(source, out, precision="fp16")
    with pytest.raises(ConversionError) as err:
        check_variant("fp16", tflite_ops(out), out.stat().st_size, tflite_ops(source), source.stat().st_size)
    assert err.value.cause == NO_OP and "not different from fp32" in err.value.message


def _tflite_without_signatures(path: Path) -> Path:
    """A small Keras CNN through the TF converter, its signature defs stripped (as TF Hub's 2018 files)."""
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import Builder

    tf.keras.utils.set_random_seed(0)
    keras = tf.keras.Sequential([tf.keras.Input((16, 16, 3)), tf.keras.layers.Conv2D(8, 3, activation="relu"),
                                 tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(4)])
    fb = schema.ModelT.InitFromPackedBuf(tf.lite.TFLiteConverter.from_keras_model(keras).convert(), 0)
    assert fb.signatureDefs
    fb.signatureDefs = None
    builder = Builder(1024)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    assert tflite_float.describe(path)["signatures"] == 0
    return path


def test_a_tf_converter_model_without_signature_defs_gets_one_and_quantizes(tmp_path):
    source = _tflite_without_signatures(tmp_path / "nosig.tflite")

    samples = np.random.default_rng(1).uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32)
    report = tflite_quant.quantize(source, tmp_path / "int8.tflite", precision="int8", samples=samples)
    assert report["prepared"]["signature_added"] == "serving_default"
    assert tflite_ops(tmp_path / "int8.tflite")["weight_dtypes"]["int8"] >= 2
    x = samples[:1]
    assert _cosine(_outputs(source, x), _outputs(tmp_path / "int8.tflite", x)) > 0.98


def test_a_tflite_source_plans_no_round_trip_on_x86_tflite():
    plan = make_plan(load_recipe(RECIPES / "face-detection.yaml", "x86-tflite"), load_target("x86-tflite"))
    kinds = [s.kind for s in plan.steps]
    assert "convert.tf_onnx" not in kinds and "convert.onnx2tf" not in kinds
    int8 = next(s for s in plan.steps if s.variant == "int8" and s.kind == "convert.tflite")
    assert int8.inputs["model"].endswith("face_detection_short_range.tflite")
    assert (int8.params["precision"], int8.params["io_dtype"], int8.params["layout"]) == ("int8", "int8", "NHWC")


def test_local_run_of_a_mediapipe_model_builds_every_precision_and_says_how(tmp_path):
    """Done when of issue 11: no signature defs, fp16-stored weights; dynamic, fp16 and int8 validated."""
    data = yaml.safe_load((RECIPES / "face-detection.yaml").read_text())
    data |= {"name": "mp-face", "benchmark": {"threads": 2, "warmup": 1, "runs": 5}}
    recipe = tmp_path / "mp-face.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", "x86-tflite", "--runner", "local",
                                      "--out", str(tmp_path / "out")])
    workdir = tmp_path / "out" / "mp-face" / "x86-tflite"
    variants = {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}
    assert result.exit_code == 0, result.output
    fp32 = variants["fp32"]
    assert fp32["conversion"]["weights_stored_as"] == "fp16" and fp32["conversion"]["path"].startswith("source with")
    for name in ("fp16", "dynamic", "int8"):
        assert variants[name]["status"] == "ok", variants[name].get("failure")
        assert variants[name]["conversion"]["path"] == "ai-edge-quantizer"
        assert variants[name]["validation"]["cosine"] > 0.95
    sizes = {v: variants[v]["benchmark"]["size_bytes"] for v in variants}
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < 0.5 * sizes["fp32"], sizes
    artifacts = {a["variant"]: a for a in json.loads((workdir / "manifest.json").read_text())["artifacts"]}
    assert artifacts["int8"]["path"] == "ai-edge-quantizer"
    assert artifacts["int8"]["source_edits"]["signature_added"] == "serving_default"
    assert artifacts["fp32"]["source_edits"]["fp16_weights_dequantized"] > 0
    report = (workdir / "report.md").read_text()
    assert "- int8: ai-edge-quantizer" in report and "stores its weights as fp16" in report


def test_sparse_weights_that_cannot_be_densified_are_refused_by_name(mediapipe_models, tmp_path):
    """The sparse face detector with one op swapped for an unregistered custom op: LiteRT cannot run it,
    so its sparse tensors cannot be densified, and the error names them."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import Builder

    source = mediapipe_models["face_detection_full_range_sparse"]
    fb = schema.ModelT.InitFromPackedBuf(source.read_bytes(), 0)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode, code.version = "EdgeBuilderUnknownOp", 1
    fb.operatorCodes.append(code)
    last = fb.subgraphs[0].operators[-1]
    last.opcodeIndex, last.builtinOptionsType, last.builtinOptions = len(fb.operatorCodes) - 1, 0, None
    builder = Builder(1 << 20)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    broken = tmp_path / "sparse_custom.tflite"
    broken.write_bytes(bytes(builder.Output()))

    with pytest.raises(ConversionError) as err:
        tflite_quant.quantize(broken, tmp_path / "dynamic.tflite", precision="dynamic")
    assert err.value.cause == "sparse-weights"
    assert tflite_float.describe(source)["sparse_tensors"][0] in err.value.message


def test_sparse_mediapipe_model_is_densified_and_quantized(mediapipe_models, tmp_path):
    source = mediapipe_models["face_detection_full_range_sparse"]
    out = tmp_path / "int8.tflite"
    report = tflite_quant.quantize(source, out, precision="int8", samples=_samples(192))
    assert len(report["prepared"]["sparse_tensors_densified"]) == len(tflite_float.describe(source)["sparse_tensors"])
    x = _samples(192, 2)[1:]
    assert _cosine(_outputs(source, x), _outputs(out, x)) > 0.95


def test_openvino_fp16_of_a_model_that_stores_fp16_weights_is_not_different_from_fp32(mediapipe_models, tmp_path):
    from builder.backends.openvino.convert import to_openvino

    source = mediapipe_models["face_detection_short_range"]
    to_openvino(source, tmp_path / "fp32.xml")
    with pytest.raises(ConversionError) as err:
        to_openvino(source, tmp_path / "fp16.xml", compress_fp16=True)
    assert err.value.cause == NO_OP and "not different from fp32" in err.value.message
    assert not (tmp_path / "fp16.xml").exists() and (tmp_path / "fp32.xml").exists()


def test_what_the_direct_path_cannot_make_goes_the_round_trip(tmp_path):
    """uint8 model I/O: ai-edge-quantizer keeps int8 I/O, so int8-uint8 is made by tf2onnx+onnx2tf (and says so)."""
    source = _tflite_without_signatures(tmp_path / "nosig.tflite")
    recipe = tmp_path / "nosig.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "nosig", "description": "TF-converter CNN without signature defs", "task": "generic",
        "source": {"file": str(source)}, "input": {"name": "input", "shape": [1, 16, 16, 3], "layout": "NHWC"},
        "calibration": {"synthetic": 8}, "validation": {"synthetic": 4},
        "variants": {"fp32": {}, "dynamic": {}, "int8-uint8": {"precision": "int8", "io_dtype": "uint8"}},
        "benchmark": {"threads": 2, "warmup": 1, "runs": 3}}, sort_keys=False))
    CliRunner().invoke(cli, ["run", str(recipe), "-t", "x86-tflite", "--runner", "local", "--out", str(tmp_path / "out")])
    workdir = tmp_path / "out" / "nosig" / "x86-tflite"
    variants = {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}
    assert variants["dynamic"]["status"] == "ok" and variants["dynamic"]["conversion"]["path"] == "ai-edge-quantizer"
    uint8 = variants["int8-uint8"]
    assert uint8["conversion"]["path"] == "tf2onnx+onnx2tf", uint8.get("failure")
    assert uint8["conversion"]["direct_failure"]["cause"] == "unsupported"
    assert uint8["conversion"]["conversion"]["input_dtypes"] == ["uint8"]
