"""builder.stage.convert.onnx: torch/TF -> ONNX, check, simplify, static shapes (real exporters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_models import INPUT_NCHW, cosine, images, keras_cnn, ort_run, small_cnn

from builder.backends.tf2onnx.convert import tf_to_onnx
from builder.errors import ConfigError, ConversionError
from builder.stage.convert.onnx import check_onnx, fix_static_shapes, simplify_onnx, torch_to_onnx

FACTORY = "onnx_models:small_cnn"


@pytest.fixture(scope="module")
def torch_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torch") / "cnn.onnx"
    torch_to_onnx(out, input_shape=INPUT_NCHW, factory=FACTORY)
    return out


def _torch_out(x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return small_cnn()(torch.from_numpy(x)).numpy()


def test_torch_export_matches_torch(torch_onnx):
    x = images(1)
    np.testing.assert_allclose(ort_run(torch_onnx, x), _torch_out(x), rtol=1e-4, atol=1e-5)
    info = check_onnx(torch_onnx)
    assert info["opset"] == 17
    assert info["inputs"] == {"input": INPUT_NCHW}
    assert list(info["outputs"]) == ["output"]


def test_torch_export_reports_exporter_and_is_deterministic(tmp_path, torch_onnx):
    report = torch_to_onnx(tmp_path / "again.onnx", input_shape=INPUT_NCHW, factory=FACTORY, opset=13)
    assert report["exporter"] == "torchscript" and report["opset"] == 13
    assert report["torch"].startswith("2.")
    assert check_onnx(tmp_path / "again.onnx")["opset"] == 13
    x = images(1, seed=3)
    np.testing.assert_allclose(ort_run(tmp_path / "again.onnx", x), ort_run(torch_onnx, x), rtol=1e-5, atol=1e-6)


def test_state_dict_dynamic_batch_and_no_temp_files(tmp_path):
    import torch

    torch.manual_seed(7)
    other = small_cnn()
    for p in other.parameters():
        torch.nn.init.normal_(p, 0, 0.2)
    sd = tmp_path / "weights.pth"
    torch.save({"state_dict": other.state_dict()}, sd)  # checkpoint-style wrapper
    out = tmp_path / "out" / "cnn.onnx"
    torch_to_onnx(out, input_shape=INPUT_NCHW, factory=FACTORY, state_dict=sd,
                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    x = images(3, seed=1)
    with torch.no_grad():
        expected = other(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_run(out, x), expected, rtol=1e-4, atol=1e-5)
    assert [p.name for p in out.parent.iterdir()] == ["cnn.onnx"]


def test_state_dict_that_does_not_fit_is_a_conversion_error(tmp_path):
    import torch

    sd = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, sd)
    with pytest.raises(ConversionError) as err:
        torch_to_onnx(tmp_path / "x.onnx", input_shape=INPUT_NCHW, factory=FACTORY, state_dict=sd)
    assert err.value.cause == "state-dict-mismatch"
    assert "conv.weight" in err.value.message
    assert not (tmp_path / "x.onnx").exists()


def test_bad_factory_and_ambiguous_sources_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="module.path:callable"):
        torch_to_onnx(tmp_path / "x.onnx", input_shape=INPUT_NCHW, factory="onnx_models")
    with pytest.raises(ConfigError, match="cannot import"):
        torch_to_onnx(tmp_path / "x.onnx", input_shape=INPUT_NCHW, factory="onnx_models:nope")
    with pytest.raises(ConfigError, match="exactly one"):
        torch_to_onnx(tmp_path / "x.onnx", input_shape=INPUT_NCHW, factory=FACTORY, torchscript=tmp_path / "m.pt")


def test_torchscript_and_exported_program_sources(tmp_path):
    import torch

    example = torch.from_numpy(images(1))
    ts = tmp_path / "cnn.pt"
    torch.jit.trace(small_cnn(), example).save(str(ts))
    ep = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(small_cnn(), (example,)), str(ep))
    x = images(1, seed=2)
    for kind, path in (("torchscript", ts), ("exported_program", ep)):
        out = tmp_path / f"{kind}.onnx"
        torch_to_onnx(out, input_shape=INPUT_NCHW, **{kind: path})
        np.testing.assert_allclose(ort_run(out, x), _torch_out(x), rtol=1e-4, atol=1e-5, err_msg=kind)


def test_check_onnx_rejects_a_broken_model(tmp_path, torch_onnx):
    model = onnx.load(str(torch_onnx))
    model.graph.node[0].input[0] = "no_such_tensor"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ConversionError) as err:
        check_onnx(bad)
    assert err.value.cause == "invalid-onnx"


def test_simplify_keeps_outputs_and_fixes_shapes(tmp_path):
    dynamic = tmp_path / "dyn.onnx"
    torch_to_onnx(dynamic, input_shape=INPUT_NCHW, factory=FACTORY,
                  dynamic_axes={"input": {0: "batch", 2: "h", 3: "w"}, "output": {0: "batch"}})
    assert check_onnx(dynamic)["inputs"]["input"] == ["batch", 3, "h", "w"]
    slim = tmp_path / "slim.onnx"
    report = simplify_onnx(dynamic, slim, input_shapes={"input": [2, 3, 32, 32]})
    assert report["tool"].startswith("onnxslim")
    assert report["nodes_after"] <= report["nodes_before"]
    assert report["max_abs_diff"] < 1e-4
    info = check_onnx(slim)
    assert info["inputs"]["input"] == [2, 3, 32, 32]
    assert info["outputs"]["output"] == [2, 10]
    x = images(2, seed=5)
    np.testing.assert_allclose(ort_run(slim, x), ort_run(dynamic, x), rtol=1e-4, atol=1e-5)

    fixed = tmp_path / "fixed.onnx"
    fix_static_shapes(dynamic, fixed, {"input": [1, 3, 32, 32]})
    assert check_onnx(fixed)["inputs"]["input"] == [1, 3, 32, 32]
    with pytest.raises(ConfigError, match="not model inputs"):
        fix_static_shapes(dynamic, fixed, {"images": [1, 3, 32, 32]})


def test_simplify_refuses_a_changed_model(tmp_path, torch_onnx, monkeypatch):
    """Fault injection: a 'simplifier' that perturbs a weight must be caught by the check."""
    import onnxslim

    def perturbing_slim(model):
        init = model.graph.initializer[-1]
        arr = onnx.numpy_helper.to_array(init) + 1.0
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
        return model

    monkeypatch.setattr(onnxslim, "slim", perturbing_slim)
    with pytest.raises(ConversionError) as err:
        simplify_onnx(torch_onnx, tmp_path / "slim.onnx")
    assert err.value.cause == "simplify-changed-outputs"
    assert not (tmp_path / "slim.onnx").exists()


@pytest.mark.slow
def test_keras_and_tflite_to_onnx(tmp_path):
    import tensorflow as tf

    model = keras_cnn()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    expected = model(x).numpy()
    keras_file = tmp_path / "cnn.keras"
    model.save(keras_file)
    report = tf_to_onnx(keras_file, tmp_path / "keras.onnx", source_format="keras", opset=15)
    assert report["exporter"] == "tf2onnx"
    np.testing.assert_allclose(ort_run(tmp_path / "keras.onnx", x), expected, rtol=1e-4, atol=1e-5)

    tflite = tmp_path / "cnn.tflite"
    tflite.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    tf_to_onnx(tflite, tmp_path / "tflite.onnx", source_format="tflite")
    assert check_onnx(tmp_path / "tflite.onnx")["opset"] == 17
    assert cosine(ort_run(tmp_path / "tflite.onnx", x), expected) > 0.9999


@pytest.mark.slow
def test_tf2onnx_failure_is_classified(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    with pytest.raises(ConversionError) as err:
        tf_to_onnx(junk, tmp_path / "x.onnx", source_format="tflite")
    assert err.value.cause == "tf2onnx-failed"
    assert err.value.log_tail
    assert not (tmp_path / "x.onnx").exists()
