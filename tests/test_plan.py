"""builder.plan: conversion paths come from the registered steps; nothing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder import catalog
from builder.config.recipe import Recipe
from builder.errors import ConfigError
from builder.plan import Plan, find_path, make_plan, source_path

SOURCES = {
    "pytorch": {"file": "weights.pth", "torch": {"factory": "builder.models.efficientnet_lite:efficientnet_lite0"}},
    "onnx": {"file": "model.onnx"},
    "tflite": {"file": "model.tflite"},
    "openvino": {"file": "model.xml"},
    "keras": {"keras": {"application": "MobileNetV2"}},
}


def recipe(tmp_path: Path, source: str = "onnx", **fields) -> Recipe:
    for name in ("weights.pth", "model.onnx", "model.tflite", "model.xml", "model.bin"):
        (tmp_path / name).touch()
    data = {"name": "m", "source": SOURCES[source], "input": {"shape": [1, 3, 32, 32], "layout": "NCHW"},
            "calibration": {"synthetic": 4}, "variants": ["fp32", "int8"], **fields}
    return Recipe.model_validate(data, context={"path": tmp_path / "recipe.yaml"})


def plan_for(tmp_path: Path, target: str, source: str = "onnx", only: list[str] | None = None, **fields) -> Plan:
    return make_plan(recipe(tmp_path, source, **fields), catalog.load_target(target), variants=only)


def chain_to(plan: Plan, artifact: str) -> list[str]:
    """The step kinds that make `artifact`, from the source on, following each step's model input."""
    makers = {s.outputs["model"]: s for s in plan.steps if "model" in s.outputs}
    kinds, path = [], artifact
    while path in makers:
        step = makers[path]
        kinds.insert(0, step.kind)
        path = step.inputs["model"]
    assert path == source_path(plan.source), path
    return kinds


def test_pytorch_to_tflite_goes_through_onnx2tf(tmp_path):
    plan = plan_for(tmp_path, "x86-tflite", "pytorch")
    assert chain_to(plan, plan.artifacts["fp32"]) == ["convert.torch_onnx", "convert.onnx2tf", "convert.tflite"]
    assert chain_to(plan, plan.artifacts["int8"]) == ["convert.torch_onnx", "convert.onnx2tf", "convert.tflite"]
    assert plan.artifacts == {"fp32": "m_fp32.tflite", "int8": "m_int8.tflite"}


def test_onnx_source_is_simplified_first_and_never_quantized_as_hygiene(tmp_path):
    plan = plan_for(tmp_path, "openvino", "onnx")
    assert chain_to(plan, plan.artifacts["fp32"]) == ["onnx.simplify", "convert.openvino"]
    assert [s.kind for s in plan.steps].count("onnx.simplify") == 1
    assert "quantize.ort" not in [s.kind for s in plan.steps]  # a quantizer is not hygiene


def test_keras_to_openvino(tmp_path):
    plan = plan_for(tmp_path, "openvino", "keras")
    assert chain_to(plan, plan.artifacts["fp32"]) == ["convert.keras", "convert.openvino"]


def test_openvino_int8_quantizes_an_fp32_ir(tmp_path):
    plan = plan_for(tmp_path, "openvino", "onnx")
    assert chain_to(plan, plan.artifacts["int8"]) == ["onnx.simplify", "convert.openvino", "quantize.nncf"]
    nncf = next(s for s in plan.steps if s.kind == "quantize.nncf")
    assert nncf.inputs["model"].startswith("work/") and nncf.inputs["model"].endswith(".xml")
    assert nncf.inputs["calibration"] == "work/data/calibration.npy"
    maker = next(s for s in plan.steps if s.outputs.get("model") == nncf.inputs["model"])
    assert maker.kind == "convert.openvino" and maker.params.get("compress_fp16", False) is False


def test_a_source_in_the_targets_format_is_its_own_fp32(tmp_path):
    plan = plan_for(tmp_path, "openvino", "openvino")
    assert chain_to(plan, plan.artifacts["fp32"]) == ["artifact.copy"]


def test_tflite_source_fp32_goes_through_the_converter_that_reads_tflite(tmp_path):
    """convert.tflite reads .tflite: fp16-stored or sparse weights become dense fp32 there."""
    plan = plan_for(tmp_path, "x86-tflite", "tflite")
    assert chain_to(plan, plan.artifacts["fp32"]) == ["convert.tflite"]


def test_variants_a_target_cannot_make_are_skipped(tmp_path):
    plan = plan_for(tmp_path, "openvino", variants=["fp32", "dynamic", "int16x8"])
    assert plan.variants == ["fp32"]
    assert set(plan.skipped) == {"dynamic", "int16x8"}
    assert "does not produce int16x8" in plan.skipped["int16x8"] and "fp32, fp16, int8" in plan.skipped["int16x8"]


def test_fp32_reference_is_added(tmp_path):
    plan = plan_for(tmp_path, "x86-tflite", only=["int8"])
    assert plan.variants == ["fp32", "int8"]
    assert any("reference" in note for note in plan.notes)
    validate = next(s for s in plan.steps if s.kind == "validate" and s.variant == "int8")
    assert validate.inputs["reference"] == plan.artifacts["fp32"]


def test_nothing_to_build_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="nothing to build"):
        plan_for(tmp_path, "arm-npu", only=["fp16"], variants=["fp32", "fp16"])


def test_unknown_variant(tmp_path):
    with pytest.raises(ConfigError, match="no variant 'int4'"):
        plan_for(tmp_path, "x86-tflite", only=["int4"])


def test_jetson_builds_engines_on_the_device(tmp_path):
    plan = plan_for(tmp_path, "jetson", "pytorch")
    engines = [s for s in plan.steps if s.kind == "convert.tensorrt"]
    assert len(engines) == 2 and all(s.stage == "device" for s in engines)
    assert chain_to(plan, plan.artifacts["int8"]) == ["convert.torch_onnx", "quantize.ort", "convert.tensorrt"]
    assert all(s.stage == "toolchain" for s in plan.steps if s.kind in ("convert.torch_onnx", "quantize.ort"))


def test_shared_intermediates_are_planned_once(tmp_path):
    variants = {"fp32": {}, "fp16": {}, "int8": {}, "int8-uint8": {"precision": "int8", "io_dtype": "uint8"}}
    kinds = [s.kind for s in plan_for(tmp_path, "x86-tflite", variants=variants).steps]
    assert kinds.count("convert.onnx2tf") == 1 and kinds.count("convert.tflite") == 4
    kinds = [s.kind for s in plan_for(tmp_path, "openvino", variants=variants).steps]
    # fp32 and fp16 artifacts, plus one fp32 IR that both int8 variants quantize
    assert kinds.count("convert.openvino") == 3 and kinds.count("quantize.nncf") == 2


def test_calibration_required_by_int8(tmp_path):
    with pytest.raises(ConfigError, match="needs calibration data"):
        plan_for(tmp_path, "openvino", calibration=None)


def test_plan_round_trips_through_json(tmp_path):
    plan = plan_for(tmp_path, "openvino")
    (tmp_path / "model.onnx").unlink()  # as inside a container, where host paths do not exist
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again.steps == plan.steps and again.artifacts == plan.artifacts
    assert again.recipe == plan.recipe and again.source.file == tmp_path / "model.onnx"


def test_find_path_uses_registered_converters():
    assert find_path("tflite", ("tflite",)) == []
    assert [kind for kind, _ in find_path("keras", ("onnx",))] == ["convert.keras", "convert.tf_onnx"]
    assert find_path("tensorrt", ("onnx",)) is None


# --- explicit steps ----------------------------------------------------------------

STEPS = [
    {"kind": "convert.openvino", "variant": "fp32"},
    {"kind": "quantize.nncf", "variant": "int8"},
]


def test_explicit_steps(tmp_path):
    plan = plan_for(tmp_path, "openvino", steps=STEPS)
    assert plan.artifacts == {"fp32": "m_fp32.xml", "int8": "m_int8.xml"}
    assert chain_to(plan, "m_int8.xml") == ["onnx.simplify", "convert.openvino", "quantize.nncf"]
    assert [s.kind for s in plan.steps if s.stage == "device"] == ["benchmark"] * 2 + ["validate"] * 2


def test_explicit_steps_must_make_every_variant(tmp_path):
    with pytest.raises(ConfigError, match="no step makes variant 'int8'") as info:
        plan_for(tmp_path, "openvino", steps=STEPS[:1])
    assert "variant: <name>" in info.value.hint


def test_explicit_steps_must_fit_together(tmp_path):
    with pytest.raises(ConfigError, match=r"steps\[0\]: quantize.nncf reads openvino, but the model is onnx"):
        plan_for(tmp_path, "openvino", steps=list(reversed(STEPS)))


def test_explicit_steps_are_validated_at_load(tmp_path):
    with pytest.raises(ValueError, match="unknown step kind 'convert.magic'"):
        recipe(tmp_path, steps=[{"kind": "convert.magic", "variant": "fp32"}])
    with pytest.raises(ValueError, match="bad params for step 'convert.openvino'"):
        recipe(tmp_path, steps=[{"kind": "convert.openvino", "params": {"fp16": True}}])
    with pytest.raises(ValueError, match="no variant 'int4'"):
        recipe(tmp_path, steps=[{"kind": "convert.openvino", "variant": "int4"}])
