"""builder.host.planner: conversion paths come from the registered steps; nothing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.config.recipe import Recipe
from builder.errors import ConfigError
from builder.host import catalog
from builder.host.planner import find_path, make_plan, source_path
from builder.plan import Plan

SOURCES = {
    "pytorch": {"file": "weights.pth", "torch": {"factory": "builder.stage.models.efficientnet_lite:efficientnet_lite0"}},
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


def test_openvino_int8_quantizes_the_fp32_ir_converted_once(tmp_path):
    plan = plan_for(tmp_path, "openvino", "onnx", variants=["int8", "fp16", "fp32"])
    assert chain_to(plan, plan.artifacts["int8"]) == ["onnx.simplify", "convert.openvino", "quantize.nncf"]
    nncf = next(s for s in plan.steps if s.kind == "quantize.nncf")
    assert nncf.inputs["model"] == plan.artifacts["fp32"] == "m_fp32.xml"  # the fp32 artifact, not a second IR
    assert nncf.inputs["calibration"] == "work/data/calibration.npy"
    # an IR is its .xml and its .bin: both are declared, where it is made and wherever it is read
    assert nncf.inputs["model_weights"] == "m_fp32.bin" and nncf.outputs["model_weights"] == "m_int8.bin"
    validate = next(s for s in plan.steps if s.kind == "validate" and s.variant == "int8")
    assert (validate.inputs["model_weights"], validate.inputs["reference_weights"]) == ("m_int8.bin", "m_fp32.bin")
    converts = [s for s in plan.steps if s.kind == "convert.openvino"]
    assert [(s.id[3:], s.params) for s in converts] == [("convert.openvino-fp32", {"compress_fp16": False}),
                                                        ("convert.openvino-fp16", {"compress_fp16": True})]


def test_a_source_in_the_targets_format_is_its_own_fp32(tmp_path):
    plan = plan_for(tmp_path, "openvino", "openvino")
    assert chain_to(plan, plan.artifacts["fp32"]) == ["artifact.copy"]
    copy = next(s for s in plan.steps if s.kind == "artifact.copy")
    assert copy.inputs["model_weights"] == "work/source/model.bin" and copy.outputs["model_weights"] == "m_fp32.bin"


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
    plan = plan_for(tmp_path, "openvino", variants=variants)
    kinds = [s.kind for s in plan.steps]
    # the fp32 IR is the fp32 artifact and what int8 quantizes; NNCF keeps float I/O, so int8-uint8's
    # quantization is int8's, copied under its own name
    assert kinds.count("convert.openvino") == 2 and kinds.count("quantize.nncf") == 1
    copy = next(s for s in plan.steps if s.kind == "artifact.copy")
    assert (copy.variant, copy.inputs["model"], copy.outputs["model"]) == ("int8-uint8", "m_int8.xml", "m_int8-uint8.xml")
    assert set(plan.artifacts.values()) == {"m_fp32.xml", "m_fp16.xml", "m_int8.xml", "m_int8-uint8.xml"}


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


def test_explicit_steps_name_the_recipes_variants(tmp_path):
    # their kinds and params are checked by catalog.load_recipe (tests/test_config.py)
    with pytest.raises(ValueError, match="no variant 'int4'"):
        recipe(tmp_path, steps=[{"kind": "convert.openvino", "variant": "int4"}])


# --- the plan is the whole truth: a step reads its params and declared files, nothing else -------------


def _params_by_id(plan: Plan) -> dict[str, dict]:
    return {s.id: s.params for s in plan.steps}


def _changed(before: Plan, after: Plan) -> set[str]:
    assert [s.id for s in before.steps] == [s.id for s in after.steps]
    return {i for i, p in _params_by_id(after).items() if p != _params_by_id(before)[i]}


def test_changing_int8s_nncf_options_changes_only_int8s_calls(tmp_path):
    base = plan_for(tmp_path, "openvino")
    tuned = plan_for(tmp_path, "openvino", variants={"fp32": {}, "int8": {"nncf": {"subset_size": 64}}})
    assert {i[3:] for i in _changed(base, tuned)} == {"quantize.nncf-int8"}
    nncf = next(s for s in tuned.steps if s.kind == "quantize.nncf")
    assert nncf.params["nncf"]["subset_size"] == 64 and nncf.params["layout"] == "NCHW"


def test_changing_the_benchmark_settings_changes_only_the_benchmarks(tmp_path):
    base = plan_for(tmp_path, "x86-tflite")
    slower = plan_for(tmp_path, "x86-tflite", benchmark={"runs": 7, "emulated_runs": 2})
    assert {i.split("-", 1)[1] for i in _changed(base, slower)} == {"benchmark-fp32", "benchmark-int8"}
    bench = next(s for s in slower.steps if s.kind == "benchmark")
    assert (bench.params["runs"], bench.params["emulated_runs"]) == (7, 2)
    samples = plan_for(tmp_path, "x86-tflite", benchmark={"emulated_validation_samples": 3})
    assert {i.split("-", 1)[1] for i in _changed(base, samples)} == {"validate-fp32", "validate-int8"}


def test_variant_and_target_options_are_in_the_calls_params(tmp_path):
    variants = {"fp32": {}, "int8": {"io_dtype": "uint8", "require_full_int8": False}}
    tflite = next(s for s in plan_for(tmp_path, "x86-tflite", variants=variants).steps
                  if s.kind == "convert.tflite" and s.variant == "int8")
    # onnx2tf makes the NCHW ONNX model NHWC: the calibration samples are transposed for it
    assert {k: tflite.params[k] for k in ("io_dtype", "require_full_int8", "layout", "data_layout")} == \
        {"io_dtype": "uint8", "require_full_int8": False, "layout": "NHWC", "data_layout": "NCHW"}
    ort = next(s for s in plan_for(tmp_path, "jetson", variants={"fp32": {}, "int8": {"per_channel": False}}).steps
               if s.kind == "quantize.ort")
    assert ort.params["per_channel"] is False
    assert ort.params["ort_quantization"] == catalog.load_target("jetson").ort_quantization.model_dump()
    validate = next(s for s in plan_for(tmp_path, "openvino", task="classification").steps if s.kind == "validate")
    assert validate.params["task"] == "classification" and validate.inputs["labels"] == "work/data/validation_labels.json"


def test_keeping_nchw_in_onnx2tf_keeps_the_samples_as_they_are(tmp_path):
    SOURCES["onnx-nchw"] = SOURCES["onnx"] | {"onnx2tf": {"keep_ncw_or_nchw_or_ncdhw_input_names": ["x"]}}
    plan = plan_for(tmp_path, "x86-tflite", "onnx-nchw", input={"shape": [1, 3, 32, 32], "layout": "NCHW", "name": "x"})
    onnx2tf = next(s for s in plan.steps if s.kind == "convert.onnx2tf")
    int8 = next(s for s in plan.steps if s.kind == "convert.tflite" and s.variant == "int8")
    assert onnx2tf.params["output_layout"] == "NCHW" and int8.params["layout"] == "NCHW"


def test_source_settings_are_in_the_calls_params(tmp_path):
    plan = plan_for(tmp_path, "x86-tflite", "pytorch")
    export = next(s for s in plan.steps if s.kind == "convert.torch_onnx")
    assert export.params["format"] == "pytorch_state_dict" and export.params["input_shape"] == [1, 3, 32, 32]
    assert export.params["torch"]["factory"] == SOURCES["pytorch"]["torch"]["factory"]
    reference = next(s for s in plan.steps if s.kind == "reference.source")
    assert reference.params["factory"] == SOURCES["pytorch"]["torch"]["factory"]
    data = next(s for s in plan.steps if s.kind == "data.prepare" and s.params["dataset"] == "validation")
    assert data.params["samples_from"] == "calibration" and data.params["data"]["synthetic"] == 4
    assert "files" not in data.inputs  # synthetic samples read no fetched files


def test_vela_writes_its_estimate_as_a_declared_output_that_the_measurements_read(tmp_path):
    plan = plan_for(tmp_path, "arm-npu", "tflite", input={"shape": [1, 32, 32, 3]})
    vela = next(s for s in plan.steps if s.kind == "compile.vela")
    assert vela.outputs == {"model": "m_int8_vela.tflite", "estimate": "work/vela/m_int8_vela.estimate.json"}
    for kind in ("benchmark", "validate"):
        call = next(s for s in plan.steps if s.kind == kind and s.variant == "int8")
        assert call.inputs["estimate"] == vela.outputs["estimate"]
        assert call.inputs["compiled_from"] == vela.inputs["model"]


def test_identical_variants_share_their_steps_and_keep_their_artifacts(tmp_path):
    variants = {"fp32": {}, "int8": {}, "int8-b": {"precision": "int8", "gates": {"min_cosine": 0.5}}}
    plan = plan_for(tmp_path, "x86-tflite", variants=variants)
    assert [s.kind for s in plan.steps].count("convert.tflite") == 2
    copy = next(s for s in plan.steps if s.kind == "artifact.copy")
    assert (copy.id[3:], copy.inputs["model"], copy.outputs["model"]) == ("artifact.copy-int8-b", "m_int8.tflite",
                                                                          "m_int8-b.tflite")
    assert plan.artifacts["int8-b"] == "m_int8-b.tflite"


def test_step_context_has_no_recipe_target_or_variant():
    import dataclasses

    from builder.stage.steps.base import StepContext

    assert {f.name for f in dataclasses.fields(StepContext)} == {"workdir", "call", "log", "placement"}
    assert not hasattr(StepContext, "variant")


def test_plan_json_lists_the_resolved_params(tmp_path):
    from click.testing import CliRunner

    from builder.host.cli import cli

    result = CliRunner().invoke(cli, ["plan", str(catalog.recipes_dir() / "efficientnet-lite0.yaml"), "-t", "openvino",
                                      "--json"])
    assert result.exit_code == 0, result.output
    steps = {s["id"][3:]: s for s in json.loads(result.output)["steps"]}
    assert steps["quantize.nncf-int8"]["params"]["nncf"]["overflow_fix"] == "enable"
    assert steps["benchmark-int8"]["params"]["emulated_runs"] == 5
    assert steps["validate-int8"]["params"]["task"] == "classification"
    assert [k for k in steps if k.startswith("convert.openvino")] == ["convert.openvino-fp32", "convert.openvino-fp16"]


def test_an_ir_copied_as_an_artifact_keeps_its_weights(tmp_path):
    import logging

    from builder.stage.steps.artifact import CopyArtifact
    from builder.stage.steps.base import StepContext, StepParams

    plan = plan_for(tmp_path, "openvino", "openvino")
    copy = next(s for s in plan.steps if s.kind == "artifact.copy")
    workdir = tmp_path / "run"
    for name, content in (("model", b"<net/>"), ("model_weights", b"\0weights")):
        (workdir / copy.inputs[name]).parent.mkdir(parents=True, exist_ok=True)
        (workdir / copy.inputs[name]).write_bytes(content)
    CopyArtifact().run(StepContext(workdir=workdir, call=copy, log=logging.getLogger("test")), StepParams())
    assert (workdir / "m_fp32.bin").read_bytes() == b"\0weights" and (workdir / "m_fp32.xml").read_bytes() == b"<net/>"


@pytest.mark.parametrize("data, model, shape", [("NCHW", "NHWC", (2, 5, 7, 3)), ("NHWC", "NCHW", (2, 7, 3, 5)),
                                                ("NCHW", "NCHW", (2, 3, 5, 7)), ("other", "NHWC", (2, 3, 5, 7))])
def test_samples_reach_a_model_in_its_own_layout(tmp_path, data, model, shape):
    import numpy as np

    from builder.stage.steps.layout import LayoutParams, samples_for

    np.save(tmp_path / "s.npy", np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7))
    assert samples_for(tmp_path / "s.npy", LayoutParams(layout=model, data_layout=data)).shape == shape


def test_a_tflite_source_quantized_by_onnx_runtime_gets_nchw_samples(tmp_path):
    plan = plan_for(tmp_path, "jetson", "tflite", input={"shape": [1, 32, 32, 3]})
    ort = next(s for s in plan.steps if s.kind == "quantize.ort")
    assert (ort.params["data_layout"], ort.params["layout"]) == ("NHWC", "NCHW")  # tf2onnx made it NCHW
