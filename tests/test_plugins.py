"""A plugin from outside the project: tests/plugin_ort, installed with pip as its own package (into a
folder on PYTHONPATH, so this venv stays as it was), adds a format, a runtime, a step kind and a target
that builds and measures for real through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PLUGIN = Path(__file__).parent / "plugin_ort"
TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"
BUILDER = Path(sys.executable).parent / "builder"


def _on_path(folder: Path) -> str:
    """`folder` first on PYTHONPATH, before the one this test runs with (a checkout's builder/, if any)."""
    return os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a shell where edge-builder-ort is installed."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN, root / "src")  # setuptools writes build/ beside the sources
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(root / "site"), str(source)], check=True, capture_output=True)
    return os.environ | {"PYTHONPATH": _on_path(root / "site")}


def _builder(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BUILDER), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def test_a_stage_loads_the_backends_without_their_host_side():
    """What a stage loads (plugins.load()) registers steps, runtimes and formats and imports nothing of
    builder.host; the host's load adds each backend's host module (its report words, container runtime, ...)."""
    script = ("import sys; from builder import plugins; from builder.stage.steps import registry; "
              "plugins.load(); registry.all_steps(); "
              "print(sorted(m for m in sys.modules if m.startswith('builder.host') or m.endswith('.host'))); "
              "from builder.host import container_runtimes; "
              "print(sorted(container_runtimes.known()), 'builder.backends.tensorrt.host' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "['nvidia'] True"]


def test_without_the_plugin_its_target_is_unknown(tmp_path):
    proc = _builder(dict(os.environ), "plan", str(TINY), "-t", "x86-ort", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown target 'x86-ort'" in proc.stderr


def test_the_plugin_adds_its_target_step_format_and_runtime(plugin_env, tmp_path):
    listed = _builder(plugin_env, "targets", cwd=tmp_path)
    assert listed.returncode == 0 and "x86-ort" in listed.stdout
    listed = _builder(plugin_env, "formats", cwd=tmp_path)
    assert listed.returncode == 0 and "ort-format" in listed.stdout and ".ort" in listed.stdout
    proc = _builder(plugin_env, "plan", str(TINY), "-t", "x86-ort", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["artifacts"]["int8"].endswith(".ort")
    kinds = [s["kind"] for s in plan["steps"] if s["variant"] == "int8"]
    assert kinds[:2] == ["quantize.ort", "convert.ort"]
    measured = [s for s in plan["steps"] if s["kind"] in ("benchmark", "validate")]
    assert measured and all(s["params"]["runtime"] == "ort-format" for s in measured)
    convert = next(s for s in plan["steps"] if s["kind"] == "convert.ort")
    assert convert["params"] == {"optimization": "basic"}  # every param the step reads, its default included


def test_a_run_on_the_plugin_target_converts_benchmarks_and_validates(plugin_env, tmp_path):
    proc = _builder(plugin_env, "run", str(TINY), "-t", "x86-ort", "--runner", "local", "--variant", "fp32", "--variant", "int8",
                    "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    workdir = tmp_path / "out" / "tiny-mobilenet" / "x86-ort"
    results = {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}
    for name in ("fp32", "int8"):
        variant = results[name]
        assert variant["status"] == "ok" and variant["artifact"].endswith(".ort")
        assert (workdir / variant["artifact"]).read_bytes()[4:8] == b"ORTM"  # the ORT flatbuffer's identifier
        assert variant["benchmark"]["runtime"] == "ort-format" and variant["benchmark"]["p50_ms"] > 0
        assert variant["validation"]["samples"] == 8
    assert results["fp32"]["validation"]["source"]["cosine"] > 0.999  # the .ort computes what the Keras model does
    assert results["int8"]["benchmark"]["size_bytes"] < results["fp32"]["benchmark"]["size_bytes"] / 2


def test_the_plugin_goes_into_the_images_with_its_entry_point(plugin_env, tmp_path):
    """Rendered as the docker runner renders it: the plugin's files and metadata under plugins/, copied to
    the images' PYTHONPATH, where its entry point is found as it is here."""
    script = ("import json; from builder.host import catalog, images; "
              "image = images.render_image(catalog.load_target('x86-ort'), 'device'); "
              "print(json.dumps({'dockerfile': image.dockerfile, 'files': sorted(image.context)}))")
    proc = subprocess.run([sys.executable, "-c", script], env=plugin_env, cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    rendered = json.loads(proc.stdout)
    assert "COPY plugins/ /opt/edge-builder/" in rendered["dockerfile"]
    assert "python -m builder.stage.smoke onnxruntime numpy psutil edge_builder_ort" in rendered["dockerfile"]
    files = rendered["files"]
    assert {"plugins/edge_builder_ort/__init__.py", "plugins/edge_builder_ort/step.py",
            "plugins/edge_builder_ort/targets/x86-ort.yaml"} <= set(files)
    assert any(f.startswith("plugins/edge_builder_ort-") and f.endswith(".dist-info/entry_points.txt") for f in files)


def test_a_broken_plugin_is_a_clear_error(plugin_env, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(plugin_env["PYTHONPATH"].split(os.pathsep)[0], broken)
    (broken / "edge_builder_ort" / "runtime.py").write_text("raise ImportError('no onnxruntime here')\n")
    proc = _builder(plugin_env | {"PYTHONPATH": _on_path(broken)}, "targets", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "plugin ort (edge_builder_ort) failed to load: ImportError: no onnxruntime here" in proc.stderr
    assert "edge-builder-ort" in proc.stderr  # the package to fix or uninstall


def test_a_broken_backend_folder_is_a_clear_error_too(tmp_path):
    """A backend of the project's own that fails to import (its module raising, as a missing library would)."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'builder.backends.vela.steps':\n"
        "            raise ImportError('no vela here')\n"
        "sys.meta_path.insert(0, Refuse())\n")
    proc = _builder(dict(os.environ) | {"PYTHONPATH": _on_path(inject)}, "targets", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "plugin builder (builder.backends) failed to load: ImportError: no vela here" in proc.stderr


def test_an_auto_variant_on_the_plugin_target_searches_with_onnx_runtime_and_ships_the_closest(plugin_env, tmp_path):
    """A gate no int8 candidate meets (the random-weight softmax rounds to 0 in int8): two int8 calibrations,
    then both fallbacks; the chosen one is converted to .ort, benchmarked and validated."""
    recipe = yaml.safe_load(TINY.read_text())
    recipe["variants"] = {"fp32": {}, "auto": {"precision": "auto", "gates": {"min_snr_db": 200},
                                               "search": {"max_candidates": 4, "max_float_layers": 1}}}
    path = tmp_path / "tiny-mobilenet.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = _builder(plugin_env, "run", str(path), "-t", "x86-ort", "--runner", "local", "--out", str(tmp_path / "out"),
                    cwd=tmp_path)
    workdir = tmp_path / "out" / "tiny-mobilenet" / "x86-ort"
    assert (workdir / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    auto = next(v for v in json.loads((workdir / "results.json").read_text())["variants"] if v["name"] == "auto")
    search = auto["search"]
    assert [c["name"] for c in search["candidates"]] == ["int8", "int8-entropy", "int16x8", "fp16"]
    assert all(c["status"] == "ok" and c["p50_ms"] > 0 for c in search["candidates"])
    assert not any(c["passed"] for c in search["candidates"][:2]) and search["chosen"] in ("int16x8", "fp16")
    assert auto["status"] in ("ok", "gate-failed") and auto["artifact"].endswith(".ort")
    assert (workdir / auto["artifact"]).read_bytes()[4:8] == b"ORTM" and auto["benchmark"]["p50_ms"] > 0
