"""Device images as a real Jetson or Pi engine sees them: what is tested at build and what only when a
container runs, what the base image may lack, who the container user is, and where the install stage runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import GpuUnavailable
from builder.host import catalog
from builder.host.images import render_image
from builder.host.runners.docker import container_options, run_smoke

VENV_BIN = Path(sys.executable).parent


def stages(dockerfile: str) -> tuple[str, str]:
    """The install stage and the final stage of a rendered device Dockerfile."""
    install, final = re.split(r"(?m)^(?=FROM --platform=\S+ \S+\s*$)", dockerfile.split(" AS install", 1)[1], maxsplit=1)
    return install, final


def provides_script(stage: str) -> str:
    """The shell of a stage's base-image check (its RUN with the continuation lines joined)."""
    run = re.search(r'(?ms)^RUN missing="".*?fi$', stage).group(0)
    return run.removeprefix("RUN ").replace("\\\n", "")


def test_the_jetson_image_imports_tensorrt_when_a_container_runs_not_when_it_builds():
    jetson = catalog.load_target("jetson")
    dockerfile = render_image(jetson, "device", engine_platform="linux/arm64").dockerfile
    smoke = next(line for line in dockerfile.splitlines() if "builder.stage.smoke" in line)
    assert smoke == "RUN python -m builder.stage.smoke cuda.bindings.runtime numpy psutil"
    assert jetson.images.device.run_smoke == ["tensorrt"]


def test_the_jetson_image_checks_what_its_base_image_carries_in_both_stages():
    dockerfile = render_image(catalog.load_target("jetson"), "device", engine_platform="linux/arm64").dockerfile
    install, final = stages(dockerfile)
    for package in ("python3-venv", "python3-pip"):  # the install stage makes the venv with pip
        assert f'missing="$missing {package}"' in install and f'missing="$missing {package}"' in final
    for package in ("python3-libnvinfer", "libnvinfer-bin"):  # TensorRT's bindings and trtexec, at run time only
        assert package not in install and f'missing="$missing {package}"' in final
    assert final.index("missing=") < final.index("COPY --from=install")


def test_the_base_image_check_installs_only_what_is_missing(tmp_path):
    """The rendered check, run by sh here: Python with venv and pip, no TensorRT, no trtexec; apt-get is a
    stand-in that records what it is asked to install."""
    dockerfile = render_image(catalog.load_target("jetson"), "device", engine_platform="linux/arm64").dockerfile
    script = provides_script(stages(dockerfile)[1])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/apt.log"\n')
    apt.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)  # the venv's: venv, ensurepip and pip importable
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "base image lacks: python3-libnvinfer libnvinfer-bin (installing)" in done.stdout
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "update", "install -y --no-install-recommends python3-libnvinfer libnvinfer-bin"]


def test_jetson_device_containers_run_in_the_video_group_with_the_nvidia_environment():
    jetson = catalog.load_target("jetson")
    assert container_options(jetson, "device") == {
        "user": "1000:1000", "runtime": "nvidia", "group_add": ["video"],
        "env": {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "all"}}
    assert container_options(jetson, "toolchain") == {"user": "1000:1000", "runtime": None, "group_add": None,
                                                      "env": {}}
    assert container_options(catalog.load_target("rpi"), "device")["group_add"] is None


@pytest.mark.docker
def test_the_container_user_is_in_video_as_a_jetson_device_stage_runs_it(docker_engine, base_image):
    """The device stage's options, without the NVIDIA runtime this engine lacks: the non-root user has the
    group that owns a Jetson's GPU device nodes (video, 44 in Debian and Ubuntu) and NVIDIA's variables."""
    options = container_options(catalog.load_target("jetson"), "device") | {"runtime": None}
    result = docker_engine.run(image=base_image, command=["sh", "-c", "id -u; id -G; echo $NVIDIA_VISIBLE_DEVICES"],
                               network="none", **options)
    assert result.exit_code == 0, result.log_tail
    assert result.log_tail[-3:] == ["1000", "1000 44", "all"]


@pytest.mark.docker
def test_the_first_container_run_imports_what_only_a_running_container_can(docker_engine, base_image):
    """run_smoke in a real device image (x86-tflite's): a module that imports passes, one that does not is
    GpuUnavailable with the container's own message and the fix."""
    from builder.host.image_build import ImageBuilder

    target = catalog.load_target("x86-tflite")
    image = ImageBuilder().ensure_role(docker_engine, target, "device")

    def smoking(modules: list[str]):
        device = target.images.device.model_copy(update={"run_smoke": modules})
        return target.model_copy(update={"images": target.images.model_copy(update={"device": device})})

    run_smoke(docker_engine, image, smoking(["numpy"]), "device")
    with_tensorrt = smoking(["tensorrt"])
    with pytest.raises(GpuUnavailable, match="the device image of x86-tflite cannot import tensorrt") as caught:
        run_smoke(docker_engine, image, with_tensorrt, "device")
    assert any("cannot import tensorrt: ModuleNotFoundError" in line for line in caught.value.log_tail)
    assert "--runtime nvidia" in caught.value.hint


@pytest.mark.docker
def test_an_engine_with_only_the_arm64_base_builds_the_rpi_device_image(docker_engine, base_image_arm64, tmp_path,
                                                                         monkeypatch):
    """As on a Raspberry Pi's engine, which has no amd64 image: the install stage runs on arm64 (here under
    QEMU), not on an amd64 base the engine does not have."""
    from builder.host.image_build import ImageBuilder

    base_map = tmp_path / "base-images.yaml"
    base_map.write_text(f"python:3.11-slim-bookworm:\n  linux/amd64: edge-builder/absent:amd64\n"
                        f"  linux/arm64: {base_image_arm64}\n")
    monkeypatch.setenv("EDGE_BUILDER_BASE_IMAGES", str(base_map))
    rpi = catalog.load_target("rpi")
    images = ImageBuilder(rebuild=True, echo=lambda line: None)
    rendered = images.render(rpi, "device", docker_engine)
    assert f"FROM --platform=linux/arm64 {base_image_arm64} AS install" in rendered.dockerfile
    built = images.ensure(docker_engine, rendered)
    assert built["built"] and built["platform"] == "linux/arm64"
    result = docker_engine.run(image=built["tag"], command=["python", "-c", "import ai_edge_litert, numpy"],
                               platform="linux/arm64", network="none")
    assert result.exit_code == 0, result.log_tail


@pytest.mark.docker
def test_devices_check_runs_a_tiny_model_in_each_image_and_names_what_is_missing(docker_engine, base_image, tmp_path):
    """The build engine as a device of three targets: x86-tflite's image runs the tiny model; rpi's image is not
    there yet; jetson needs the NVIDIA runtime this engine lacks. Each says its fix; the whole check is quick."""
    import json
    import os
    import time

    from builder.host.image_build import ImageBuilder

    ImageBuilder(echo=lambda line: None).ensure_role(docker_engine, catalog.load_target("x86-tflite"), "device")
    url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"devices:\n  - name: here\n    engine: {url}\n    targets: [x86-tflite, jetson, rpi]\n")
    rpi_tag = ImageBuilder().render(catalog.load_target("rpi"), "device", docker_engine).tag
    if docker_engine.image_id(rpi_tag):
        docker_engine.remove_image(rpi_tag)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "builder.host.cli", "devices", "--fleet", str(fleet), "--check", "--json"],
                          capture_output=True, text=True)
    assert time.monotonic() - started < 60
    assert proc.returncode == 1, proc.stderr
    checks = {c["target"]: c for c in json.loads(proc.stdout)}
    assert checks["x86-tflite"]["ok"] and checks["x86-tflite"]["runtime"] == "litert" and checks["x86-tflite"]["ms"] > 0
    assert not checks["jetson"]["ok"]
    assert checks["jetson"]["what"] == "NVIDIA runtime" and "nvidia-container" in checks["jetson"]["hint"]
    assert not checks["rpi"]["ok"] and checks["rpi"]["hint"] == "builder build -t rpi --device here (or a first run)"
    table = subprocess.run([sys.executable, "-m", "builder.host.cli", "devices", "--fleet", str(fleet), "--check"],
                           capture_output=True, text=True)
    assert "✓ here x86-tflite: tiny model in litert: runtime litert, ms" in table.stdout
    assert "✗ here jetson: NVIDIA runtime: the engine has no NVIDIA runtime" in table.stdout
    assert "    fix: builder build -t rpi --device here" in table.stdout and "Traceback" not in table.stderr


@pytest.mark.docker
def test_devices_check_on_a_device_reached_over_ssh(device_urls, tmp_path):
    """A CI device (an x86 engine over ssh:// standing in for a Pi) with its rpi image: the tiny model runs in
    LiteRT for arm64 under its QEMU; jetson there says what the engine lacks."""
    import json

    built = subprocess.run([sys.executable, "-m", "builder.host.cli", "build", "-t", "rpi", "--device", device_urls[0]],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"devices:\n  - name: pi\n    engine: {device_urls[0]}\n    targets: [rpi, jetson]\n")
    proc = subprocess.run([sys.executable, "-m", "builder.host.cli", "devices", "--fleet", str(fleet), "--check", "--json"],
                          capture_output=True, text=True)
    checks = {c["target"]: c for c in json.loads(proc.stdout)}
    assert proc.returncode == 1 and checks["rpi"]["ok"] and checks["rpi"]["runtime"] == "litert", checks
    assert checks["rpi"]["emulated"] is True
    assert checks["jetson"]["what"] == "NVIDIA runtime" and "restart Docker" in checks["jetson"]["hint"]


@pytest.mark.docker
def test_a_device_image_gets_what_its_base_image_lacks_from_apt(docker_engine, base_image):
    """A real build: the Debian base has pip but not `file`; the check installs `file` only, from the mirror
    the base image's apt names, and the image then has both (as l4t-tensorrt gets python3-libnvinfer)."""
    from builder.config.target import BaseProvides
    from builder.host.image_build import ImageBuilder

    target = catalog.load_target("x86-tflite")
    provides = [BaseProvides(check="python3 -m pip --version", apt="python3-pip", install_stage=True),
                BaseProvides(check="command -v file", apt="file")]
    device = target.images.device.model_copy(update={"base_provides": provides})
    target = target.model_copy(update={"images": target.images.model_copy(update={"device": device})})
    lines: list[str] = []
    images = ImageBuilder(echo=lines.append)
    image = images.ensure(docker_engine, images.render(target, "device", docker_engine))
    result = docker_engine.run(image=image["tag"], command=["sh", "-c", "file --version | head -1; pip --version"],
                               network="none")
    assert result.exit_code == 0, result.log_tail
    assert result.log_tail[0].startswith("file-5.") and "python 3.11" in result.log_tail[1]
    docker_engine.remove_image(image["tag"])
