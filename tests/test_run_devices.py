"""Device stages without a device: a stand-in host says so, Jetson stops with `device-needed`,
and `builder bundle` / `builder collect` carry the device stage to a machine and back.

The local runner runs everything here for real on a tiny Keras model; the same
bundle is run with plain `docker` on a device engine in test_docker_devices.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from builder.workdir import RECORDS

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"

pytestmark = pytest.mark.slow


def builder(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.host.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "300"}, timeout=900)


def results(workdir: Path) -> dict:
    return {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}


def test_an_arm64_target_timed_on_the_x86_host_is_marked_as_not_the_target(tmp_path):
    proc = builder("run", str(TINY), "-t", "rpi", "--runner", "local", "--variant", "int8", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    workdir = tmp_path / "tiny-mobilenet" / "rpi"
    for name, variant in results(workdir).items():
        bench = variant["benchmark"]
        assert (bench["emulated"], bench["on_target"]) == (False, False), name
        assert bench["device"]["device"] == "host" and bench["device"]["cpu_model"]
        assert bench["device"]["thermal_before"] is not None
    report = (workdir / "report.md").read_text()
    assert "| host, not the target |" in report
    assert "not comparable with the target's own figures" in report
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["stages"]["device"]["placement"]["on_target"] is False


@pytest.fixture(scope="module")
def jetson_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jetson")
    proc = builder("run", str(TINY), "-t", "jetson", "--runner", "local", "--variant", "int8", "--out", str(out))
    return proc, out


def test_jetson_without_a_device_does_its_toolchain_work_then_asks_for_a_device(jetson_run):
    proc, out = jetson_run
    workdir = out / "tiny-mobilenet" / "jetson"
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
    assert "device-needed" in proc.stderr
    assert f"builder run {TINY} -t jetson --out {out} --device ssh://USER@DEVICE" in proc.stderr
    assert "builder bundle" in proc.stderr and "Traceback" not in proc.stderr
    assert (workdir / "work" / "onnx" / "model.onnx").stat().st_size > 0
    assert (workdir / "work" / "int8" / "quantize.ort.onnx").stat().st_size > 0  # the QDQ model TensorRT reads
    for name, variant in results(workdir).items():  # reported, never as ok
        assert variant["status"] == "skipped" and variant["failure"]["cause"] == "device-needed", name


def test_a_bundle_carries_the_device_stage_and_collect_finishes_the_run(tmp_path):
    out = tmp_path / "build"
    proc = builder("bundle", str(TINY), "-t", "rpi", "--runner", "local", "--variant", "int8", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    archive = out / "tiny-mobilenet_rpi_device-bundle.tar.gz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "device", filter="data")
    assert {"bundle.json", "run.sh", "image/Dockerfile", "image/lock.txt", "run/plan.json"} <= set(names)
    assert any(n.startswith("image/wheels/ai_edge_litert-") and n.endswith("aarch64.whl") for n in names)
    device = tmp_path / "device"
    assert "docker build" in (device / "run.sh").read_text()

    # Not run yet: collect refuses rather than reporting a run without measurements.
    refused = builder("collect", str(device), "--out", str(out))
    assert refused.returncode == 2 and "the device stage has not run" in refused.stderr

    # What run.sh runs inside the device image, run here with this Python:
    stage = subprocess.run([sys.executable, "-m", "builder.stage.execute", str(device / "run"), "--stage", "device",
                            "--device", "bench-pi", "--engine", "local", "--off-target"],
                           capture_output=True, text=True, timeout=600)
    assert stage.returncode == 0, stage.stdout[-3000:]
    proc = builder("collect", str(device), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    workdir = out / "tiny-mobilenet" / "rpi"
    for variant in results(workdir).values():
        assert variant["status"] == "ok"
        assert variant["benchmark"]["device"]["device"] == "bench-pi"
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["collected_from"] == str(device)
    assert {s["stage"] for s in manifest["steps"]} == {"toolchain", "device"}


def test_bundle_reuses_a_finished_toolchain_stage(jetson_run, tmp_path):
    _, out = jetson_run
    proc = builder("bundle", str(TINY), "-t", "jetson", "--runner", "local", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "toolchain stage already in" in proc.stdout
    with tarfile.open(out / "tiny-mobilenet_jetson_device-bundle.tar.gz") as tar:
        names = set(tar.getnames())
        script = tar.extractfile("run.sh").read().decode()
    assert "--runtime nvidia --group-add video -e NVIDIA_VISIBLE_DEVICES=all -e NVIDIA_DRIVER_CAPABILITIES=all " \
        "--user" in script  # the device stage's own container options: the GPU is reachable
    # the device-needed records of the first attempt stay behind: the device writes its own
    assert not any(n.startswith(f"run/{RECORDS}/") and "tensorrt" in n for n in names)
