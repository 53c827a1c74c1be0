"""builder.code_trust: a recipe runs none of its author's code unless the user says --trust-remote-code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.code_trust import import_factory
from builder.errors import ConfigError
from builder.host.cli import cli

EVIL = """\
import pathlib
pathlib.Path({marker!r}).write_text("the recipe's code ran")
import torch
def build():
    return torch.nn.Conv2d(3, 4, 3)
"""

RECIPE = """\
name: evil
source:
{source}
input: {{shape: [1, 3, 16, 16], layout: NCHW}}
calibration: {{synthetic: 2}}
validation: {{synthetic: 2}}
variants: [fp32]
benchmark: {{warmup: 1, runs: 1}}
"""


def builder(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """The real `builder`, started in `folder` as a user who cloned a recipe repository would start it."""
    return subprocess.run([str(Path(sys.executable).parent / "builder"), *args], cwd=folder, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "300"})


@pytest.fixture
def cloned(tmp_path) -> Path:
    """A recipe folder as a stranger publishes it: the recipe, a state dict, and a factory module beside them."""
    import torch

    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(tmp_path / "PWNED")))
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), tmp_path / "weights.pth")
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(source='  file: weights.pth\n  torch: {factory: "evil:build"}'))
    return tmp_path


def test_a_factory_beside_the_recipe_is_refused_before_it_runs(cloned):
    proc = builder(cloned, "run", "recipe.yaml", "-t", "openvino", "--runner", "local", "--out", "build")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr
    assert "source.torch.factory: evil is in the current folder, not an installed package" in proc.stderr
    assert "--trust-remote-code" in proc.stderr and "Traceback" not in proc.stderr
    assert not (cloned / "PWNED").exists()
    plan = builder(cloned, "plan", "recipe.yaml", "-t", "openvino")
    assert plan.returncode == 2 and "not an installed package" in plan.stderr


def test_the_user_may_trust_it(cloned):
    proc = builder(cloned, "plan", "recipe.yaml", "-t", "openvino", "--json", "--trust-remote-code")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["trust_remote_code"] is True
    assert any("source.torch.factory evil:build may come from outside installed packages" in n for n in plan["notes"])
    export = next(s for s in plan["steps"] if s["kind"] == "convert.torch_onnx")
    assert export["params"]["trust_remote_code"] is True


def test_a_factory_that_reaches_into_the_work_dir_is_not_imported_in_the_stage(tmp_path, monkeypatch):
    """In a container the stage runs in the work dir, where downloads and data files land (work/source/...):
    even with a plan that says nothing, the stage imports factories from installed packages only."""
    (tmp_path / "work" / "source").mkdir(parents=True)
    (tmp_path / "work" / "source" / "evil.py").write_text(EVIL.format(marker=str(tmp_path / "PWNED")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m builder.stage.execute` puts the current folder first
    with pytest.raises(ConfigError, match="factories come from installed packages only") as refused:
        import_factory("work.source.evil:build", trusted=False)
    assert "--trust-remote-code" in refused.value.hint
    assert not (tmp_path / "PWNED").exists()
    assert str(tmp_path) in sys.path  # put back as it was
    assert callable(import_factory("work.source.evil:build", trusted=True))
    assert (tmp_path / "PWNED").exists()


def test_an_installed_factory_needs_no_trust():
    assert callable(import_factory("builder.stage.models.efficientnet_lite:efficientnet_lite0", trusted=False))


@pytest.mark.parametrize("fmt,suffix", [("torchscript", "pt"), ("exported_program", "pt2"), ("saved_model", "tgz")])
def test_a_downloaded_model_that_is_a_program_needs_the_opt_in(tmp_path, fmt, suffix):
    source = f"  download: {{urls: ['https://example.com/m.{suffix}'], member: m/m.{suffix}}}\n  format: {fmt}"
    if fmt == "saved_model":
        source = f"  download: {{urls: ['https://example.com/m.tgz']}}\n  format: {fmt}"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(source=source))
    refused = CliRunner().invoke(cli, ["plan", str(recipe), "-t", "openvino"])
    assert refused.exit_code == 2 and "it comes from a download" in refused.output, refused.output
    assert "--trust-remote-code" in refused.output
    trusted = CliRunner().invoke(cli, ["plan", str(recipe), "-t", "openvino", "--json", "--trust-remote-code"])
    assert trusted.exit_code == 0, trusted.output
    assert any("runs its own code" in note for note in json.loads(trusted.output)["notes"])


def test_the_users_own_torchscript_file_runs_and_the_plan_says_so(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"torchscript")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(source="  file: m.pt"))
    result = CliRunner().invoke(cli, ["plan", str(recipe), "-t", "openvino", "--json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.output)["notes"]
    assert any("source m.pt runs its own code: a TorchScript file is a program" in n and "your own file" in n
               for n in notes), notes

# The shipped recipes (efficientnet-lite0's and edsr's factories are in builder.stage.models, an installed package)
# plan on every target without the flag: tests/test_catalog.py.


@pytest.mark.parametrize("how", [["-c", "from builder.code_trust import import_factory as i; i('evil:build', trusted=False)"],
                                 ["-m", "evil_stage"]], ids=["python -c", "python -m"])
def test_a_stage_process_does_not_import_from_its_current_folder(tmp_path, how):
    """What Python puts first on sys.path for `-c` ('') and `-m` (the folder's path) is not an installed package."""
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(tmp_path / "PWNED")))
    (tmp_path / "evil_stage.py").write_text("from builder.code_trust import import_factory\n"
                                            "import_factory('evil:build', trusted=False)\n")
    proc = subprocess.run([sys.executable, *how], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "factories come from installed packages only" in proc.stderr, proc.stderr
    assert not (tmp_path / "PWNED").exists()
