"""Recipe and target files with mistakes: exit 2, one readable message naming file, field, line and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from builder.config.recipe import TorchExport
from builder.host import catalog
from builder.host.cli import cli

GOOD = """\
name: tiny
source:
  keras: {application: MobileNetV2, weights: none, alpha: 0.35}
input:
  shape: [1, 96, 96, 3]
  mean: 127.5
  std: 127.5
calibration: {synthetic: 4}
variants: [fp32, int8]
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(result) -> str:
    """Assert the CLI rejected bad input the documented way; return everything it printed."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "error:" in result.output
    return result.output


def plan_error(tmp_path: Path, recipe_text: str, target: str = "x86-tflite") -> str:
    recipe = write(tmp_path, "recipe.yaml", recipe_text)
    return config_error(invoke("plan", str(recipe), "-t", target))


def test_good_recipe_plans(tmp_path):
    result = invoke("plan", str(write(tmp_path, "recipe.yaml", GOOD)), "-t", "x86-tflite")
    assert result.exit_code == 0, result.output
    assert "tiny_int8.tflite" in result.output


def test_bad_yaml_names_file_and_line(tmp_path):
    out = plan_error(tmp_path, GOOD.replace("input:\n", "input: [unclosed\n"))
    assert "recipe.yaml:" in out and "invalid YAML" in out
    assert any(f"recipe.yaml:{line}" in out for line in (4, 5)), out


def test_top_level_must_be_a_mapping(tmp_path):
    out = plan_error(tmp_path, "- just\n- a list\n")
    assert "expected a mapping at the top level, got a list" in out
    assert "got an empty file" in plan_error(tmp_path, "# nothing yet\n")


def test_unknown_key_names_path_line_and_fix(tmp_path):
    out = plan_error(tmp_path, GOOD.replace("  mean: 127.5", "  meen: 127.5"))
    assert "recipe.yaml:6: input.meen" in out
    assert "remove it or check its spelling" in out


def test_wrong_type(tmp_path):
    out = plan_error(tmp_path, GOOD + "benchmark: {runs: many}\n")
    assert "recipe.yaml:10: benchmark.runs" in out
    assert "integer" in out


def test_missing_required_field(tmp_path):
    text = GOOD.replace("input:\n  shape: [1, 96, 96, 3]\n  mean: 127.5\n  std: 127.5\n", "")
    out = plan_error(tmp_path, text)
    assert "input: Field required (add this field)" in out


def test_every_problem_of_one_file_is_listed(tmp_path):
    out = plan_error(tmp_path, GOOD.replace("  mean: 127.5", "  meen: 127.5") + "benchmark: {runs: many}\n")
    assert "2 problems" in out and "input.meen" in out and "benchmark.runs" in out


def test_missing_source_file_is_relative_to_the_recipe(tmp_path):
    text = GOOD.replace("  keras: {application: MobileNetV2, weights: none, alpha: 0.35}", "  file: models/m.onnx")
    out = plan_error(tmp_path, text)
    assert "source.file" in out and "file not found" in out
    assert str(tmp_path / "models" / "m.onnx") in out
    write(tmp_path, "models/m.onnx", "")
    assert invoke("plan", str(tmp_path / "recipe.yaml"), "-t", "x86-tflite").exit_code == 0


def test_missing_dataset_folder(tmp_path):
    out = plan_error(tmp_path, GOOD.replace("{synthetic: 4}", "{folder: photos}"))
    assert "calibration.folder" in out and str(tmp_path / "photos") in out


def test_missing_recipe_file(tmp_path):
    out = config_error(invoke("plan", str(tmp_path / "nope.yaml"), "-t", "x86-tflite"))
    assert "recipe not found" in out


def test_unknown_target_option(tmp_path):
    out = config_error(invoke("plan", str(write(tmp_path, "recipe.yaml", GOOD)), "-t", "nope"))
    assert "unknown target 'nope'" in out
    assert "x86-tflite" in out  # the hint lists the known ones


def test_unknown_target_in_overrides(tmp_path):
    out = plan_error(tmp_path, GOOD + "targets:\n  nope: {benchmark: {runs: 3}}\n")
    assert "targets.nope: unknown target" in out and "rpi" in out


def test_unknown_precision(tmp_path):
    out = plan_error(tmp_path, GOOD.replace("variants: [fp32, int8]", "variants: {fp32: {}, fast: {}}"))
    assert "variant 'fast': set `precision`" in out
    out = plan_error(tmp_path, GOOD.replace("variants: [fp32, int8]", "variants: {fp32: {}, q: {precision: int4}}"))
    assert "variants.q.precision" in out and "use one of the allowed values" in out


def test_fp32_reference_is_required(tmp_path):
    out = plan_error(tmp_path, GOOD.replace("variants: [fp32, int8]", "variants: [int8]"))
    assert "recipe.yaml:9: variants: no fp32 variant" in out


def test_unknown_step_kind_in_recipe_steps(tmp_path):
    out = plan_error(tmp_path, GOOD + "steps:\n  - {kind: convert.magic, variant: fp32}\n")
    assert "recipe.yaml:10: steps[0]: unknown step kind 'convert.magic'" in out


def test_bad_step_params_in_recipe_steps(tmp_path):
    out = plan_error(tmp_path, GOOD + "steps:\n  - {kind: convert.openvino, params: {fp16: true}}\n")
    assert "recipe.yaml:10: steps[0]: params: bad params for step 'convert.openvino': fp16: Extra inputs" in out


def test_every_bad_step_of_a_recipe_is_listed(tmp_path):
    out = plan_error(tmp_path, GOOD + "steps:\n  - {kind: convert.magic, variant: fp32}\n"
                     "  - {kind: convert.openvino, params: {fp16: true}}\n")
    assert "2 problems" in out
    assert "steps[0]: unknown step kind 'convert.magic'" in out and "steps[1]: params: bad params" in out


def test_bad_step_in_overrides_names_the_target(tmp_path):
    recipe = write(tmp_path, "recipe.yaml", GOOD + "targets:\n  rpi: {steps: [{kind: convert.magic}]}\n")
    out = config_error(invoke("plan", str(recipe), "-t", "rpi"))
    assert "with targets.rpi overrides" in out and "steps[0]: unknown step kind 'convert.magic'" in out
    assert invoke("plan", str(recipe), "-t", "x86-tflite").exit_code == 0


def test_source_with_two_kinds(tmp_path):
    write(tmp_path, "m.onnx", "")
    out = plan_error(tmp_path, GOOD.replace("alpha: 0.35}", "alpha: 0.35}\n  file: m.onnx"))
    assert "give exactly one of download, pip, file, keras (got file, keras)" in out


def test_frozen_graph_needs_arrays(tmp_path):
    write(tmp_path, "graph.pb", "")
    out = plan_error(tmp_path, GOOD.replace("keras: {application: MobileNetV2, weights: none, alpha: 0.35}", "file: graph.pb"))
    assert "source.frozen_graph with input_arrays and output_arrays" in out


def test_state_dict_needs_factory(tmp_path):
    write(tmp_path, "weights.pth", "")
    out = plan_error(tmp_path, GOOD.replace("keras: {application: MobileNetV2, weights: none, alpha: 0.35}", "file: weights.pth"))
    assert "source.torch.factory" in out


def test_unknown_variant_option(tmp_path):
    recipe = write(tmp_path, "recipe.yaml", GOOD)
    out = config_error(invoke("plan", str(recipe), "-t", "x86-tflite", "--variant", "int4"))
    assert "no variant 'int4'" in out and "fp32, int8" in out


# --- per-target overrides ------------------------------------------------------------

def test_override_applies_to_its_target_only(tmp_path):
    recipe = write(tmp_path, "recipe.yaml", GOOD + "targets:\n  rpi: {benchmark: {runs: 3}}\n")
    assert catalog.load_recipe(recipe, "rpi").benchmark.runs == 3
    assert catalog.load_recipe(recipe, "rpi").benchmark.warmup == 5  # merged, not replaced
    assert catalog.load_recipe(recipe, "x86-tflite").benchmark.runs == 50
    assert catalog.load_recipe(recipe).benchmark.runs == 50


def test_bad_override_names_the_target(tmp_path):
    recipe = write(tmp_path, "recipe.yaml", GOOD + "targets:\n  rpi: {benchmark: {runz: 3}}\n")
    out = config_error(invoke("plan", str(recipe), "-t", "rpi"))
    assert "targets.rpi" in out and "benchmark.runz" in out
    assert invoke("plan", str(recipe), "-t", "x86-tflite").exit_code == 0
    assert "targets.rpi" in config_error(invoke("validate", str(recipe)))


# --- target files --------------------------------------------------------------------

def shipped_target(**changes) -> str:
    data = yaml.safe_load((catalog.targets_dir() / "x86-tflite.yaml").read_text())
    data.update(changes)
    return yaml.safe_dump(data, sort_keys=False)


def validate_target(tmp_path: Path, name: str, text: str) -> str:
    path = write(tmp_path, f"targets/{name}.yaml", text)
    return config_error(invoke("validate", str(path)))


def test_unknown_step_kind_in_target(tmp_path):
    out = validate_target(tmp_path, "x86-tflite", shipped_target(variants={"fp32": {"step": "convert.magic"}}))
    assert "x86-tflite.yaml" in out and "unknown step kind 'convert.magic'" in out
    assert "variants.fp32" in out


def test_bad_step_params_in_target(tmp_path):
    out = validate_target(tmp_path, "x86-tflite",
                          shipped_target(variants={"fp32": {"step": "convert.tflite", "params": {"precision": "fp64"}}}))
    assert "variants.fp32" in out and "bad params for step 'convert.tflite'" in out and "precision" in out


def line_of_key(text: str, key: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(f"{key}:"))


@pytest.mark.parametrize(("field", "known"), [("format", "tflite"), ("runtime", "litert")])
def test_unknown_format_or_runtime_in_target(tmp_path, field, known):
    text = shipped_target(**{field: "nope"})
    out = validate_target(tmp_path, "x86-tflite", text)
    assert f"x86-tflite.yaml:{line_of_key(text, field)}: {field}: unknown {field} 'nope'; known: " in out
    assert known in out


def test_unknown_device_only_step_in_target(tmp_path):
    out = validate_target(tmp_path, "x86-tflite", shipped_target(device_only=["benchmark", "nope.x"]))
    assert "device_only[1]: unknown step kind 'nope.x'" in out


def test_every_unknown_name_of_a_target_is_listed(tmp_path):
    out = validate_target(tmp_path, "x86-tflite", shipped_target(
        format="nope", runtime="nope", variants={"fp32": {"step": "convert.magic"}}))
    assert "3 problems" in out
    assert "format: unknown format" in out and "runtime: unknown runtime" in out and "variants.fp32[0]" in out


def test_target_id_must_match_file_name(tmp_path):
    out = validate_target(tmp_path, "x86", shipped_target())
    assert "id 'x86-tflite' must match the file name 'x86'" in out


def test_target_needs_fp32(tmp_path):
    out = validate_target(tmp_path, "x86-tflite", shipped_target(variants={"int8": {"step": "convert.tflite"}}))
    assert "fp32 rule" in out


def test_config_models_validate_without_the_registries(tmp_path):
    """config/ is data validation: the step and runtime registries import it, never the other way (issue 8)."""
    target = write(tmp_path, "x86-tflite.yaml", shipped_target())
    recipe = write(tmp_path, "recipe.yaml", GOOD + "steps:\n  - {kind: convert.magic, variant: fp32}\n")
    code = ("import sys, yaml; from pathlib import Path\n"
            "from builder.config.recipe import Recipe\nfrom builder.config.target import Target\n"
            f"Target.model_validate(yaml.safe_load(Path({str(target)!r}).read_text()))\n"
            f"Recipe.model_validate(yaml.safe_load(Path({str(recipe)!r}).read_text()))\n"
            "print(sorted(m for m in sys.modules if m.startswith(('builder.stage.steps', 'builder.stage.runtimes'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- builder validate ----------------------------------------------------------------

def test_validate_reports_every_bad_file(tmp_path):
    write(tmp_path, "a.yaml", GOOD.replace("  mean: 127.5", "  meen: 127.5"))
    write(tmp_path, "b.yaml", "name: [\n")
    write(tmp_path, "c.yaml", GOOD)
    write(tmp_path, "d.yaml", GOOD + "targets: {nope: {}}\n")
    result = invoke("validate", str(tmp_path))
    out = config_error(result)
    assert "a.yaml:6: input.meen" in out
    assert "b.yaml:" in out and "invalid YAML" in out
    assert "d.yaml: targets.nope" in out
    assert "c.yaml" not in out
    assert "3 problem(s) found" in out


def test_validate_shipped_catalog():
    result = invoke("validate")
    assert result.exit_code == 0, result.output
    assert "all valid" in result.output


@pytest.mark.parametrize("path", sorted((Path(__file__).parent / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_test_recipes_validate(path):
    assert invoke("validate", str(path)).exit_code == 0


def test_a_recipe_naming_the_models_old_package_still_loads():
    """The project's own model factories moved to builder.stage.models (issue 18); older recipes keep loading."""
    old = TorchExport(factory="builder.models.efficientnet_lite:efficientnet_lite0")
    assert old.factory == "builder.stage.models.efficientnet_lite:efficientnet_lite0"
    assert TorchExport(factory="mypkg.models:net").factory == "mypkg.models:net"
