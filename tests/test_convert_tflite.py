"""Real TensorFlow -> TFLite conversions: Keras MobileNetV2 at every precision, TF1 frozen graphs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from builder.backends.litert.tflite import (
    FrozenGraphSpec,
    classify_failure,
    keras_application,
    representative_from_array,
    save_keras,
    tflite_ops,
    to_tflite,
)
from builder.errors import ConfigError, ConversionError

SHAPE = (96, 96, 3)


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """One inference with IO (de)quantized by the tensors' own scale/zero point."""
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
    it.set_tensor(inp["index"], x)
    it.invoke()
    y = it.get_tensor(out["index"])
    if out["dtype"] in (np.int8, np.uint8):
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y


def io_dtypes(path: Path) -> tuple[type, type]:
    it = Interpreter(model_path=str(path))
    return it.get_input_details()[0]["dtype"], it.get_output_details()[0]["dtype"]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- Keras MobileNetV2 (alpha 0.35, 96x96, random weights, logits) ---------------------------


@pytest.fixture(scope="module")
def mobilenet(calib):
    """Random weights shrink activations to ~1e-11 by the logits, which makes quantization
    meaningless; one training-mode pass with momentum 0 sets every BatchNorm's statistics
    to the calibration data's, so activations keep a healthy range (as in a trained net)."""
    model = keras_application(
        "MobileNetV2", weights=None, input_shape=SHAPE, alpha=0.35, classifier_activation=None
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(calib, training=True)
    return model


@pytest.fixture(scope="module")
def saved_model(mobilenet, tmp_path_factory) -> Path:
    return save_keras(mobilenet, tmp_path_factory.mktemp("sm") / "mobilenet")


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, (8, *SHAPE)).astype(np.float32)


VARIANTS = {
    "fp32": dict(precision="fp32"),
    "fp16": dict(precision="fp16"),
    "dynamic": dict(precision="dynamic"),
    "int8": dict(precision="int8", io_dtype="int8"),
    "uint8": dict(precision="int8", io_dtype="uint8"),
    "int8_floatio": dict(precision="int8"),
    "int16x8": dict(precision="int16x8"),
}


@pytest.fixture(scope="module")
def converted(saved_model, calib, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("tflite")
    rep = representative_from_array(calib)
    results = {}
    for name, kwargs in VARIANTS.items():
        path = out / f"mobilenet_{name}.tflite"
        report = to_tflite(saved_model, path, source_format="saved_model", representative=rep, **kwargs)
        results[name] = (path, report)
    return results


@pytest.mark.slow
def test_fp32_matches_keras(converted, mobilenet, calib):
    path, report = converted["fp32"]
    expected = mobilenet(calib[:1], training=False).numpy()
    np.testing.assert_allclose(run_tflite(path, calib[:1]), expected, atol=1e-4, rtol=1e-4)
    assert report["size"] == path.stat().st_size
    assert report["input_dtypes"] == ["float32"] and report["output_dtypes"] == ["float32"]
    assert report["converter"] == f"tensorflow {tf.__version__}"
    assert report["ops"]["CONV_2D"] >= 30 and report["ops"]["DEPTHWISE_CONV_2D"] >= 17
    assert "CONV_2D" in report["float_ops"]
    assert report["weight_dtypes"]["float32"] > 50


@pytest.mark.slow
def test_fp16_stores_weights_as_float16(converted):
    path, report = converted["fp16"]
    info = tflite_ops(path)
    assert info == {k: report[k] for k in info}
    assert info["weight_dtypes"]["float16"] > 50
    assert info["ops"]["DEQUANTIZE"] == info["weight_dtypes"]["float16"]  # fp16 -> fp32 at load
    assert io_dtypes(path) == (np.float32, np.float32)


@pytest.mark.slow
def test_dynamic_range_has_int8_weights_and_float_io(converted):
    _, report = converted["dynamic"]
    assert report["weight_dtypes"]["int8"] > 30
    assert report["input_dtypes"] == ["float32"]
    assert "CONV_2D" in report["float_ops"]  # activations stay float


@pytest.mark.slow
@pytest.mark.parametrize("variant,dtype", [("int8", np.int8), ("uint8", np.uint8), ("int8_floatio", np.float32)])
def test_int8_io_types_and_agreement(converted, calib, variant, dtype):
    path, report = converted[variant]
    assert io_dtypes(path) == (dtype, dtype)
    assert report["input_dtypes"] == [np.dtype(dtype).name]
    assert report["float_ops"] == []
    raw, centered, mismatched = agreement(converted["fp32"][0], path, calib)
    assert raw > 0.88 and centered > 0.5 and mismatched < 0.1


def agreement(reference: Path, path: Path, calib: np.ndarray) -> tuple[float, float, float]:
    """Mean cosine of `path` vs `reference` outputs on the calibration samples: raw; with the
    reference's mean output (the input-independent part) removed; and that centered cosine
    against mismatched samples, a baseline showing that the outputs track the input.

    Random weights make the net chaotic, so int8 stays further from fp32 than a trained net's.
    """
    ref = np.stack([run_tflite(reference, x[None]) for x in calib])
    got = np.stack([run_tflite(path, x[None]) for x in calib])
    raw = np.mean([cosine(g, r) for g, r in zip(got, ref)])
    ref, got = ref - ref.mean(axis=0), got - ref.mean(axis=0)
    centered = np.mean([cosine(g, r) for g, r in zip(got, ref)])
    mismatched = np.mean([cosine(g, r) for g, r in zip(got, np.roll(ref, 1, axis=0))])
    return float(raw), float(centered), float(mismatched)


@pytest.mark.slow
def test_int16x8_has_int16_activations(converted, calib):
    path, report = converted["int16x8"]
    it = Interpreter(model_path=str(path))
    assert sum(t["dtype"] == np.int16 for t in it.get_tensor_details()) > 50
    assert report["float_ops"] == [] and report["weight_dtypes"]["int8"] > 30
    raw, centered, mismatched = agreement(converted["fp32"][0], path, calib)
    assert raw > 0.95 and centered > 0.8 and mismatched < 0.1


@pytest.mark.slow
def test_size_ordering(converted):
    size = {name: report["size"] for name, (_, report) in converted.items()}
    assert size["fp32"] > 1.8 * size["fp16"]
    assert size["fp16"] > 1.5 * size["int8"]
    assert size["fp16"] > 1.5 * size["dynamic"]


@pytest.mark.slow
def test_conversion_is_reproducible(converted, saved_model, tmp_path):
    again = to_tflite(saved_model, tmp_path / "again.tflite", source_format="saved_model")
    assert (tmp_path / "again.tflite").read_bytes() == converted["fp32"][0].read_bytes()
    assert again["size"] == converted["fp32"][1]["size"]


@pytest.mark.slow
def test_keras_file_source(mobilenet, converted, calib, tmp_path):
    mobilenet.save(tmp_path / "mobilenet.keras")
    out = tmp_path / "from_keras.tflite"
    to_tflite(tmp_path / "mobilenet.keras", out, source_format="keras")
    np.testing.assert_allclose(run_tflite(out, calib[:1]), run_tflite(converted["fp32"][0], calib[:1]), atol=1e-5)


@pytest.mark.slow
def test_keras_application_loads_local_weights(mobilenet, calib, tmp_path):
    mobilenet.save_weights(tmp_path / "mobilenet.weights.h5")
    model = keras_application(
        "MobileNetV2", weights=None, input_shape=SHAPE, alpha=0.35, classifier_activation=None,
        weights_path=tmp_path / "mobilenet.weights.h5",
    )
    np.testing.assert_array_equal(model(calib[:2]).numpy(), mobilenet(calib[:2]).numpy())


# --- int8 strictness ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sin_model(tmp_path_factory) -> Path:
    """Conv -> sin -> conv: the TF 2.21 converter has no int8 SIN and silently keeps it in float."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 4), batch_size=1)
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    y = keras.layers.Conv2D(4, 1)(keras.ops.sin(y))
    return save_keras(keras.Model(x, y), tmp_path_factory.mktemp("sin") / "sm")


def test_full_int8_refuses_float_fallback(sin_model, tmp_path):
    rep = representative_from_array(np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 4)))
    out = tmp_path / "sin.tflite"
    with pytest.raises(ConversionError) as err:
        to_tflite(sin_model, out, source_format="saved_model", precision="int8", io_dtype="int8", representative=rep)
    assert err.value.cause == "not-fully-quantized"
    assert "SIN" in err.value.message and "require_full_int8" in err.value.hint
    assert not out.exists() and list(tmp_path.iterdir()) == []

    report = to_tflite(
        sin_model, out, source_format="saved_model", precision="int8", io_dtype="int8",
        representative=rep, require_full_int8=False,
    )
    assert report["float_ops"] == ["SIN"]
    assert io_dtypes(out) == (np.int8, np.int8)


def test_calibration_shape_mismatch(sin_model, tmp_path):
    rep = representative_from_array(np.zeros((2, 6, 6, 4), np.float32))
    with pytest.raises(ConversionError) as err:
        to_tflite(sin_model, tmp_path / "o.tflite", source_format="saved_model", precision="int8", representative=rep)
    assert err.value.cause == "shape-mismatch"
    assert "with value 8 to 6" in err.value.message and "calibration data" in err.value.hint


# --- TF1 frozen graphs ---------------------------------------------------------------------------

v1 = tf.compat.v1


def freeze(path: Path, *, fake_quant: bool = False, extra=None) -> Path:
    """A TF1 graph: input -> conv -> relu6 (-> extra) -> ArgMax, variables frozen into constants."""
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 32, 32, 3], name="input")
        if fake_quant:
            x = tf.quantization.fake_quant_with_min_max_args(x, min=-1.0, max=1.0)
        w = v1.get_variable("w", [3, 3, 3, 8], initializer=v1.random_normal_initializer(seed=1))
        y = tf.nn.relu6(tf.nn.conv2d(x, w, 1, "SAME"))
        if fake_quant:
            y = tf.quantization.fake_quant_with_min_max_args(y, min=0.0, max=6.0)
        if extra is not None:
            y = extra(y)
        tf.math.argmax(y, axis=3, name="ArgMax")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["ArgMax"])
    path.write_bytes(frozen.SerializeToString())
    return path


def run_graph(path: Path, x: np.ndarray) -> np.ndarray:
    graph_def = v1.GraphDef.FromString(path.read_bytes())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        with v1.Session(graph=graph) as sess:
            return sess.run("ArgMax:0", {"input:0": x})


SPEC = FrozenGraphSpec(input_arrays=["input"], output_arrays=["ArgMax"], input_shapes={"input": [1, 32, 32, 3]})
X32 = np.random.default_rng(2).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)


def test_frozen_graph_argmax(tmp_path):
    pb = freeze(tmp_path / "deeplab_like.pb")
    out = tmp_path / "argmax.tflite"
    report = to_tflite(pb, out, source_format="frozen_graph", frozen=SPEC)
    assert report["ops"] == {"ARG_MAX": 1, "CONV_2D": 1}
    assert report["output_dtypes"] == ["int64"]
    np.testing.assert_array_equal(run_tflite(out, X32), run_graph(pb, X32))


def test_frozen_graph_legacy_converter(tmp_path):
    pb = freeze(tmp_path / "g.pb")
    spec = FrozenGraphSpec(["input"], ["ArgMax"], {"input": [1, 32, 32, 3]}, change_concat_input_ranges=False,
                           legacy_converter=True)
    out = tmp_path / "legacy.tflite"
    to_tflite(pb, out, source_format="frozen_graph", frozen=spec)
    np.testing.assert_array_equal(run_tflite(out, X32), run_graph(pb, X32))


def test_frozen_graph_int8_ptq(tmp_path):
    pb = freeze(tmp_path / "g.pb")
    rep = representative_from_array(np.random.default_rng(3).uniform(-1, 1, (8, 32, 32, 3)))
    report = to_tflite(pb, tmp_path / "q.tflite", source_format="frozen_graph", frozen=SPEC,
                       precision="int8", representative=rep)
    assert report["float_ops"] == [] and report["weight_dtypes"]["int8"] == 1


def test_fake_quant_graph_to_uint8(tmp_path):
    pb = freeze(tmp_path / "fq.pb", fake_quant=True)
    spec = FrozenGraphSpec(
        ["input"], ["ArgMax"], {"input": [1, 32, 32, 3]},
        inference_type="quantized_uint8", quantized_input_stats={"input": (128.0, 127.0)},
    )
    out = tmp_path / "fq.tflite"
    report = to_tflite(pb, out, source_format="frozen_graph", frozen=spec, precision="int8", io_dtype="uint8")
    it = Interpreter(model_path=str(out))
    inp = it.get_input_details()[0]
    assert inp["dtype"] == np.uint8
    # the input's fake-quant range [-1, 1] sets the scale (2/255); zero point 128 as the stats say
    assert inp["quantization"][1] == 128 and inp["quantization"][0] == pytest.approx(2 / 255)
    assert report["input_dtypes"] == ["uint8"] and report["float_ops"] == []
    agree = np.mean(run_tflite(out, X32) == run_graph(pb, X32))
    assert agree > 0.9


def test_fake_quant_needs_int8_uint8_and_stats(tmp_path):
    pb = freeze(tmp_path / "fq.pb", fake_quant=True)
    spec = FrozenGraphSpec(["input"], ["ArgMax"], inference_type="quantized_uint8")
    with pytest.raises(ConfigError, match="quantized_input_stats"):
        to_tflite(pb, tmp_path / "o.tflite", source_format="frozen_graph", frozen=spec, precision="int8",
                  io_dtype="uint8")
    with pytest.raises(ConfigError, match="io_dtype=float32") as err:  # fp32 would convert it as float
        to_tflite(pb, tmp_path / "o.tflite", source_format="frozen_graph", frozen=spec, precision="int8")
    assert "precision: int8 and io_dtype: uint8" in err.value.hint


def test_unsupported_op_then_custom_op(tmp_path):
    pb = freeze(tmp_path / "erf.pb", extra=tf.math.erf)
    out = tmp_path / "erf.tflite"
    with pytest.raises(ConversionError) as err:
        to_tflite(pb, out, source_format="frozen_graph", frozen=SPEC)
    assert err.value.cause == "unsupported-op"
    assert err.value.message.endswith("ops not supported by TFLite builtins: Erf")
    assert "allow_custom_ops" in err.value.hint
    assert any("Erf" in line for line in err.value.log_tail)
    assert not out.exists()

    report = to_tflite(pb, out, source_format="frozen_graph", frozen=SPEC, allow_custom_ops=True)
    assert report["custom_ops"] == ["Erf"] and report["ops"]["Erf"] == 1


def test_shape_mismatch(tmp_path):
    pb = freeze(tmp_path / "g.pb")
    spec = FrozenGraphSpec(["input"], ["ArgMax"], {"input": [1, 32, 32, 4]})
    with pytest.raises(ConversionError) as err:
        to_tflite(pb, tmp_path / "o.tflite", source_format="frozen_graph", frozen=spec)
    assert err.value.cause == "shape-mismatch"
    assert "[1, 32, 32, 4]" in err.value.message


def test_unknown_output_array(tmp_path):
    pb = freeze(tmp_path / "g.pb")
    spec = FrozenGraphSpec(["input"], ["TFLite_Detection_PostProcess"], {"input": [1, 32, 32, 3]})
    with pytest.raises(ConversionError) as err:
        to_tflite(pb, tmp_path / "o.tflite", source_format="frozen_graph", frozen=spec)
    assert err.value.cause == "unknown-tensor"
    assert "TFLite_Detection_PostProcess" in err.value.message


def test_unparsable_graph_keeps_converter_message(tmp_path):
    pb = tmp_path / "garbage.pb"
    pb.write_bytes(b"not a graph")
    with pytest.raises(ConversionError) as err:
        to_tflite(pb, tmp_path / "o.tflite", source_format="frozen_graph", frozen=SPEC)
    assert err.value.cause == "conversion-failed"
    assert "Unable to parse input file" in err.value.message


# --- pure logic ------------------------------------------------------------------------------------


def test_classify_control_flow_v1_message_from_seed_002():
    cause, hint = classify_failure("Failed to functionalize ControlFlowV1 ops. Consider using ControlFlowV2.")
    assert cause == "control-flow-v1" and "SavedModel" in hint


def test_classify_unknown_message():
    assert classify_failure("something else broke") == ("conversion-failed", None)


def test_representative_is_ordered_limited_and_batched():
    data = np.arange(5 * 2 * 2, dtype=np.float64).reshape(5, 2, 2)
    batches = [b for (b,) in representative_from_array(data, limit=3)()]
    assert [b.shape for b in batches] == [(1, 2, 2)] * 3 and all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), data[:3])
    again = [b for (b,) in representative_from_array(data, limit=3)()]
    assert all((a == b).all() for a, b in zip(batches, again))
    batched = [b for (b,) in representative_from_array(data[:, None], has_batch_dim=True)()]
    assert len(batched) == 5 and batched[0].shape == (1, 2, 2)


def test_representative_rejects_empty():
    with pytest.raises(ConfigError, match="empty"):
        representative_from_array(np.zeros((0, 4), np.float32))


def test_argument_errors(tmp_path):
    sm = tmp_path / "sm"
    sm.mkdir()
    with pytest.raises(ConfigError, match="calibration data"):
        to_tflite(sm, tmp_path / "o.tflite", source_format="saved_model", precision="int8")
    with pytest.raises(ConfigError, match="io_dtype uint8 needs precision int8"):
        to_tflite(sm, tmp_path / "o.tflite", source_format="saved_model", precision="fp16", io_dtype="uint8")
    with pytest.raises(ConfigError, match="not found"):
        to_tflite(tmp_path / "missing", tmp_path / "o.tflite", source_format="saved_model")
    with pytest.raises(ConfigError, match="frozen_graph"):
        to_tflite(sm, tmp_path / "o.tflite", source_format="frozen_graph")


def test_unknown_keras_application():
    with pytest.raises(ConfigError) as err:
        keras_application("MobileNetV9", weights=None)
    assert "MobileNetV2" in err.value.hint


# --- the real size: MobileNetV2 1.0 at 224x224 ----------------------------------------------------


@pytest.mark.slow
def test_mobilenet_v2_224_fp32_and_int8(tmp_path):
    model = keras_application("MobileNetV2", weights=None, input_shape=(224, 224, 3))
    sm = save_keras(model, tmp_path / "sm")
    calib = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype(np.float32)
    fp32 = to_tflite(sm, tmp_path / "fp32.tflite", source_format="saved_model")
    int8 = to_tflite(sm, tmp_path / "int8.tflite", source_format="saved_model", precision="int8",
                     io_dtype="uint8", representative=representative_from_array(calib))
    assert 13_000_000 < fp32["size"] < 15_000_000  # 3.5 M float32 parameters
    assert int8["size"] < fp32["size"] / 3 and int8["float_ops"] == []
    assert io_dtypes(tmp_path / "int8.tflite") == (np.uint8, np.uint8)
