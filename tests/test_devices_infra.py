"""The stand-in devices that .ci/devices.sh makes for the device tests, checked for real.

Two Docker engines reached over ssh:// (as a device's engine is), a registry that the build
engine pushes to and the devices pull from, and faults on demand: a device engine stopped
(its calls fail at once) or paused (its calls hang) and then restored.
"""

from __future__ import annotations

import io
import threading
import time
import uuid

import docker
import pytest

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def build_client(docker_engine):
    """docker-py on the build engine (DOCKER_HOST, as the docker_engine fixture found it)."""
    client = docker.from_env(timeout=300)
    yield client
    client.close()


def test_each_device_answers_over_ssh_and_is_its_own_engine(device_urls, device_sockets, device_client,
                                                           build_client, base_image):
    build_id = build_client.info()["ID"]
    seen = set()
    for url, socket in zip(device_urls, device_sockets):
        over_ssh = device_client(url)
        info = over_ssh.info()
        assert info["ID"] == device_client(socket).info()["ID"], f"{url} is not the engine at {socket}"
        assert info["ID"] != build_id, f"{url} is the build engine"
        assert info["ID"] not in seen, f"{url} is the same engine as another device"
        seen.add(info["ID"])
        # A container runs there and its output comes back through `docker system dial-stdio`.
        # (Not containers.run(): with the ssh client its streamed logs keep an ssh process alive
        # until the interpreter exits, which prints a BrokenPipeError then if the device was stopped.)
        container = over_ssh.containers.run(base_image, ["uname", "-m"], detach=True, network_mode="none")
        try:
            assert container.wait(timeout=60)["StatusCode"] == 0
            assert container.logs().decode().strip() == "x86_64"
        finally:
            container.remove(force=True)


def test_an_image_pushed_from_the_build_engine_is_pulled_and_run_on_a_device(
        test_registry, device_urls, device_client, build_client, base_image):
    token = uuid.uuid4().hex[:12]
    repo = f"{test_registry}/edge-builder/devices-infra"
    ref = f"{repo}:{token}"
    dockerfile = f"FROM {base_image}\nRUN echo {token} > /token\n".encode()
    image, _ = build_client.images.build(fileobj=io.BytesIO(dockerfile), tag=ref, network_mode="none",
                                         rm=True, forcerm=True)
    device = device_client(device_urls[0])
    try:
        errors = [line["error"] for line in build_client.images.push(repo, tag=token, stream=True, decode=True)
                  if "error" in line]
        assert not errors, f"push {ref}: {errors}"
        pulled = device.images.pull(repo, tag=token)
        assert pulled.id == image.id
        container = device.containers.run(ref, ["cat", "/token"], detach=True, network_mode="none")
        try:
            assert container.wait(timeout=60)["StatusCode"] == 0
            assert container.logs().decode().strip() == token
        finally:
            container.remove(force=True)
    finally:
        for client in (device, build_client):
            try:
                client.images.remove(ref, force=True)
            except docker.errors.NotFound:
                pass


def test_a_device_stopped_mid_stage_drops_its_calls_and_comes_back_with_its_container(
        device_urls, device_sockets, device_client, device_control, base_image):
    url, socket = device_urls[-1], device_sockets[-1]
    client = device_client(url)
    container = client.containers.run(base_image, ["sleep", "300"], detach=True, network_mode="none")
    try:
        waiting: dict[str, object] = {}

        def wait() -> None:  # a call in flight when the device goes away
            try:
                waiting["result"] = container.wait()
            except Exception as exc:  # noqa: BLE001 - the failure is what is checked
                waiting["error"] = exc

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(1)
        device_control.stop(url)
        thread.join(30)
        assert "error" in waiting, f"the call in flight did not fail: {waiting or 'still blocked'}"
        started = time.monotonic()
        with pytest.raises((docker.errors.DockerException, ConnectionError, OSError)):
            client.ping()
        assert time.monotonic() - started < 10, "a stopped device should fail fast, not time out"
        assert device_control.answers(url, seconds=10) is not None

        device_control.start(url)
        assert client.ping()
        container.reload()
        assert container.status == "running"  # live-restore: the engine came back under it
        assert client.images.get(base_image)  # and its data root survived
    finally:
        device_client(socket).containers.get(container.id).remove(force=True)


def test_a_paused_device_hangs_and_answers_again_after_resume(device_urls, device_control):
    url = device_urls[-1]
    device_control.pause(url)
    why = device_control.answers(url, seconds=3)
    assert why is not None and "no answer within" in why, why
    device_control.resume(url)
    assert device_control.answers(url, seconds=30) is None
