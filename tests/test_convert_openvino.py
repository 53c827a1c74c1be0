"""builder.backends.openvino.convert: IR fp32/fp16, NNCF PTQ and accuracy control, unsupported ops (real OpenVINO)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx_models import INPUT_NCHW, cosine, images, ort_run
from pydantic import ValidationError

from builder.backends.openvino.convert import compile_f32, nncf_quantize, nncf_quantize_with_accuracy_control, to_openvino
from builder.backends.openvino.options import Nncf
from builder.errors import ConversionError
from builder.stage.convert.onnx import torch_to_onnx

MEDIAPIPE = "mediapipe==0.10.21"
SELFIE = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("ov")
    torch_to_onnx(work / "cnn.onnx", input_shape=INPUT_NCHW, factory="onnx_models:small_cnn")
    to_openvino(work / "cnn.onnx", work / "cnn.xml")
    return work / "cnn.onnx", work / "cnn.xml"


def _worst_cosine(onnx_path: Path, xml: Path, n: int = 8) -> float:
    compiled = compile_f32(xml)
    xs = images(n, seed=77)
    return min(cosine(compiled([x[None]])[0], ort_run(onnx_path, x[None])) for x in xs)


def test_fp32_ir_matches_onnxruntime(models):
    onnx_path, xml = models
    assert xml.with_suffix(".bin").is_file()
    x = images(1, seed=3)
    np.testing.assert_allclose(compile_f32(xml)([x])[0], ort_run(onnx_path, x), rtol=1e-4, atol=1e-5)


def test_fp16_ir_is_smaller_and_close(models, tmp_path):
    onnx_path, xml = models
    report = to_openvino(onnx_path, tmp_path / "fp16.xml", compress_fp16=True)
    assert report["compress_fp16"]
    assert (tmp_path / "fp16.bin").stat().st_size < 0.6 * xml.with_suffix(".bin").stat().st_size
    assert _worst_cosine(onnx_path, tmp_path / "fp16.xml") > 0.9999
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp16.bin", "fp16.xml"]


def test_static_input_shape_override(models, tmp_path):
    onnx_path, _ = models
    dyn = tmp_path / "dyn.onnx"
    torch_to_onnx(dyn, input_shape=INPUT_NCHW, factory="onnx_models:small_cnn", dynamic_axes={"input": {0: "n"}})
    report = to_openvino(dyn, tmp_path / "fixed.xml", input_shapes={"input": [2, 3, 32, 32]})
    assert report["inputs"] == {"input": "[2,3,32,32]"}


def test_nncf_int8_matches_reference(models, tmp_path):
    onnx_path, xml = models
    report = nncf_quantize(xml, tmp_path / "int8.xml", images(32), subset_size=32)
    assert report["samples"] == 32
    assert "FakeQuantize" in (tmp_path / "int8.xml").read_text()
    assert _worst_cosine(onnx_path, tmp_path / "int8.xml") > 0.98


def test_nncf_options_are_the_recipes_nncf_section(models, tmp_path):
    """One list of NNCF's options (options.NncfPtq): the converter refuses what a recipe could not say."""
    with pytest.raises(ValidationError, match="presett"):
        nncf_quantize(models[1], tmp_path / "int8.xml", images(4), presett="mixed")
    assert not (tmp_path / "int8.xml").exists()
    assert set(Nncf().ptq_options()) == set(Nncf.model_fields) - {"max_accuracy_drop"}


@pytest.mark.slow
def test_nncf_accuracy_control_calls_back_with_indices(models, tmp_path):
    onnx_path, xml = models
    validation = images(12, seed=5)
    reference = np.concatenate([ort_run(onnx_path, x[None]) for x in validation])
    seen: list[int] = []

    def agreement(compiled, samples: np.ndarray, indices: np.ndarray) -> float:
        seen.extend(indices.tolist())
        outs = np.concatenate([compiled([s[None]])[0] for s in samples])
        return float(np.mean([cosine(o, r) for o, r in zip(outs, reference[indices])]))

    report = nncf_quantize_with_accuracy_control(
        xml, tmp_path / "ac.xml", images(32), validation, agreement, max_drop=0.02, subset_size=32)
    assert report["max_drop"] == 0.02
    assert set(seen) == set(range(12))
    assert _worst_cosine(onnx_path, tmp_path / "ac.xml") > 0.98


@pytest.fixture(scope="session")
def selfie_segmentation(request) -> Path:
    """mediapipe's selfie_segmentation.tflite, read from the PyPI wheel (downloaded once, cached)."""
    cache = Path(request.config.cache.mkdir("mediapipe-0.10.21"))
    model = cache / "selfie_segmentation.tflite"
    if not model.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", MEDIAPIPE, "-d", str(cache)], check=True, capture_output=True)
        wheel = next(cache.glob("mediapipe-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            model.write_bytes(zf.read(SELFIE))
        wheel.unlink()
    return model


@pytest.mark.slow
def test_custom_tflite_op_is_reported_as_unsupported(selfie_segmentation, tmp_path):
    with pytest.raises(ConversionError) as err:
        to_openvino(selfie_segmentation, tmp_path / "selfie.xml")
    assert err.value.cause == "unsupported-op"
    assert "Convolution2DTransposeBias" in err.value.message
    assert err.value.hint
    assert not list(tmp_path.iterdir())


def test_unknown_onnx_op_is_reported_as_unsupported(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("FooOp", ["x"], ["y"], domain="com.acme")], "g", value[:1], value[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])
    onnx.save(model, str(tmp_path / "foo.onnx"))
    with pytest.raises(ConversionError) as err:
        to_openvino(tmp_path / "foo.onnx", tmp_path / "out" / "foo.xml")
    assert err.value.cause == "unsupported-op"
    assert "com.acme.FooOp" in err.value.message
