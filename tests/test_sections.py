"""builder.config.sections: a backend's options in a recipe or target, registered by the backend, validated with
the file that holds them, documented by `builder schema`, resolved into its steps' params by the plan."""

from __future__ import annotations

import json

import pytest
from pydantic import Field, ValidationError
from test_config import GOOD, config_error, invoke, shipped_target, write

from builder.config import sections
from builder.config.common import Strict
from builder.config.recipe import Recipe
from builder.config.target import Target
from builder.host import catalog


def test_each_backend_registers_the_sections_users_write():
    owners = {owner: set(sections.of(owner)) for owner in ("source", "variant", "target")}
    assert owners == {"source": {"onnx2tf"}, "variant": {"nncf"}, "target": {"ort_quantization"}}
    assert {s.model.__module__ for owner in owners for s in sections.of(owner).values()} == {
        "builder.backends.litert.onnx2tf_options", "builder.backends.openvino.options",
        "builder.backends.onnxruntime.options"}


def test_a_bad_option_and_a_misspelt_section_name_file_field_and_line(tmp_path):
    recipe = GOOD.replace("variants: [fp32, int8]\n", "variants:\n  fp32: {}\n  int8:\n    nncf:\n"
                          "      preset: fast\n      subset_size: 0\n    nnfc: {}\n    per_channel: maybe\n")
    out = config_error(invoke("plan", str(write(tmp_path, "recipe.yaml", recipe)), "-t", "openvino"))
    assert "4 problems" in out
    assert "recipe.yaml:13: variants.int8.nncf.preset: Input should be 'performance' or 'mixed'" in out
    assert "recipe.yaml:14: variants.int8.nncf.subset_size: Input should be greater than or equal to 1" in out
    assert "recipe.yaml:15: variants.int8.nnfc: Extra inputs are not permitted (remove it or check its spelling)" in out
    assert "recipe.yaml:16: variants.int8.per_channel: Input should be a valid boolean" in out


def test_a_targets_section_is_checked_with_its_line(tmp_path):
    text = shipped_target() + "ort_quantization:\n  activation_type: int4\n"
    out = config_error(invoke("validate", str(write(tmp_path, "targets/x86-tflite.yaml", text))))
    line = text.count("\n")
    assert f"x86-tflite.yaml:{line}: ort_quantization.activation_type: Input should be 'int8' or 'uint8'" in out


def test_a_section_not_given_reads_as_its_defaults_and_is_shown_so():
    target = catalog.load_target("x86-tflite")
    assert "ort_quantization" not in target.model_extra  # the file does not name it
    assert target.ort_quantization == target.section("ort_quantization")
    assert target.section("ort_quantization").model_dump() == {"activation_type": "uint8", "reduce_range": True}
    assert Target.model_validate(target.model_dump(mode="json")) == target  # as a plan read back from JSON
    assert catalog.load_target("jetson").section("ort_quantization").activation_type == "int8"


def test_an_optional_section_not_given_is_none(tmp_path):
    recipe = catalog.load_recipe(write(tmp_path, "recipe.yaml", GOOD))
    assert recipe.source.section("onnx2tf") is None and recipe.model_dump()["source"]["onnx2tf"] is None
    assert recipe.variants["int8"].section("nncf").subset_size is None


def test_the_schema_documents_every_section(tmp_path):
    recipe = json.loads(invoke("schema", "recipe").output)["$defs"]
    assert recipe["Variant"]["properties"]["nncf"]["properties"]["overflow_fix"]["default"] == "enable"
    assert recipe["Variant"]["additionalProperties"] is False and "NNCF" in recipe["Variant"]["properties"]["nncf"]["description"]
    assert "replace_to_pseudo_operators" in json.dumps(recipe["Source"]["properties"]["onnx2tf"])
    target = json.loads(invoke("schema", "target").output)
    assert target["properties"]["ort_quantization"]["properties"]["activation_type"]["enum"] == ["int8", "uint8"]
    assert target["additionalProperties"] is False


def test_a_check_refuses_options_that_cannot_apply_to_their_owner(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"")
    recipe = GOOD.replace("  keras: {application: MobileNetV2, weights: none, alpha: 0.35}\n",
                          "  file: m.tflite\n  onnx2tf: {enable_rnn_unroll: true}\n")
    out = config_error(invoke("plan", str(write(tmp_path, "recipe.yaml", recipe)), "-t", "x86-tflite"))
    assert "recipe.yaml:4: source.onnx2tf: onnx2tf never converts a tflite source" in out


class _Tuning(Strict):
    level: int = Field(1, ge=0, le=3)


@pytest.fixture
def another_backends_section(monkeypatch):
    """A section as any plugin registers it, taken out of the registry again after the test."""
    monkeypatch.setitem(sections._REGISTRY, "variant", dict(sections._REGISTRY["variant"]))
    return sections.register(sections.Section("variant", "tuning", _Tuning, "a plugin's tuning"))


def test_a_plugin_adds_a_section_without_touching_the_core(another_backends_section):
    data = {"name": "m", "source": {"keras": {"application": "MobileNetV2"}}, "input": {"shape": [1, 8, 8, 3]},
            "variants": {"fp32": {}, "int8": {"tuning": {"level": 3}}}}
    recipe = Recipe.model_validate(data)
    assert recipe.variants["int8"].section("tuning") == _Tuning(level=3)
    assert recipe.variants["fp32"].tuning == _Tuning()
    data["variants"]["int8"]["tuning"]["level"] = 9
    with pytest.raises(ValidationError) as err:
        Recipe.model_validate(data)
    assert [e["loc"] for e in err.value.errors()] == [("variants", "int8", "tuning", "level")]
    with pytest.raises(RuntimeError, match="registered twice"):
        sections.register(sections.Section("variant", "tuning", Strict, "another"))
