"""Accuracy-aware variants (precision: auto): the quickstart's real EfficientNet-Lite0, searched for real
on x86-tflite, openvino and (its toolchain stage) jetson by the local runner."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from builder.host import catalog
from builder.host.cli import cli
from builder.host.planner import make_plan
from builder.records import load_results

QUICKSTART = Path(__file__).parent.parent / "recipes" / "efficientnet-lite0.yaml"


def _recipe(tmp_path: Path) -> Path:
    """The quickstart with two searched variants: one whose gate full int8 meets, one no int8 candidate can meet
    (a top-1 agreement of 0.999 on 50 samples is never decided), bounded to four candidates and two float layers."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data["calibration"].pop("augment")  # its 130 photos once, not 4 crops and flips of each: the ladder is tested here
    data["gates"] = {"min_cosine": 0.9}
    data["variants"] = {"fp32": {}, "auto": {},
                        "auto-strict": {"precision": "auto", "gates": {"min_top1_agreement": 0.999},
                                        "search": {"max_candidates": 4, "max_float_layers": 2}}}
    data.pop("targets", None)
    path = tmp_path / "efficientnet-lite0.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_plan_shows_every_param_a_search_reads(tmp_path):
    recipe = catalog.load_recipe(_recipe(tmp_path))
    for target, kind, runtime in (("x86-tflite", "search.tflite", "litert"), ("openvino", "search.nncf", "openvino"),
                                  ("jetson", "search.ort", "onnxruntime")):
        plan = make_plan(recipe, catalog.load_target(target))
        strict = next(s for s in plan.steps if s.variant == "auto-strict" and s.kind == kind)
        assert strict.params["gates"] == {"min_cosine": 0.9, "min_top1_agreement": 0.999}
        assert (strict.params["max_candidates"], strict.params["max_minutes"], strict.params["max_float_layers"]) == (4, 20, 2)
        assert (strict.params["runtime"], strict.params["threads"], strict.params["task"]) == (runtime, 2, "classification")
        assert {"calibration", "validation"} <= set(strict.inputs)
    jetson = make_plan(recipe, catalog.load_target("jetson"))
    ort = next(s for s in jetson.steps if s.variant == "auto" and s.kind == "search.ort")
    assert ort.stage == "toolchain" and ort.params["fallbacks"] == [] and ort.params["symmetric_activations"] is True
    assert (ort.params["calibration_method"], ort.params["ort_quantization"]["activation_type"]) == ("minmax", "int8")
    assert [s.kind for s in jetson.steps if s.variant == "auto"][:2] == ["search.ort", "convert.tensorrt"]
    rpi = make_plan(recipe, catalog.load_target("rpi"))
    assert "does not produce auto" in rpi.skipped["auto"]


def _run(tmp_path: Path, target: str, *variants: str):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(_recipe(tmp_path)), "-t", target, "--runner", "local",
                                      "--out", str(out), *(f"--variant={v}" for v in variants)])
    workdir = out / "efficientnet-lite0" / target
    assert (workdir / "results.json").exists(), result.output
    return {v.name: v for v in load_results(workdir / "results.json").variants}, workdir


def _check_candidates(variant, names: list[str]) -> None:
    search = variant.search
    assert [c.name for c in search.candidates] == names, search
    for c in search.candidates:
        assert c.status == "ok" and c.p50_ms > 0 and c.size_bytes > 0 and c.agreement.top1_agreement is not None, c
    assert search.chosen in names and search.why


@pytest.mark.slow
def test_x86_tflite_search_stops_at_int8_or_walks_the_debuggers_ladder_then_the_fallbacks(tmp_path):
    variants, workdir = _run(tmp_path, "x86-tflite")
    easy = variants["auto"]
    _check_candidates(easy, ["int8"])
    assert easy.search.chosen == "int8" and easy.status == "ok" and easy.benchmark.p50_ms > 0
    assert (workdir / easy.artifact).stat().st_size == easy.search.candidates[0].size_bytes

    strict = variants["auto-strict"]  # 2 of 4 candidates for the ladder, 2 kept for the fallbacks
    _check_candidates(strict, ["int8", "int8-float1", "int16x8", "fp16"])
    assert not any(c.passed for c in strict.search.candidates)
    assert "max_candidates 4 ended the int8 ladder after 2 candidates" in strict.search.why
    assert strict.status in ("gate-failed", "gate-undecided")  # the closest candidate, failed by its validation
    worst = strict.layer_errors.layers
    assert strict.layer_errors.metric == "rmse/scale" and len(worst) > 20
    assert [x.value for x in worst] == sorted((x.value for x in worst), reverse=True)
    output_layer = strict.search.candidates[1].kept_float
    assert len(output_layer) == 1 and output_layer[0] in {x.name for x in worst}
    chosen = next(c for c in strict.search.candidates if c.name == strict.search.chosen)
    assert (workdir / strict.artifact).stat().st_size == chosen.size_bytes
    report = (workdir / "report.md").read_text()
    assert "## How `auto-strict` was chosen" in report
    assert all(re.search(rf"\| (\*\*)?{name}(\*\*)? \| ok \|", report) for name in ("int8", "int8-float1", "fp16"))
    assert not list(workdir.glob(".search-*"))  # candidates are built in a temporary folder


@pytest.mark.slow
def test_openvino_search_tries_nncf_int8_then_its_accuracy_control_then_fp16(tmp_path):
    variants, workdir = _run(tmp_path, "openvino")
    easy = variants["auto"]
    _check_candidates(easy, ["int8"])
    assert easy.search.chosen == "int8" and easy.status == "ok"
    assert (workdir / easy.artifact).with_suffix(".bin").exists()

    strict = variants["auto-strict"]
    _check_candidates(strict, ["int8", "int8-bias-corrected", "int8-accuracy-control", "fp16"])
    controlled = strict.search.candidates[2]
    assert 0 < len(controlled.kept_float) <= 2 and "(max drop 0.001, at most 2 layers in float)" in controlled.description
    assert controlled.agreement.top1_agreement >= strict.search.candidates[0].agreement.top1_agreement


@pytest.mark.slow
def test_jetson_search_tries_each_calibration_then_the_noisiest_nodes_in_float_judged_by_onnx_runtime(tmp_path):
    """The toolchain stage searches for real; the engine itself needs the Jetson (device-needed here)."""
    variants, workdir = _run(tmp_path, "jetson", "auto-strict")
    strict = variants["auto-strict"]  # no fallbacks on jetson: all four candidates are int8
    _check_candidates(strict, ["int8", "int8-entropy", "int8-percentile", "int8-float1"])
    assert strict.search.candidates[3].kept_float == ["/_fc/Gemm"]  # the classifier's output layer
    assert "minmax calibration" in strict.search.candidates[0].description
    worst = strict.layer_errors.layers
    assert strict.layer_errors.metric == "noise/signal dB" and len(worst) > 20
    assert [x.value for x in worst] == sorted((x.value for x in worst), reverse=True)
    assert all(-60 < x.value < 0 for x in worst[:10])  # int8 rounding noise: tens of dB below the signal
    assert strict.status == "skipped" and strict.failure.cause == "device-needed"
    assert not list((workdir / "work").rglob(".search-*"))
