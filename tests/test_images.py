"""builder.host.images: deterministic Dockerfiles and content-hash tags that change exactly when an input does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import ConfigError
from builder.host import catalog, images
from builder.host.images import render_image, render_target, resolve_base

SHIPPED_BASE = "python:3.11-slim-bookworm"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private copy of the project's data (targets, templates, locks, recipes) that a test may change."""
    for folder in ("targets", "dockerfiles", "recipes"):
        shutil.copytree(catalog.project_root() / folder, tmp_path / folder)
    monkeypatch.setenv("EDGE_BUILDER_HOME", str(tmp_path))
    return tmp_path


def tags(target_id: str) -> dict[str, str]:
    return {role: image.tag for role, image in render_target(catalog.load_target(target_id)).items()}


def test_rendering_is_deterministic():
    first = render_target(catalog.load_target("rpi"))
    second = render_target(catalog.load_target("rpi"))
    assert {r: i.tag for r, i in first.items()} == {r: i.tag for r, i in second.items()}
    assert first["device"].dockerfile == second["device"].dockerfile
    assert re.fullmatch(r"edge-builder/litert-arm64:[0-9a-f]{16}", first["device"].tag)
    assert first["device"].platform == "linux/arm64" and first["toolchain"].platform == "linux/amd64"


def test_toolchain_follows_the_engine_platform():
    image = render_image(catalog.load_target("rpi"), "toolchain", engine_platform="linux/arm64")
    assert image.platform == "linux/arm64" and image.tag != tags("rpi")["toolchain"]


def test_the_jetson_image_uses_jetpacks_python_and_its_tensorrt():
    """On the Jetson itself (native build): a 3.10 venv that sees the L4T image's tensorrt bindings."""
    jetson = render_image(catalog.load_target("jetson"), "device", engine_platform="linux/arm64")
    assert "RUN python3 -m venv --system-site-packages /opt/venv" in jetson.dockerfile
    assert b"numpy==2.2.6" in jetson.context["lock.txt"]
    rpi = render_image(catalog.load_target("rpi"), "device", engine_platform="linux/arm64")
    assert "RUN python3 -m venv /opt/venv" in rpi.dockerfile and "--system-site-packages" not in rpi.dockerfile


def test_targets_with_identical_images_share_them():
    x86, openvino = tags("x86-tflite"), tags("openvino")
    assert x86["toolchain"] == openvino["toolchain"]
    assert x86["device"] != openvino["device"]


def test_step_code_changes_the_tag_but_not_the_toolchain_layers(monkeypatch):
    before = render_image(catalog.load_target("x86-tflite"), "toolchain")
    code = images.code_files()
    assert "builder/stage/steps/keras.py" in code and not any("__pycache__" in name for name in code)
    changed = {**code, "builder/stage/steps/keras.py": code["builder/stage/steps/keras.py"] + b"\n# changed\n"}
    monkeypatch.setattr(images, "code_files", lambda: changed)
    after = render_image(catalog.load_target("x86-tflite"), "toolchain")
    assert after.tag != before.tag
    # The code is copied after the packages are installed, so a code change rebuilds one small layer.
    dockerfile = after.dockerfile
    assert dockerfile.index("pip install") < dockerfile.index("COPY builder/")


def test_lock_change_changes_only_the_images_using_it(home):
    before = tags("x86-tflite")
    with (home / "dockerfiles" / "locks" / "litert-amd64.txt").open("a") as lock:
        lock.write("six==1.17.0\n")
    after = tags("x86-tflite")
    assert after["device"] != before["device"]
    assert after["toolchain"] == before["toolchain"]


def test_missing_lock_or_template_is_a_config_error(home):
    (home / "dockerfiles" / "locks" / "litert-arm64.txt").unlink()
    with pytest.raises(ConfigError, match="images.device.lock") as info:
        render_target(catalog.load_target("rpi"))
    assert "builder lock" in info.value.hint
    (home / "dockerfiles" / "device.Dockerfile.j2").unlink()
    with pytest.raises(ConfigError, match="images.device.template: no device.Dockerfile.j2"):
        render_target(catalog.load_target("x86-tflite"))


def test_template_errors_are_config_errors(home):
    (home / "dockerfiles" / "device.Dockerfile.j2").write_text("FROM {{ base }}\nRUN echo {{ not_declared }}\n")
    with pytest.raises(ConfigError, match="device.Dockerfile.j2: 'not_declared' is undefined"):
        render_target(catalog.load_target("x86-tflite"))


def write_map(tmp_path: Path, monkeypatch, text: str) -> None:
    path = tmp_path / "base-images.yaml"
    path.write_text(text)
    monkeypatch.setenv("EDGE_BUILDER_BASE_IMAGES", str(path))


def test_base_image_map_plain(tmp_path, monkeypatch):
    shipped = tags("rpi")
    write_map(tmp_path, monkeypatch, f"{SHIPPED_BASE}: corp/python:3.11\n")
    rendered = render_target(catalog.load_target("rpi"))
    assert {i.base for i in rendered.values()} == {"corp/python:3.11"}
    assert "FROM --platform=linux/amd64 corp/python:3.11 AS install" in rendered["device"].dockerfile
    assert rendered["device"].tag != shipped["device"]  # the base is part of an image's identity


def test_base_image_map_per_platform(tmp_path, monkeypatch):
    write_map(tmp_path, monkeypatch, f"{SHIPPED_BASE}:\n  linux/amd64: local/amd64\n  linux/arm64: local/arm64\n")
    assert resolve_base(SHIPPED_BASE, "linux/arm64") == "local/arm64"
    assert resolve_base(SHIPPED_BASE, "linux/amd64") == "local/amd64"
    assert resolve_base("debian:12", "linux/amd64") == "debian:12"  # not in the map: unchanged
    write_map(tmp_path, monkeypatch, f"{SHIPPED_BASE}:\n  linux/amd64: local/amd64\n")
    assert resolve_base(SHIPPED_BASE, "linux/arm64") == SHIPPED_BASE  # no entry for this platform


def test_registry_mirror(monkeypatch):
    monkeypatch.setenv("EDGE_BUILDER_REGISTRY_MIRROR", "mirror.corp:5000/")
    assert resolve_base("python:3.11-slim", "linux/amd64") == "mirror.corp:5000/library/python:3.11-slim"
    assert resolve_base("org/tool:1", "linux/amd64") == "mirror.corp:5000/org/tool:1"
    for named in ("nvcr.io/nvidia/l4t-tensorrt:r10.3.0-runtime", "localhost:5000/x:1", "localhost/x:1"):
        assert resolve_base(named, "linux/arm64") == named


def test_map_wins_over_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_BUILDER_REGISTRY_MIRROR", "mirror.corp:5000")
    write_map(tmp_path, monkeypatch, f"{SHIPPED_BASE}: local/base\n")
    assert resolve_base(SHIPPED_BASE, "linux/amd64") == "local/base"


@pytest.mark.parametrize("text", ["a: [unclosed\n", "- a list\n", "a: 3\n", "a: {linux/arm64: [x]}\n"])
def test_bad_map_file(tmp_path, monkeypatch, text):
    write_map(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError, match="EDGE_BUILDER_BASE_IMAGES="):
        resolve_base(SHIPPED_BASE, "linux/amd64")


def test_missing_map_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_BUILDER_BASE_IMAGES", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_base(SHIPPED_BASE, "linux/amd64")


def test_images_carry_the_stage_code_alone_and_it_runs_without_the_host(tmp_path):
    code = images.code_files()
    assert "builder/stage/execute.py" in code and "builder/backends/litert/steps.py" in code
    assert not [name for name in code if name.startswith("builder/host/") or name.endswith("/host.py")]
    for name, data in code.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    # What an image runs, from those files alone: the stage entry point, with every backend registered.
    probe = ("import sys, builder, builder.stage.execute; from builder import plugins, formats; plugins.load();"
             "assert not [m for m in sys.modules if m.startswith('builder.host')];"
             "print(builder.__file__, sorted(formats.all_formats()))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(tmp_path)), done.stdout
    assert "'tflite'" in done.stdout and "'openvino'" in done.stdout
