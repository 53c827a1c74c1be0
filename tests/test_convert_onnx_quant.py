"""builder.convert.onnx_quant: ONNX Runtime dynamic and static QDQ quantization (real ORT)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx_models import INPUT_NCHW, cosine, images, ort_run

from builder.convert.onnx import torch_to_onnx
from builder.convert.onnx_quant import ort_quantize_dynamic, ort_quantize_static
from builder.errors import ConfigError


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quant") / "cnn.onnx"
    torch_to_onnx(out, input_shape=INPUT_NCHW, factory="onnx_models:small_cnn")
    return out


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _mean_cosine(reference: Path, candidate: Path) -> float:
    xs = images(8, seed=42)
    return min(cosine(ort_run(candidate, x[None]), ort_run(reference, x[None])) for x in xs)


def test_dynamic_quantization(fp32, tmp_path):
    out = tmp_path / "dyn.onnx"
    report = ort_quantize_dynamic(fp32, out, per_channel=True)
    assert report["mode"] == "dynamic" and report["size"] == out.stat().st_size
    assert "ConvInteger" in _ops(out) or "DynamicQuantizeLinear" in _ops(out)
    assert _mean_cosine(fp32, out) > 0.98


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_qdq_each_calibration_method(fp32, tmp_path, method):
    out = tmp_path / f"{method}.onnx"
    report = ort_quantize_static(fp32, out, images(32), method=method)
    assert report["format"] == "QDQ" and report["samples"] == 32
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(out)
    assert _mean_cosine(fp32, out) > (0.98 if method == "minmax" else 0.9)


def test_static_uint8_activations(fp32, tmp_path):
    out = tmp_path / "u8.onnx"
    ort_quantize_static(fp32, out, images(16), activation_type="uint8", per_channel=False)
    q = [n for n in onnx.load(str(out)).graph.node if n.op_type == "QuantizeLinear"]
    zero_points = {i.name: i for i in onnx.load(str(out)).graph.initializer}
    assert any(zero_points[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in q)
    assert _mean_cosine(fp32, out) > 0.98


def test_bad_arguments_are_config_errors(fp32, tmp_path):
    with pytest.raises(ConfigError, match="calibration method"):
        ort_quantize_static(fp32, tmp_path / "x.onnx", images(2), method="kl")
    with pytest.raises(ConfigError, match="empty"):
        ort_quantize_static(fp32, tmp_path / "x.onnx", images(0))
    with pytest.raises(ConfigError, match="int4"):
        ort_quantize_dynamic(fp32, tmp_path / "x.onnx", weight_type="int4")
