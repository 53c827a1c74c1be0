"""The ONNX-hub recipes: every one plans on every target that reads ONNX; ONNX Runtime quantization and an
OpenVINO conversion failure, run for real on models shipped in PyPI packages."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import yaml
from click.testing import CliRunner

from builder.host.catalog import load_recipe, load_target, target_ids
from builder.host.cli import cli
from builder.host.planner import make_plan, reads

RECIPES = Path(__file__).parent.parent / "recipes"
ONNX_HUB_RECIPES = ["ppocr-cls", "face-detection", "selfie-segmentation", "centernet", "yolov4-tiny",
                    "deeplabv3-mnv2", "edsr", "ssd-mobilenet-v2", "ssd-mobilenet-v1-quant", "inception-v3",
                    "mobilenet-v1-quant"]


@pytest.mark.parametrize("name", ONNX_HUB_RECIPES)
def test_recipe_validates_and_plans_on_every_target_that_reads_it(name):
    planned = []
    for target_id in target_ids():
        recipe, target = load_recipe(RECIPES / f"{name}.yaml", target_id), load_target(target_id)
        if not reads(target, recipe.source.resolved_format):  # ExecuTorch: PyTorch sources only (test_catalog)
            continue
        plan = make_plan(recipe, target)
        assert set(plan.variants) | set(plan.skipped) == set(recipe.variants), target_id
        assert all(reason for reason in plan.skipped.values())
        assert set(plan.artifacts) == set(plan.variants)
        assert [s.kind for s in plan.steps].count("validate") == len(plan.variants)
        planned.append(target_id)
    assert set(planned) >= {"x86-tflite", "rpi", "jetson", "openvino", "arm-npu"}


def _run(*args: str):
    return CliRunner().invoke(cli, ["run", *args, "--runner", "local"])


def _variants(workdir: Path) -> dict[str, dict]:
    return {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}


def _ort_recipe(folder: Path, precision: str) -> Path:
    """ppocr-cls with explicit steps: simplify (the fp32 reference), then one ORT quantization."""
    data = yaml.safe_load((RECIPES / "ppocr-cls.yaml").read_text())
    data |= {
        "name": f"ppocr-cls-ort-{precision}",
        "task": "generic",  # 2 classes: agreement is checked below; the gate is on the outputs
        "variants": {"fp32": {}, precision: {}},
        "gates": {"min_cosine": 0.9},  # ORT dynamic quantization of convs is coarse: 0.95 here
        "steps": [{"kind": "onnx.simplify", "variant": "fp32"},
                  {"kind": "quantize.ort", "variant": precision, "params": {"precision": precision}}],
    }
    path = folder / f"ppocr-cls-ort-{precision}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ort_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort")
    recipes = [_ort_recipe(folder, p) for p in ("dynamic", "int8")]
    result = _run(*map(str, recipes), "-t", "x86-tflite", "--out", str(folder / "out"))
    assert result.exit_code == 0, result.output
    return {p: folder / "out" / f"ppocr-cls-ort-{p}" / "x86-tflite" for p in ("dynamic", "int8")}


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.slow
def test_ort_dynamic_quantization_through_explicit_steps(ort_runs):
    workdir = ort_runs["dynamic"]
    variants = _variants(workdir)
    dynamic = variants["dynamic"]
    assert dynamic["status"] == "ok" and dynamic["artifact"].endswith(".onnx")
    assert "DynamicQuantizeLinear" in _op_types(workdir / dynamic["artifact"])
    assert dynamic["benchmark"]["runtime"] == "onnxruntime" and dynamic["benchmark"]["p50_ms"] > 0
    assert dynamic["validation"]["cosine"] > 0.9


@pytest.mark.slow
def test_ort_static_qdq_int8_agrees_with_the_real_classifier(ort_runs):
    import numpy as np

    from builder.stage.runtimes import load

    workdir = ort_runs["int8"]
    variants = _variants(workdir)
    ops = _op_types(workdir / variants["int8"]["artifact"])
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    samples = np.load(workdir / "work" / "data" / "validation.npy")
    fp32, int8 = (load(workdir / variants[v]["artifact"]) for v in ("fp32", "int8"))
    ref = np.array([fp32.run([s])[0].argmax() for s in samples])
    got = np.array([int8.run([s])[0].argmax() for s in samples])
    # 16 crops, many near the 2-class boundary: agreement moves by 1/16 with the CPU's int8 kernels (0.875 on
    # AVX2 without VNNI), so cosine carries the check and agreement only has to be clear of chance
    assert np.mean(ref == got) >= 0.75
    assert np.mean(ref == 0) >= 0.6  # page.png crops are upright text: class "0"
    assert variants["int8"]["validation"]["cosine"] > 0.97


@pytest.fixture(scope="module")
def selfie_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("selfie")
    result = _run(str(RECIPES / "selfie-segmentation.yaml"), "-t", "openvino", "-t", "x86-tflite", "--out", str(out))
    return result, out / "selfie-segmentation"


@pytest.mark.slow
def test_an_op_openvino_cannot_convert_fails_classified_with_a_hint(selfie_run):
    result, out = selfie_run
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "unsupported-op" in result.output and "Convolution2DTransposeBias" in result.output
    failed = _variants(out / "openvino")["fp32"]
    assert failed["status"] == "failed"
    assert failed["failure"]["cause"] == "unsupported-op"
    assert "Convolution2DTransposeBias" in failed["failure"]["hint"]
    report = (out / "openvino" / "report.md").read_text()
    assert "`unsupported-op`" in report and "Convolution2DTransposeBias" in report


@pytest.mark.slow
def test_other_targets_are_unaffected_by_the_openvino_failure(selfie_run):
    _, out = selfie_run
    ok = _variants(out / "x86-tflite")["fp32"]
    assert ok["status"] == "ok" and ok["benchmark"]["runtime"] == "litert"
    assert ok["validation"]["cosine"] == pytest.approx(1.0)
