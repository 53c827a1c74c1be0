"""builder.stage.runtimes on real models: a tiny CNN in every format and rapidocr's classifier."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import runtime_models as rm

from builder.errors import ConfigError, StepError
from builder.stage import runtimes
from builder.stage.metrics import compare
from builder.stage.runtimes import TensorInfo, dequantize, match_layout, quantize


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    onnx_path = rm.write_onnx(rm.weights(), folder / "tiny.onnx")
    return {"onnx": onnx_path, "xml": rm.write_openvino(onnx_path, folder / "tiny.xml")}


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite")
    model = rm.keras_cnn(rm.weights())
    return {
        "fp32": rm.write_tflite(model, folder / "fp32.tflite"),
        "int8": rm.write_tflite(model, folder / "int8.tflite", io="int8"),
        "uint8": rm.write_tflite(model, folder / "uint8.tflite", io="uint8"),
    }


@pytest.fixture(scope="module")
def samples():
    return rm.calibration(8, seed=7)


# --- pure helpers --------------------------------------------------------------


def test_quantize_rounds_clips_and_dequantize_inverts():
    info = TensorInfo("x", (4,), "int8", scale=0.5, zero_point=10)
    q = quantize(np.array([0.0, 1.2, 100.0, -100.0], np.float32), info)
    assert q.dtype == np.int8
    assert q.tolist() == [10, 12, 127, -128]  # round(x/0.5)+10, clipped to int8
    assert dequantize(q, info).tolist() == [0.0, 1.0, 58.5, -69.0]


def test_unquantized_int_outputs_stay_native_and_floats_become_float32():
    ids = np.array([3, 1], np.int64)
    assert dequantize(ids, TensorInfo("ids", (2,), "int64")).dtype == np.int64
    assert dequantize(np.ones(2, np.float16), TensorInfo("y", (2,), "float16")).dtype == np.float32


def test_match_layout_adds_batch_and_transposes_both_ways():
    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    nhwc = match_layout(nchw, (1, 4, 5, 3))
    assert nhwc.shape == (2, 4, 5, 3) and nhwc[1, 2, 3, 0] == nchw[1, 0, 2, 3]
    assert match_layout(nhwc, (-1, 3, 4, 5)).shape == (2, 3, 4, 5)
    assert match_layout(nchw[0], (1, 3, 4, 5)).shape == (1, 3, 4, 5)
    square = np.zeros((1, 3, 3, 3), np.float32)  # both layouts fit: left alone
    assert match_layout(square, (1, 3, 3, 3)) is square


def test_load_rejects_unknown_suffix_runtime_and_missing_file(tmp_path):
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(ConfigError, match="no runtime for model file model.pb"):
        runtimes.load(tmp_path / "model.pb")
    with pytest.raises(ConfigError, match="unknown runtime 'coreml'"):
        runtimes.load(tmp_path / "model.pb", runtime="coreml")
    with pytest.raises(ConfigError, match="not found"):
        runtimes.load(tmp_path / "absent.onnx")
    with pytest.raises(ConfigError, match=r"runtime litert has no option\(s\) \['providers'\]"):
        runtimes.load(tmp_path / "absent.tflite", providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["bad.onnx", "bad.xml", "bad.tflite"])
def test_corrupt_model_files_raise_step_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not a model")
    with pytest.raises(StepError, match="bad"):
        runtimes.load(path)


def test_versions_reads_installed_metadata():
    found = runtimes.versions()
    for dist in ("onnxruntime", "openvino", "numpy", "ai-edge-litert"):
        assert found[dist] == importlib.metadata.version(dist)
    assert "tflite-runtime" not in found  # not installed here


# --- ONNX Runtime and OpenVINO -------------------------------------------------


def test_onnx_and_openvino_tensor_info(onnx_models):
    for key in ("onnx", "xml"):
        session = runtimes.load(onnx_models[key])
        assert session.inputs == [TensorInfo("input", (1, 3, 16, 16), "float32")]
        assert session.outputs == [TensorInfo("logits", (1, 4), "float32")]
    assert runtimes.load(onnx_models["onnx"]).runtime == "onnxruntime"
    ov_session = runtimes.load(onnx_models["xml"])
    assert ov_session.runtime == "openvino" and ov_session.precision == "f32"


def test_openvino_f32_matches_onnxruntime(onnx_models, samples):
    nchw = samples.transpose(0, 3, 1, 2)[:1]
    ort_out = runtimes.load(onnx_models["onnx"]).run([nchw])[0]
    ov_out = runtimes.load(onnx_models["xml"]).run([nchw])[0]
    assert ort_out.shape == ov_out.shape == (1, 4)
    assert np.max(np.abs(ort_out - ov_out)) < 1e-4


def test_onnx_model_takes_nhwc_input_without_batch_dim(onnx_models, samples):
    session = runtimes.load(onnx_models["onnx"])
    from_nhwc = session.run([samples[0]])[0]  # (16, 16, 3): batch added, transposed to NCHW
    from_nchw = session.run([samples[:1].transpose(0, 3, 1, 2)])[0]
    np.testing.assert_array_equal(from_nhwc, from_nchw)


def test_example_inputs_follow_model_and_run_raw(onnx_models):
    session = runtimes.load(onnx_models["onnx"], threads=1)
    (x,) = session.example_inputs(seed=3)
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_array_equal(x, session.example_inputs(seed=3)[0])
    assert session.run_raw([x])[0].shape == (1, 4)


def test_missing_provider_is_a_config_error(onnx_models):
    with pytest.raises(ConfigError, match="TensorrtExecutionProvider"):
        runtimes.load(onnx_models["onnx"], providers=["TensorrtExecutionProvider"])


def test_openvino_rejects_bad_precision(onnx_models):
    with pytest.raises(StepError, match="could not compile tiny.xml"):
        runtimes.load(onnx_models["xml"], precision="f31")


# --- prepared: the inference a benchmark times ---------------------------------


def _prepared_leaves_caller_and_run_raw_alone(session) -> None:
    (x,) = session.example_inputs(seed=1)
    expected = session.run_raw([x])[0].copy()
    bound = x.copy()
    infer = session.prepared([x])
    for _ in range(3):
        infer()
    other = session.example_inputs(seed=2)
    assert not np.array_equal(session.run_raw(other)[0], expected)
    np.testing.assert_array_equal(x, bound)  # the binding was a copy: running other inputs did not write into x
    np.testing.assert_array_equal(session.run_raw([x])[0], expected)


@pytest.mark.parametrize("key", ["onnx", "xml"])
def test_prepared_runs_bound_copies_and_leaves_run_raw_alone(onnx_models, key):
    _prepared_leaves_caller_and_run_raw_alone(runtimes.load(onnx_models[key]))


def test_prepared_openvino_infers_on_the_bound_inputs(onnx_models):
    session = runtimes.load(onnx_models["xml"])
    (x,) = session.example_inputs(seed=4)
    expected = session.run_raw([x])[0]
    outputs = session.prepared([x])()  # share_outputs: views of the request's own output tensors
    np.testing.assert_array_equal(outputs[0], expected)


def test_prepared_onnxruntime_binds_outputs_of_the_model_s_shapes(onnx_models):
    session = runtimes.load(onnx_models["onnx"])
    infer = session.prepared(session.example_inputs())
    infer()  # a preallocated output of another shape or dtype would make run_with_iobinding fail
    with pytest.raises(Exception, match="(?i)invalid|dimension|shape"):
        session.prepared([np.zeros((1, 3, 8, 8), np.float32)])


# --- LiteRT --------------------------------------------------------------------


@pytest.mark.slow
def test_litert_tensor_info_for_float_and_quantized_io(tflite_models):
    fp32 = runtimes.load(tflite_models["fp32"])
    assert fp32.runtime == "litert"
    assert (fp32.inputs[0].shape, fp32.inputs[0].dtype, fp32.inputs[0].scale) == ((1, 16, 16, 3), "float32", None)
    int8 = runtimes.load(tflite_models["int8"])
    (inp,), (out,) = int8.inputs, int8.outputs
    assert (inp.dtype, out.dtype) == ("int8", "int8")
    assert inp.scale == pytest.approx(1 / 255, rel=1e-3) and inp.zero_point == -128  # calibration data in [0, 1)
    assert out.scale > 0 and -128 <= out.zero_point <= 127
    uint8 = runtimes.load(tflite_models["uint8"])
    assert uint8.inputs[0].dtype == "uint8" and uint8.inputs[0].zero_point == 0
    assert uint8.outputs[0].zero_point == out.zero_point + 128  # same quantization, shifted by 128


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["int8", "uint8"])
def test_quantized_run_is_close_to_fp32(tflite_models, samples, variant):
    reference = runtimes.load(tflite_models["fp32"]).run([samples])[0]
    session = runtimes.load(tflite_models[variant])
    candidate = session.run([samples])[0]
    assert candidate.dtype == np.float32 and candidate.shape == (8, 4)
    assert compare([reference], [candidate])["cosine"] > 0.95
    raw = session.run_raw(session.example_inputs())[0]
    assert raw.dtype == np.dtype(variant)


@pytest.mark.slow
def test_nhwc_tflite_accepts_nchw_input_and_matches_onnx(tflite_models, onnx_models, samples):
    tflite = runtimes.load(tflite_models["fp32"])
    nchw = samples.transpose(0, 3, 1, 2)
    from_nchw = tflite.run([nchw])[0]
    np.testing.assert_array_equal(from_nchw, tflite.run([samples])[0])
    onnx_out = np.concatenate([runtimes.load(onnx_models["onnx"]).run([x[None]])[0] for x in nchw])
    assert np.max(np.abs(from_nchw - onnx_out)) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_litert_prepared_runs_bound_copies_and_leaves_run_raw_alone(tflite_models, variant):
    session = runtimes.load(tflite_models[variant])
    _prepared_leaves_caller_and_run_raw_alone(session)


@pytest.mark.slow
def test_litert_reports_xnnpack_and_can_run_without_it(tflite_models, samples):
    with_xnn = runtimes.load(tflite_models["fp32"])
    without = runtimes.load(tflite_models["fp32"], xnnpack=False, threads=1)
    assert with_xnn.xnnpack_applied is True and without.xnnpack_applied is False
    np.testing.assert_allclose(with_xnn.run([samples])[0], without.run([samples])[0], atol=1e-5)


# --- a real shipped model: rapidocr's text-direction classifier ---------------


def _text_crops() -> np.ndarray:
    """Two 48x192 crops of scikit-image's real text photo, normalized like rapidocr."""
    from PIL import Image
    from skimage import data

    gray = data.text()
    crops = [gray[10:80, 0:280], gray[90:160, 150:430]]
    images = [np.asarray(Image.fromarray(c).convert("RGB").resize((192, 48), Image.BILINEAR)) for c in crops]
    batch = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return (batch - 0.5) / 0.5


@pytest.mark.slow
def test_rapidocr_classifier_onnxruntime_and_openvino_agree(tmp_path):
    source = rm.rapidocr_cls()
    dynamic = runtimes.load(source)
    assert dynamic.inputs[0].shape == (-1, 3, -1, -1)
    with pytest.raises(ConfigError, match="dynamic shape"):
        dynamic.example_inputs()

    ort = runtimes.load(source, input_shapes={"x": (1, 3, 48, 192)})
    assert ort.example_inputs()[0].shape == (1, 3, 48, 192)
    xml = rm.write_openvino(source, tmp_path / "cls.xml", input_shape=[1, 3, 48, 192])
    ov = runtimes.load(xml)
    assert ov.inputs[0].shape == (1, 3, 48, 192) and ov.outputs[0].shape == (1, 2)

    crops = _text_crops()
    reference = [ort.run([x[None]])[0] for x in crops]
    candidate = [ov.run([x[None]])[0] for x in crops]
    assert all(np.isclose(r.sum(), 1.0, atol=1e-4) for r in reference)  # softmax over 0/180 degrees
    scores = compare(reference, candidate)
    assert scores["cosine"] > 0.999 and scores["max_abs_error"] < 1e-4
