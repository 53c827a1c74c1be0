"""Device stages on device engines, for real: two dockerds reached only over SSH stand in for two
Raspberry Pis (arm64 under QEMU there), with a local registry between them and the build engine.

CI starts them with .ci/devices.sh; a device is stopped mid-stage with `.ci/devices.sh stop`.
Tiny recipes keep the emulated device stages short; the quickstart on a device engine is in
test_docker_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "recipes" / "tiny-mobilenet.yaml"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "builder.host.cli", *args]


def builder(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "300"})


def hears_ctrl_c() -> None:
    """In the child before it runs: SIGINT as a terminal would deliver it. A shell that started the tests in
    the background (`nohup bash .ci/run &`) hands its children SIGINT ignored, and Python keeps that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tiny_copy(folder: Path, name: str) -> Path:
    """A second recipe for a matrix: the tiny model under another name."""
    path = folder / f"{name}.yaml"
    path.write_text(TINY.read_text().replace("name: tiny-mobilenet", f"name: {name}"))
    return path


def fleet_file(folder: Path, devices: dict[str, str], registry: str | None) -> Path:
    lines = [f"registry: {registry}/edge-builder"] if registry else []
    lines.append("devices:")
    for name, url in devices.items():
        lines += [f"  - name: {name}", "    targets: [rpi]", f"    engine: {url}", "    labels: {board: test-pi}"]
    path = folder / "fleet.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def results(workdir: Path) -> dict:
    return {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}


def remove_left_behind(socket: str) -> None:
    """The container of the stage that eb-dev1 lost: its engine (live-restore) kept it while nobody
    could reach it. A device that dies mid-stage keeps such a container until someone removes it."""
    import docker

    from builder.host.docker_api import MANAGED_LABEL

    for container in docker.DockerClient(base_url=socket).containers.list(all=True, filters={"label": MANAGED_LABEL}):
        container.remove(force=True)


def test_a_device_stops_mid_stage_and_its_job_finishes_on_the_other(device_urls, device_sockets, device_control,
                                                                    test_registry, tmp_path):
    """2 recipes x rpi on a two-device fleet, -j 2: both devices busy at once, then eb-dev1 dies."""
    fleet = fleet_file(tmp_path, {"eb-dev1": device_urls[0], "eb-dev2": device_urls[1]}, test_registry)
    second = tiny_copy(tmp_path, "tiny-two")
    out = tmp_path / "out"
    args = command("run", str(TINY), str(second), "-t", "rpi", "--fleet", str(fleet), "--variant", "fp32",
                   "-j", "2", "--out", str(out), "--no-cache")  # the two recipes are alike: both must really run
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "300"})
    lines: list[str] = []
    try:
        busy: set[str] = set()
        for line in proc.stdout:  # wait until both devices run a device stage, then stop eb-dev1
            lines.append(line)
            for name in ("eb-dev1", "eb-dev2"):
                if f"device stage (docker on {name})" in line:
                    busy.add(name)
            if busy == {"eb-dev1", "eb-dev2"} and "> " in line and "benchmark" in line:
                break
        assert busy == {"eb-dev1", "eb-dev2"}, "".join(lines[-40:])
        device_control.stop("eb-dev1")
        lines += proc.stdout.readlines()
        proc.wait(timeout=1200)
    finally:
        proc.kill()
        device_control.start("eb-dev1")
        remove_left_behind(device_sockets[0])
    output = "".join(lines)
    assert proc.returncode == 0, output[-5000:]
    assert "device eb-dev1 is down" in output and "moving the device stage off eb-dev1" in output
    assert "Traceback" not in output  # not even from docker-py's ssh sockets at exit
    for recipe in ("tiny-mobilenet", "tiny-two"):
        workdir = out / recipe / "rpi"
        manifest = json.loads((workdir / "manifest.json").read_text())
        assert manifest["stages"]["device"]["placement"]["device"] == "eb-dev2"
        assert manifest["images"]["device"]["engine"] == device_urls[1]
        fp32 = results(workdir)["fp32"]
        assert fp32["status"] == "ok"
        assert fp32["benchmark"]["device"]["device"] == "eb-dev2"
        assert fp32["benchmark"]["emulated"] is True  # arm64 under QEMU on that engine
        assert fp32["benchmark"]["device"]["engine"] == device_urls[1]
    print(f"fault test: {time.monotonic() - started:.0f} s")


def test_no_device_left_is_a_classified_failure_and_the_other_jobs_go_on(device_urls, device_control, tmp_path):
    fleet = fleet_file(tmp_path, {"eb-dev1": device_urls[0]}, None)
    device_control.stop("eb-dev1")  # started again when the test ends
    proc = builder("run", str(TINY), "-t", "rpi", "-t", "x86-tflite", "--fleet", str(fleet), "--variant", "fp32",
                   "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
    assert "device-unavailable" in proc.stderr and "Traceback" not in proc.stderr
    status = {(r["target"], r["variant"]): r for r in json.loads((tmp_path / "out" / "status.json").read_text())}
    assert status[("rpi", "fp32")]["cause"] == "device-unavailable"
    assert status[("x86-tflite", "fp32")]["status"] == "ok"  # the host ran its own device stage


def test_a_bundle_runs_on_a_device_with_plain_docker_and_is_collected(device_sockets, tmp_path):
    out = tmp_path / "out"
    proc = builder("bundle", str(TINY), "-t", "rpi", "--variant", "fp32", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    device = tmp_path / "on-device"
    with tarfile.open(out / "tiny-mobilenet_rpi_device-bundle.tar.gz") as tar:
        tar.extractall(device, filter="data")
    ran = subprocess.run(["sh", "run.sh"], cwd=device, capture_output=True, text=True, timeout=1500,
                         env={**os.environ, "DOCKER_HOST": device_sockets[0]})
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    proc = builder("collect", str(device / "results.tar.gz"), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    fp32 = results(out / "tiny-mobilenet" / "rpi")["fp32"]
    assert fp32["status"] == "ok" and fp32["validation"]["cosine"] > 0.999
    assert fp32["benchmark"]["emulated"] is True  # the script saw an x86 engine run an arm64 image


def test_devices_lists_each_device_with_its_health(device_urls, tmp_path):
    fleet = fleet_file(tmp_path, {"eb-dev1": device_urls[0], "eb-dev2": device_urls[1],
                                  "gone": "tcp://127.0.0.1:9"}, None)
    built = builder("build", "-t", "rpi", "--device", device_urls[1])  # the device image, on eb-dev2 only
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr
    assert "rpi device: edge-builder/litert-arm64:" in built.stdout and f"({device_urls[1]})" in built.stdout
    proc = builder("devices", "--fleet", str(fleet), "--json")
    assert proc.returncode == 1, proc.stderr  # one device does not answer
    health = {h["name"]: h for h in json.loads(proc.stdout)}
    assert health["gone"]["answers"] is False and "not reachable" in health["gone"]["error"]
    for name in ("eb-dev1", "eb-dev2"):
        h = health[name]
        assert h["answers"] is True and h["platform"] == "linux/amd64" and h["nvidia_runtime"] is False
        assert h["cores"] >= 1 and h["memory_mb"] > 0 and h["kernel"] and h["labels"] == {"board": "test-pi"}
    machine = health["eb-dev2"]["machine"]  # read inside its device image
    assert machine["cpu_model"] and machine["free_disk_gb"] > 0 and machine["arch"] == "aarch64"
    ids = {health[name]["docker_root"] for name in ("eb-dev1", "eb-dev2")}
    assert len(ids) == 2  # two engines, not one reached twice
    table = builder("devices", "--fleet", str(fleet))
    assert "eb-dev1" in table.stdout and "gone" in table.stdout and "Traceback" not in table.stderr


def test_ctrl_c_in_a_matrix_leaves_no_container_on_any_engine(device_urls, docker_engine, tmp_path):
    import docker

    from builder.host.docker_api import MANAGED_LABEL

    second = tiny_copy(tmp_path, "tiny-three")
    args = command("run", str(TINY), str(second), "-t", "rpi", "--device", device_urls[1], "--variant", "fp32",
                   "-j", "2", "--out", str(tmp_path / "out"))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "300"}, preexec_fn=hears_ctrl_c)
    seen: list[str] = []
    in_device_stage = False
    for line in proc.stdout:  # interrupt once a device-stage container is running
        seen.append(line)
        in_device_stage = in_device_stage or "device stage (docker on" in line
        if in_device_stage and line.lstrip().startswith("> "):
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(seen[-20:]) + rest[-3000:]
    for url in (docker_engine.url, device_urls[1]):
        sdk = docker.DockerClient(base_url=url, use_ssh_client=url.startswith("ssh://"))
        assert sdk.containers.list(all=True, filters={"label": MANAGED_LABEL}) == [], url


def test_a_device_that_hangs_mid_stage_is_given_up_on(device_urls, device_sockets, device_control, base_image):
    """A frozen engine (SIGSTOP) answers nothing and fails nothing; over ssh docker-py would wait forever."""
    import threading

    from builder.errors import EngineUnreachable
    from builder.host.docker_api import Engine

    engine = Engine.connect(device_urls[0])
    threading.Timer(4, device_control.pause, args=["eb-dev1"]).start()
    started = time.monotonic()
    try:
        with pytest.raises(EngineUnreachable, match="stopped answering"):
            engine.watched(lambda attempt: engine.run(image=base_image, command=["sleep", "120"], attempt=attempt),
                           every=3, misses=2)
        assert time.monotonic() - started < 60
    finally:
        device_control.resume("eb-dev1")
        remove_left_behind(device_sockets[0])


def test_a_given_up_attempt_lands_nothing_late_and_its_container_is_removed(device_urls, device_sockets,
                                                                          device_control, base_image, tmp_path):
    """The device freezes mid-run and is given up; the run goes on elsewhere (here: the file is rewritten as
    another device would). When the device thaws, its container's copy-out must not land over that."""
    import threading

    import docker

    from builder.errors import EngineUnreachable
    from builder.host.docker_api import Attempt, Engine

    work = tmp_path / "work"
    work.mkdir()
    (work / "result.txt").write_text("before\n")
    engine = Engine.connect(device_urls[0])
    attempt = Attempt()
    threading.Timer(4, device_control.pause, args=["eb-dev1"]).start()
    try:
        with pytest.raises(EngineUnreachable, match="stopped answering"):
            engine.watched(lambda a: engine.run(image=base_image, command=["sh", "-c", "sleep 8; echo late > result.txt"],
                                                workdir_in=work, attempt=a), every=3, misses=2, attempt=attempt)
        (work / "result.txt").write_text("the other device's\n")
    finally:
        device_control.resume("eb-dev1")
    assert attempt.finished.wait(120), "the abandoned worker never ended"
    assert (work / "result.txt").read_text() == "the other device's\n"
    sdk = docker.DockerClient(base_url=device_sockets[0])
    deadline = time.monotonic() + 60
    while any(c.id in attempt.containers for c in sdk.containers.list(all=True)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not [c.id for c in sdk.containers.list(all=True) if c.id in attempt.containers]


def test_connecting_to_a_frozen_engine_gives_up_within_its_timeout(device_urls, device_control):
    import threading

    from builder.errors import EngineUnreachable
    from builder.host.docker_api import Engine

    outcome: dict = {}

    def connect() -> None:
        try:
            Engine.connect(device_urls[0], timeout=3)
        except EngineUnreachable as exc:
            outcome["error"] = exc.message

    device_control.pause("eb-dev1")
    try:
        started = time.monotonic()
        worker = threading.Thread(target=connect, daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "Engine.connect to a frozen engine is still waiting after 60 s"
        assert "did not answer within" in outcome["error"] and time.monotonic() - started < 20
    finally:
        device_control.resume("eb-dev1")


def test_a_device_that_comes_back_is_readmitted_and_its_abandoned_container_removed(
        device_urls, device_sockets, device_control, docker_engine, base_image):
    import docker

    from builder.errors import DeviceError
    from builder.host.devices import Device, DevicePool
    from builder.host.docker_api import MANAGED_LABEL
    from builder.host.runners.docker import DockerRunner

    sdk = docker.DockerClient(base_url=device_sockets[0])
    left = sdk.containers.run(base_image, ["sleep", "600"], detach=True, labels={MANAGED_LABEL: "1"})
    runner = DockerRunner(docker_engine, echo=lambda line: None)
    device = Device("eb-dev1", device_urls[0], ("rpi",))
    lines: list[str] = []
    pool = DevicePool([device], echo=lines.append, probe=runner.probe, readmit_after=1)
    try:
        device_control.stop("eb-dev1")
        pool.mark_down(device, "stopped answering")
        runner.abandon(device, [left.id])  # as a given-up attempt leaves its container
        time.sleep(1.5)
        with pytest.raises(DeviceError, match="no device of target rpi answers"):
            with pool.device("rpi"):
                pass
        device_control.start("eb-dev1")  # live-restore: the container is there again, running
        sdk = docker.DockerClient(base_url=device_sockets[0])
        assert sdk.containers.get(left.id).status == "running"
        with pool.device("rpi") as chosen:
            assert chosen.name == "eb-dev1"
        assert "device eb-dev1 answers again: back in the pool" in lines
        with pytest.raises(docker.errors.NotFound):
            sdk.containers.get(left.id)
    finally:
        device_control.start("eb-dev1")
        remove_left_behind(device_sockets[0])


def test_an_image_built_on_one_engine_is_pushed_and_pulled_by_another(device_urls, device_sockets, test_registry):
    import docker

    from builder.host import catalog
    from builder.host.images import render_image

    registry = f"{test_registry}/edge-builder-test-{uuid.uuid4().hex[:8]}"  # a repo no earlier run pushed to
    tag = render_image(catalog.load_target("rpi"), "device", engine_platform="linux/amd64").tag
    ref = f"{registry}/{tag.split('/', 1)[1]}"

    def forget(socket: str) -> None:  # the engine has neither the image nor its registry alias
        images = docker.DockerClient(base_url=socket).images
        for name in (tag, ref):
            if any(name in i.tags for i in images.list()):
                images.remove(name, force=True)

    forget(device_sockets[0])
    built = builder("build", "-t", "rpi", "--device", device_urls[0], "--registry", registry)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr
    assert f"building {tag}" in built.stdout and f"pushing {ref}" in built.stdout
    forget(device_sockets[1])
    pulled = builder("build", "-t", "rpi", "--device", device_urls[1], "--registry", registry)
    assert pulled.returncode == 0, pulled.stdout[-3000:] + pulled.stderr
    assert f"image pulled from {ref}" in pulled.stdout and f"building {tag}" not in pulled.stdout
