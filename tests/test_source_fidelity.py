"""Every variant, fp32 included, is compared with the source model run in its own framework (issue 9)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from onnx_models import small_cnn

from builder.errors import StepError
from builder.host.cli import cli
from builder.stage import metrics


def _onnx_source(path: Path) -> Path:
    import torch

    torch.onnx.export(small_cnn(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    return path


def _run(tmp_path: Path, target: str) -> tuple[object, dict]:
    recipe = tmp_path / "cnn.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "cnn", "description": "small torch CNN as ONNX", "task": "classification",
        "source": {"file": str(_onnx_source(tmp_path / "cnn.onnx"))},
        "input": {"name": "input", "shape": [1, 3, 32, 32], "layout": "NCHW"},
        "calibration": {"synthetic": 16}, "validation": {"synthetic": 8},
        "variants": {"fp32": {}, "int8": {}}, "benchmark": {"threads": 1, "warmup": 1, "runs": 3},
    }))
    # eight noise samples decide no agreement gate: this test is about the source comparison, not the verdict
    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", target, "--runner", "local", "--out", str(tmp_path / "out"),
                                      "--accept-undecided"])
    results = json.loads((tmp_path / "out" / "cnn" / target / "results.json").read_text())
    return result, {v["name"]: v for v in results["variants"]}


@pytest.mark.parametrize("target", ["openvino", "x86-tflite"])
def test_every_variant_is_compared_with_the_source(tmp_path, target):
    result, variants = _run(tmp_path, target)
    assert result.exit_code == 0, result.output
    fp32 = variants["fp32"]["validation"]
    assert fp32["source"]["cosine"] > 0.9999 and fp32["source"]["top1_agreement"] == 1.0
    gate = next(g for g in fp32["gates"] if g["gate"] == "min_source_cosine")
    assert gate["passed"] and gate["threshold"] == 0.999
    int8 = variants["int8"]["validation"]
    assert 0.9 < int8["source"]["cosine"] < 1.0 and "min_source_cosine" not in {g["gate"] for g in int8["gates"]}
    workdir = tmp_path / "out" / "cnn" / target
    assert "| source cosine | source top-1 |" in (workdir / "report.md").read_text()
    assert "source_cosine" in (workdir / "results.csv").read_text().splitlines()[0]


_SWAP_HW = """
import onnx
from builder.stage.convert import onnx as onnx_convert

simplify = onnx_convert.simplify_onnx


def swapped_hw(src, out, **kwargs):
    report = simplify(src, out, **kwargs)
    model = onnx.load(str(out))
    name = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = ["swapped" if i == name else i for i in node.input]
    model.graph.node.insert(0, onnx.helper.make_node("Transpose", [name], ["swapped"], perm=[0, 1, 3, 2]))
    onnx.save(model, str(out))
    return report


onnx_convert.simplify_onnx = swapped_hw
"""


def test_a_broken_conversion_fails_the_fp32_fidelity_gate(tmp_path, monkeypatch):
    """Fault injection into the stage process: the simplified ONNX reads its input with H and W swapped,
    as a wrong layout would. The fp32 artifact still agrees with itself; only the source sees it."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_SWAP_HW)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(inject), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result, variants = _run(tmp_path, "openvino")
    assert result.exit_code == 1
    fp32 = variants["fp32"]
    assert fp32["status"] == "gate-failed"
    assert fp32["validation"]["cosine"] == 1.0  # against itself: nothing to see
    gate = next(g for g in fp32["validation"]["gates"] if g["gate"] == "min_source_cosine")
    assert not gate["passed"] and gate["value"] < 0.999


def test_outputs_are_matched_by_shape_and_layout():
    rng = np.random.default_rng(0)
    boxes, scores, mask = rng.random((1, 10, 4)), rng.random((1, 10)), rng.random((1, 2, 8, 8))
    candidate = [scores, mask.transpose(0, 2, 3, 1), boxes]  # reordered, the mask made NHWC
    pairs = metrics.align_outputs([boxes, scores, mask], candidate)
    assert [j for j, _ in pairs] == [2, 0, 1]
    for ref, cand in zip([boxes, scores, mask], metrics.aligned(candidate, pairs)):
        np.testing.assert_array_equal(ref, cand)
    with pytest.raises(StepError, match="matches no artifact output"):
        metrics.align_outputs([boxes], [rng.random((1, 7))])
