"""The `builder` commands that need no engine and no model, through Click's CliRunner."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from builder import __version__
from builder.host import catalog
from builder.host.cli import _health_table, cli
from builder.host.images import render_target

BASE_IMAGES = Path(__file__).resolve().parent.parent / ".ci" / "base-images.yaml"
QUICKSTART = catalog.recipes_dir() / "efficientnet-lite0.yaml"
PROXY_ARG = re.compile(r"^\s*ARG\s+(HTTPS?_PROXY|NO_PROXY|FTP_PROXY|ALL_PROXY)\b", re.IGNORECASE | re.MULTILINE)


def invoke(*args: str, env: dict | None = None):
    result = CliRunner().invoke(cli, list(args), env=env)
    assert "Traceback" not in result.output
    return result


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_python_m_builder_cli_is_still_the_builder_command():
    """The CLI lives in builder.host.cli; `python -m builder.cli`, as users and scripts run it, still works."""
    proc = subprocess.run([sys.executable, "-m", "builder.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_recipe_schema_for_editors():
    result = invoke("schema", "recipe")
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert {"source", "input", "variants", "targets", "steps"} <= set(schema["properties"])
    assert set(schema["required"]) == {"name", "source", "input", "variants"}
    assert schema["$defs"]["Benchmark"]["additionalProperties"] is False


def test_target_schema():
    schema = json.loads(invoke("schema", "target").output)
    assert {"platform", "images", "variants"} <= set(schema["properties"])


def test_schema_kind_is_checked():
    result = invoke("schema", "model")
    assert result.exit_code == 2 and "'recipe'" in result.output


def test_targets_lists_every_shipped_target():
    result = invoke("targets", env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for target_id in catalog.target_ids():
        assert target_id in result.output
    assert "linux/arm64" in result.output


def test_recipes_lists_every_shipped_recipe():
    result = invoke("recipes", env={"COLUMNS": "250"})  # rich tables wrap to the width
    assert result.exit_code == 0
    for path in catalog.recipe_paths():
        assert catalog.load_recipe(path).name in result.output
    assert "recipes/efficientnet-lite0.yaml" in result.output


def test_plan_shows_device_stage_and_runtime_needs():
    result = invoke("plan", str(QUICKSTART), "-t", "jetson")
    assert result.exit_code == 0, result.output
    assert "device (on device)" in result.output
    assert "NVIDIA container runtime" in result.output


def test_plan_variant_option():
    result = invoke("plan", str(QUICKSTART), "-t", "openvino", "--variant", "int8", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["variants"] == ["fp32", "int8"]
    result = invoke("plan", str(QUICKSTART), "-t", "openvino", "--variant", "int4")
    assert result.exit_code == 2 and "no variant 'int4'" in result.output


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["--debug", "plan", str(tmp_path / "nope.yaml"), "-t", "rpi"])
    assert result.exit_code == 2
    assert "Traceback" in result.output and "recipe not found" in result.output


def test_render_rpi_uses_the_base_image_map():
    result = invoke("render", "-t", "rpi", env={"EDGE_BUILDER_BASE_IMAGES": str(BASE_IMAGES)})
    assert result.exit_code == 0, result.output
    toolchain, device = result.output.split("# ---- device image: ")
    assert "edge-builder/toolchain-amd64:" in toolchain and "(linux/amd64)" in toolchain
    assert device.startswith("edge-builder/litert-arm64:") and "(linux/arm64)" in device
    # wheels are unpacked natively on the engine's platform, then copied into the arm64 image
    assert re.findall(r"^FROM --platform=(\S+) (\S+)", device, re.MULTILINE) == [
        ("linux/amd64", "edge-builder/base:bookworm-amd64"), ("linux/arm64", "edge-builder/base:bookworm-arm64")]
    assert "python:3.11" not in result.output


def test_rendered_dockerfiles_never_declare_proxy_args():
    # A declared proxy ARG would put its value (maybe with credentials) into the image history.
    for target_id in catalog.target_ids():
        for install_from in ("wheelhouse", "index"):
            for image in render_target(catalog.load_target(target_id), wheelhouse=install_from == "wheelhouse",
                                       ca_bundle=install_from == "index").values():
                assert not PROXY_ARG.search(image.dockerfile), (target_id, image.role)
                assert "ca-bundle" not in image.dockerfile.split("AS install", 1)[1].split("FROM ", 1)[1]


def test_render_out_writes_files(tmp_path):
    result = invoke("render", "-t", "openvino", "--out", str(tmp_path / "df"), env={"EDGE_BUILDER_BASE_IMAGES": ""})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "df").iterdir()) == ["device.Dockerfile", "toolchain.Dockerfile"]
    device = (tmp_path / "df" / "device.Dockerfile").read_text()
    assert "FROM --platform=linux/amd64 python:3.11-slim-bookworm AS install" in device
    assert "edge-builder/openvino-amd64:" in result.output


def test_render_unknown_target():
    result = invoke("render", "-t", "nope")
    assert result.exit_code == 2 and "unknown target 'nope'" in result.output


def test_bad_base_image_map_is_a_config_error(tmp_path):
    bad = tmp_path / "map.yaml"
    bad.write_text("- not\n- a mapping\n")
    result = invoke("render", "-t", "rpi", env={"EDGE_BUILDER_BASE_IMAGES": str(bad)})
    assert result.exit_code == 2 and "expected a mapping" in result.output


def test_the_devices_table_shows_what_each_backend_found_on_the_machine(capsys):
    machine = {"cpu_model": "Cortex-A78AE", "extra": {"tensorrt": {"l4t": "36.3.0", "jetson_power_mode": "MAXN",
                                                                   "cuda": None}}}
    _health_table([{"name": "orin", "engine": "ssh://orin", "targets": ["jetson"], "labels": {}, "answers": True,
                    "platform": "linux/arm64", "os": "Ubuntu 22.04", "kernel": "5.15", "cores": 12,
                    "memory_mb": 32768, "machine": machine}])
    assert "cpu: Cortex-A78AE; l4t 36.3.0, jetson_power_mode MAXN" in capsys.readouterr().out
