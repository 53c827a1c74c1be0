"""Every shipped target and recipe loads, and every recipe plans on every target."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from builder.host import catalog
from builder.host.cli import cli
from builder.host.planner import reads

TARGETS = catalog.target_ids()
RECIPES = catalog.recipe_paths()


def test_the_five_targets_ship():
    assert set(TARGETS) >= {"x86-tflite", "rpi", "jetson", "openvino", "arm-npu"}


@pytest.mark.parametrize("target_id", TARGETS)
def test_target_loads_and_its_id_is_its_file_name(target_id):
    target = catalog.load_target(target_id)
    assert target.id == target_id == (catalog.targets_dir() / f"{target_id}.yaml").stem
    assert "fp32" in target.precisions
    assert target.images.device.platform in (None, target.platform)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_with_every_override(path):
    recipe = catalog.load_recipe(path)
    for target_id in recipe.targets:
        assert target_id in TARGETS
        catalog.load_recipe(path, target_id)


@pytest.mark.parametrize("target_id", TARGETS)
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_plans_on_every_target(path, target_id):
    """...that can read its source: x86-executorch exports PyTorch sources only, and says so for the others."""
    runner = CliRunner()
    result = runner.invoke(cli, ["plan", str(path), "-t", target_id])
    source = catalog.load_recipe(path).source.resolved_format
    if not reads(catalog.load_target(target_id), source):  # e.g. ExecuTorch exports PyTorch sources only
        assert result.exit_code == 2 and f"no conversion path from {source} to" in result.output
        return
    assert result.exit_code == 0, result.output
    assert f"on {target_id}" in result.output and "artifacts:" in result.output

    result = runner.invoke(cli, ["plan", str(path), "-t", target_id, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    kinds = [step["kind"] for step in plan["steps"]]
    assert plan["target"]["id"] == target_id and "fp32" in plan["variants"]
    assert kinds.count("benchmark") == kinds.count("validate") == len(plan["variants"])
    assert set(plan["artifacts"]) == set(plan["variants"])
