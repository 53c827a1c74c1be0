"""The quickstart through the docker runner, for real: images built once, every step in a container.

The CLI runs as a subprocess (`python -m builder.host.cli`, the same interpreter as
the tests), exactly as a user runs it. Each expensive run is module-scoped and
shared: x86-tflite runs the full quickstart twice (the second run must reuse
every image, and both must give the same artifacts), rpi runs it fully once
under QEMU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
import yaml

from builder.host.docker_api import MANAGED_LABEL, Engine
from builder.host.verify import compare
from builder.workdir import PLAN

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "efficientnet-lite0.yaml"
VARIANTS = {"fp32", "fp16", "dynamic", "int8"}
LITERT_ARM64 = "2.0.2"  # the newest ai-edge-litert that runs under Debian's QEMU (ENVIRONMENT.md)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def builder(*args: str, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.host.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)


def quickstart(out: Path, target: str, *extra: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    proc = builder("run", str(RECIPE), "-t", target, "--runner", "docker", "--out", str(out), *extra, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc, out / "efficientnet-lite0" / target


def load(workdir: Path, name: str) -> dict:
    return json.loads((workdir / name).read_text())


@pytest.fixture(scope="module")
def engine_ready(docker_engine, base_image):
    return docker_engine


@pytest.fixture(scope="module")
def x86_step_cache(tmp_path_factory) -> dict:
    """The step cache the x86 runs share, named explicitly: a test may ask for them from its body."""
    return {"EDGE_BUILDER_STEP_CACHE": str(tmp_path_factory.mktemp("x86-step-cache"))}


@pytest.fixture(scope="module")
def x86_runs(engine_ready, x86_step_cache, tmp_path_factory):
    """Two clean full runs on x86-tflite (`--no-cache`): (first run, second run), each (process, workdir)."""
    return [quickstart(tmp_path_factory.mktemp(f"x86-{n}"), "x86-tflite", "--no-cache", env=x86_step_cache)
            for n in ("a", "b")]


@pytest.fixture(scope="module")
def x86_warm_run(x86_runs, x86_step_cache, tmp_path_factory):
    """A third run, with the step cache the clean runs filled: (process, workdir, engine time before, after)."""
    before = int(time.time()) - 1
    proc, workdir = quickstart(tmp_path_factory.mktemp("x86-warm"), "x86-tflite", env=x86_step_cache)
    return proc, workdir, before, int(time.time()) + 1


@pytest.fixture(scope="module")
def rpi_run(engine_ready, base_image_arm64, device_urls, tmp_path_factory):
    """The quickstart on rpi: toolchain on the build engine, device stage on a device engine reached over SSH."""
    # under QEMU only a few photos are validated: their gates stay undecided, which this run accepts
    return quickstart(tmp_path_factory.mktemp("rpi"), "rpi", "--device", device_urls[0], "--no-cache", "--accept-undecided")


# --- the output layout and the manifest -----------------------------------------------------------

@pytest.mark.parametrize("which", ["x86", "rpi"])
def test_docker_run_writes_the_local_runners_layout(which, request):
    _, workdir = request.getfixturevalue("x86_runs")[0] if which == "x86" else request.getfixturevalue("rpi_run")
    for name in ("manifest.json", "results.json", "results.csv", "report.md", PLAN):
        assert (workdir / name).is_file(), name
    manifest = load(workdir, "manifest.json")
    assert manifest["runner"] == "docker"
    assert {a["variant"] for a in manifest["artifacts"]} == VARIANTS
    for artifact in manifest["artifacts"]:
        assert (workdir / artifact["path"]).stat().st_size == artifact["size"] > 0
    assert {s["status"] for s in manifest["steps"]} == {"ok"}
    assert all((workdir / "logs" / f"{s['id']}.log").is_file() for s in manifest["steps"])
    variants = {v["name"]: v for v in load(workdir, "results.json")["variants"]}
    assert set(variants) == VARIANTS
    assert all(v["benchmark"]["p50_ms"] > 0 and v["validation"]["top1_agreement_interval"][1] >= 0.9
               for v in variants.values())


@pytest.mark.parametrize("which", ["x86", "rpi"])
def test_manifest_records_each_image_and_the_versions_read_inside_it(which, request, docker_engine):
    _, workdir = request.getfixturevalue("x86_runs")[0] if which == "x86" else request.getfixturevalue("rpi_run")
    manifest = load(workdir, "manifest.json")
    for role in ("toolchain", "device"):
        image = manifest["images"][role]
        assert image["tag"].startswith("edge-builder/")
        engine = docker_engine if which == "x86" or role == "toolchain" else Engine.connect(image["engine"])
        assert engine.image_id(image["tag"]) == image["id"]
    versions = manifest["tool_versions"]
    assert versions["toolchain"]["machine"] == "x86_64"
    assert versions["toolchain"]["packages"]["tensorflow"]
    device = versions["device"]
    if which == "rpi":
        assert manifest["images"]["device"]["platform"] == "linux/arm64"
        assert device["machine"] == "aarch64"
        assert device["packages"]["ai-edge-litert"] == LITERT_ARM64
    else:
        assert device["machine"] == "x86_64"


def test_each_image_is_built_only_on_the_engine_that_runs_it(rpi_run, docker_engine, device_urls):
    _, workdir = rpi_run
    manifest = load(workdir, "manifest.json")
    toolchain, device = manifest["images"]["toolchain"], manifest["images"]["device"]
    assert toolchain["engine"] == docker_engine.url and device["engine"] == device_urls[0]
    assert Engine.connect(device_urls[0]).image_id(toolchain["tag"]) is None  # 3.8 GB never sent to the device
    assert docker_engine.image_id(device["tag"]) is None
    placement = manifest["stages"]["device"]["placement"]
    assert placement == {"device": "eb-dev1", "engine": device_urls[0], "emulated": True, "on_target": False}
    for variant in load(workdir, "results.json")["variants"]:
        assert variant["benchmark"]["device"]["device"] == "eb-dev1"
    assert "device `eb-dev1` via ssh://" in (workdir / "report.md").read_text()


@pytest.mark.parametrize("which, emulated", [("x86", False), ("rpi", True)])
def test_benchmarks_say_whether_they_ran_emulated(which, emulated, request):
    _, workdir = request.getfixturevalue("x86_runs")[0] if which == "x86" else request.getfixturevalue("rpi_run")
    results = load(workdir, "results.json")["variants"]
    assert [v["benchmark"]["emulated"] for v in results] == [emulated] * len(VARIANTS)
    assert ("Timings are EMULATED" in (workdir / "report.md").read_text()) == emulated


def test_second_run_rebuilds_nothing(x86_runs):
    (first, _), (second, workdir) = x86_runs
    assert "building edge-builder/" not in second.stdout, second.stdout
    assert second.stdout.count("image up to date") == 2, second.stdout
    images = load(workdir, "manifest.json")["images"]
    assert [images[role]["built"] for role in ("toolchain", "device")] == [False, False]


def test_a_warm_rerun_starts_no_container_and_gives_the_same_results(x86_runs, x86_warm_run, docker_engine):
    proc, workdir, before, after = x86_warm_run
    sdk = docker.DockerClient(base_url=docker_engine.url)
    started = [e for e in sdk.events(since=before, until=after, decode=True, filters={"type": "container"})
               if e.get("Action") in ("create", "start")]
    assert started == [], started
    stages = load(workdir, "manifest.json")["stages"]
    assert [stages[s]["executed_steps"] for s in ("toolchain", "device")] == [0, 0], proc.stdout
    clean = load(x86_runs[1][1], "results.json")["variants"]  # the newest result of each step is kept
    warm = load(workdir, "results.json")["variants"]
    assert [v["benchmark"]["p50_ms"] for v in warm] == [v["benchmark"]["p50_ms"] for v in clean]
    assert all(v["benchmark"]["cached"] and v["validation"]["cached"] for v in warm)
    artifacts = compare(load(x86_runs[1][1], "manifest.json"), load(workdir, "manifest.json"))
    assert artifacts and all(e["identical"] for e in artifacts.values())


def test_two_clean_runs_give_identical_artifacts(x86_runs):
    (_, a), (_, b) = x86_runs
    artifacts = compare(load(a, "manifest.json"), load(b, "manifest.json"))
    assert len(artifacts) == len(VARIANTS)
    assert {path: e["identical"] for path, e in artifacts.items()} == {path: True for path in artifacts}


def test_files_written_back_belong_to_the_invoking_user(x86_runs, rpi_run):
    for _, workdir in (*x86_runs, rpi_run):
        owners = {p.stat().st_uid for p in workdir.rglob("*")}
        assert owners == {os.getuid()}, workdir


def test_no_container_is_left_behind(x86_runs, rpi_run, docker_engine, device_urls):
    for url in (docker_engine.url, device_urls[0]):
        sdk = docker.DockerClient(base_url=url, use_ssh_client=url.startswith("ssh://"))
        assert sdk.containers.list(all=True, filters={"label": MANAGED_LABEL}) == [], url


# --- failures: one line, the right exit code, the fix ----------------------------------------------

def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_bad_ca_bundle_is_a_one_line_error(content, tmp_path, engine_ready):
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    proc = builder("run", str(RECIPE), "-t", "x86-tflite", "--runner", "docker", "--out", str(tmp_path),
                   "--ca-bundle", str(bundle), timeout=120)
    assert proc.returncode == 2
    assert str(bundle) in _one_error_line(proc)
    assert "hint:" in proc.stderr and "PEM" in proc.stderr


def test_unreachable_engine_is_a_one_line_error_with_the_fix(tmp_path):
    proc = builder("run", str(RECIPE), "-t", "x86-tflite", "--runner", "docker", "--out", str(tmp_path),
                   env={"DOCKER_HOST": "tcp://127.0.0.1:1"}, timeout=120)
    assert proc.returncode == 1
    assert "tcp://127.0.0.1:1" in _one_error_line(proc)
    assert "hint:" in proc.stderr and "--runner local" in proc.stderr
    assert not (tmp_path / "efficientnet-lite0").exists()


@pytest.fixture
def broken_home(tmp_path) -> Path:
    """A copy of the project's targets, recipes and dockerfiles, to break on purpose."""
    home = tmp_path / "home"
    for folder in ("targets", "recipes", "dockerfiles"):
        shutil.copytree(ROOT / folder, home / folder)
    return home


def _add_target(home: Path, target_id: str, **device: object) -> None:
    """A copy of x86-tflite named `target_id`, with some fields of its device image replaced."""
    target = yaml.safe_load((home / "targets" / "x86-tflite.yaml").read_text())
    target["id"] = target_id
    target["images"]["device"] |= device
    (home / "targets" / f"{target_id}.yaml").write_text(yaml.safe_dump(target))


def test_failed_image_build_is_one_line_with_the_log_tail_and_tags_nothing(broken_home, tmp_path, engine_ready):
    _add_target(broken_home, "broken-smoke", smoke=["ai_edge_litert", "no_such_module_in_the_image"])
    proc = builder("run", str(RECIPE), "-t", "broken-smoke", "--runner", "docker", "--variant", "fp32",
                   "--out", str(tmp_path / "out"), env={"EDGE_BUILDER_HOME": str(broken_home)})
    assert proc.returncode == 1, proc.stderr
    tag = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("building edge-builder/litert"))
    assert tag in _one_error_line(proc)
    assert "  | " in proc.stderr and "no_such_module_in_the_image" in proc.stderr  # the build's last lines
    assert "\x1b" not in proc.stderr
    assert engine_ready.image_id(tag) is None


def test_lock_with_a_missing_version_fails_before_the_build(broken_home, tmp_path, engine_ready):
    locks = broken_home / "dockerfiles" / "locks"
    text = (locks / "litert-amd64.txt").read_text()
    (locks / "missing-amd64.txt").write_text(re.sub(r"(?m)^numpy==.*$", "numpy==0.0.0.post999", text))
    (locks / "missing-amd64.in").write_text("numpy==0.0.0.post999\n")
    _add_target(broken_home, "broken-lock", lock="missing-amd64")
    proc = builder("run", str(RECIPE), "-t", "broken-lock", "--runner", "docker", "--variant", "fp32",
                   "--out", str(tmp_path / "out"), env={"EDGE_BUILDER_HOME": str(broken_home)})
    assert proc.returncode == 1, proc.stderr
    assert "missing-amd64.txt" in _one_error_line(proc)
    assert "0.0.0.post999" in proc.stderr  # pip's own last lines name the version it could not find
    assert engine_ready.image_id("edge-builder/missing-amd64") is None
