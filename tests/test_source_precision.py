"""A source that is already quantized is recognised, and not quantized again unless asked (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from onnx_models import small_cnn

from builder.host.cli import cli
from builder.stage import source_precision


def _dynamic_onnx(tmp_path: Path) -> Path:
    """The small CNN, dynamically quantized by ONNX Runtime (ConvInteger), as ddddocr ships its models."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(small_cnn(), (torch.zeros(1, 3, 32, 32),), str(fp32), input_names=["input"], opset_version=17,
                      dynamo=False)
    out = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv"])
    return out


def _recipe(tmp_path: Path, source: dict, shape: list[int], name: str = "input") -> Path:
    path = tmp_path / "quantized.yaml"
    path.write_text(yaml.safe_dump({
        "name": "quantized", "description": "an already quantized ONNX source", "task": "generic",
        "source": source, "input": {"name": name, "shape": shape, "layout": "NCHW", "color": "GRAY" if shape[1] == 1 else "RGB"},
        "calibration": {"synthetic": 8}, "validation": {"synthetic": 4},
        "variants": {"fp32": {}, "int8": {}}, "benchmark": {"threads": 1, "warmup": 1, "runs": 3}}))
    return path


def test_quantized_sources_are_recognised_in_every_format(tmp_path):
    found = source_precision.inspect(_dynamic_onnx(tmp_path), "onnx")
    assert found.precision == "dynamic" and "ConvInteger" in found.evidence
    assert source_precision.inspect(tmp_path / "fp32.onnx", "onnx") is None
    ir = tmp_path / "fq.xml"
    ir.write_text('<net><layers><layer id="0" type="Parameter"/><layer id="1" type="FakeQuantize"/></layers></net>')
    assert source_precision.inspect(ir, "openvino").evidence == "1 FakeQuantize"


def test_plan_and_run_refuse_to_quantize_a_quantized_source_again(tmp_path):
    recipe = _recipe(tmp_path, {"file": str(_dynamic_onnx(tmp_path))}, [1, 3, 32, 32])
    planned = CliRunner().invoke(cli, ["plan", str(recipe), "-t", "openvino", "--json"])
    plan = json.loads(planned.output)
    assert plan["variants"] == ["fp32"] and "already quantized (dynamic" in plan["skipped"]["int8"]
    assert any("fp32 is the source's own precision" in note for note in plan["notes"])

    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", "openvino", "--runner", "local", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    workdir = tmp_path / "out" / "quantized" / "openvino"
    report = (workdir / "report.md").read_text()
    assert "already quantized" in report and "quantizing it again is refused" in report
    variants = {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}
    assert set(variants) == {"fp32"} and variants["fp32"]["validation"]["source"]["cosine"] > 0.999


def test_requantize_is_explicit(tmp_path):
    source = {"file": str(_dynamic_onnx(tmp_path)), "requantize": True}
    plan = json.loads(CliRunner().invoke(cli, ["plan", str(_recipe(tmp_path, source, [1, 3, 32, 32])), "-t", "openvino",
                                               "--json"]).output)
    assert plan["variants"] == ["fp32", "int8"] and "quantized again (source.requantize)" in " ".join(plan["notes"])


@pytest.mark.slow
@pytest.mark.network
def test_ddddocr_common_old_on_openvino_gets_no_blind_int8(tmp_path):
    """Issue 9's case: ddddocr 1.6.1's dynamically quantized OCR model (76 MB wheel from the registry)."""
    source = {"pip": {"package": "ddddocr", "version": "1.6.1", "member": "ddddocr/common_old.onnx"}}
    recipe = _recipe(tmp_path, source, [1, 1, 64, 128], name="input1")
    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", "openvino", "--runner", "local", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    workdir = tmp_path / "out" / "quantized" / "openvino"
    plan = json.loads((workdir / "plan.json").read_text())
    assert "int8" not in plan["variants"] and "ConvInteger" in plan["skipped"]["int8"]
    assert not [s for s in plan["steps"] if s["kind"] == "quantize.nncf"]
    fp32, = json.loads((workdir / "results.json").read_text())["variants"]
    assert fp32["validation"]["source"]["cosine"] > 0.99
