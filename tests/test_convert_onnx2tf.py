"""builder.convert.onnx2tf: ONNX -> SavedModel (NHWC) -> TFLite via the shared to_tflite (real onnx2tf)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx_models import INPUT_NCHW, cosine, images, ort_run

from builder.convert.onnx import simplify_onnx, torch_to_onnx
from builder.convert.onnx2tf import onnx_to_saved_model
from builder.convert.tflite import representative_from_array, to_tflite
from builder.errors import ConversionError
from builder.runtimes import load

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path, dict]:
    work = tmp_path_factory.mktemp("onnx2tf")
    torch_to_onnx(work / "cnn.onnx", input_shape=INPUT_NCHW, factory="onnx_models:small_cnn")
    simplify_onnx(work / "cnn.onnx", work / "slim.onnx")
    report = onnx_to_saved_model(work / "slim.onnx", work / "saved_model", calibration=images(8))
    return work / "slim.onnx", work / "saved_model", report


def test_saved_model_is_nhwc_and_only_the_saved_model_is_kept(converted):
    onnx_path, saved, report = converted
    assert report["layout"] == "NHWC"
    assert report["inputs"] == {"input": {"shape": [1, 32, 32, 3], "dtype": "float32"}}
    assert report["outputs"] == {"output_0": {"shape": [1, 10], "dtype": "float32"}}
    assert sorted(p.name for p in saved.iterdir()) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert onnx_path.exists()  # onnx2tf worked on a copy


@pytest.mark.parametrize(("precision", "min_cosine"), [("fp32", 0.99999), ("int8", 0.99)])
def test_tflite_from_saved_model_matches_onnx(converted, tmp_path, precision, min_cosine):
    onnx_path, saved, _ = converted
    nhwc = images(16, seed=1).transpose(0, 2, 3, 1)
    rep = representative_from_array(nhwc) if precision == "int8" else None
    out = tmp_path / f"cnn_{precision}.tflite"
    to_tflite(saved, out, source_format="saved_model", precision=precision, representative=rep)
    session = load(out, threads=2)
    for i in range(4):
        x = images(1, seed=100 + i)
        got = session.run([x.transpose(0, 2, 3, 1)])[0]
        assert cosine(got, ort_run(onnx_path, x)) > min_cosine


def test_keep_nchw_keeps_the_onnx_layout(converted, tmp_path):
    onnx_path, _, _ = converted
    report = onnx_to_saved_model(onnx_path, tmp_path / "nchw", keep_nchw=True)
    assert report["inputs"]["input"]["shape"] == [1, 3, 32, 32]
    import tensorflow as tf

    fn = tf.saved_model.load(str(tmp_path / "nchw")).signatures["serving_default"]
    x = images(1, seed=9)
    np.testing.assert_allclose(fn(input=tf.constant(x))["output_0"].numpy(), ort_run(onnx_path, x), atol=1e-4)


def test_failure_becomes_conversion_error_with_log_tail(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    with pytest.raises(ConversionError) as err:
        onnx_to_saved_model(bad, tmp_path / "out")
    assert err.value.cause == "invalid-onnx"
    assert err.value.log_tail
    assert not (tmp_path / "out").exists()
