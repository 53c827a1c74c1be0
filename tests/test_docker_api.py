"""builder.host.docker_api against a real Docker engine (see .ci/engine.sh, .ci/base-images.sh).

The Docker SDK is used here directly only to observe the engine independently
(labels, leftover containers, cleanup).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import docker
import pytest

from builder.errors import BuildError, EngineError, StepError
from builder.host.docker_api import MANAGED_LABEL, Engine
from builder.host.docker_tar import context_tar

TEST_REPO = "edge-builder-test/docker-api"


@pytest.fixture(scope="module")
def sdk(docker_engine) -> docker.DockerClient:
    return docker.DockerClient(base_url=docker_engine.url)


@pytest.fixture(scope="module")
def tag_prefix(sdk) -> str:
    """A unique tag prefix; every image tagged with it is removed afterwards."""
    prefix = uuid.uuid4().hex[:10]
    yield prefix
    for image in sdk.images.list(name=TEST_REPO):
        for tag in image.tags:
            if tag.startswith(f"{TEST_REPO}:{prefix}"):
                sdk.images.remove(tag, force=True)


@pytest.fixture
def run_label() -> dict[str, str]:
    return {"io.edge-builder.test": uuid.uuid4().hex}


def _containers_with(sdk: docker.DockerClient, labels: dict[str, str]) -> list:
    key, value = next(iter(labels.items()))
    return sdk.containers.list(all=True, filters={"label": f"{key}={value}"})


def test_context_tar_is_deterministic():
    files = {"b/x.py": b"print(1)\n", "Dockerfile": b"FROM scratch\n"}
    assert context_tar(files).read() == context_tar(dict(reversed(files.items()))).read()


def test_unreachable_engine_is_an_engine_error_fast(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    start = time.monotonic()
    with pytest.raises(EngineError) as info:
        Engine.connect()
    assert time.monotonic() - start < 3
    assert info.value.message.startswith("Docker engine not reachable at tcp://127.0.0.1:1: ")
    assert "refused" in info.value.message.lower()
    assert "DOCKER_HOST" in info.value.hint
    ok, why = Engine.available()
    assert not ok and "127.0.0.1:1" in why


@pytest.mark.docker
def test_engine_reports_itself(docker_engine):
    ok, why = Engine.available()
    assert ok and docker_engine.url in why
    assert docker_engine.arch in {"amd64", "arm64"}
    assert docker_engine.version[0].isdigit()


@pytest.mark.docker
def test_connect_follows_the_current_docker_context(docker_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    for args in (["create", "eb-test", "--docker", f"host={docker_engine.url}"], ["use", "eb-test"]):
        subprocess.run(["docker", "context", *args], check=True, capture_output=True)
    engine = Engine.connect()
    assert (engine.url, engine.version) == (docker_engine.url, docker_engine.version)


@pytest.mark.docker
def test_build_tags_and_caches(docker_engine, base_image, tag_prefix, sdk):
    tag = f"{TEST_REPO}:{tag_prefix}-ok"
    context = {
        "Dockerfile": f"FROM {base_image}\nARG GREETING\nCOPY app/hello.txt /hello.txt\n"
        'RUN python3 -c "print(open(\'/hello.txt\').read().upper())" > /shout.txt\n'.encode(),
        "app/hello.txt": f"hello edge {tag_prefix}\n".encode(),  # new content: the first build really runs
    }
    lines: list[str] = []
    labels = {"io.edge-builder.test": tag_prefix}
    options = {"context": context, "tag": tag, "buildargs": {"GREETING": "hi"}, "labels": labels}
    image_id = docker_engine.build(**options, on_log=lines.append)
    assert image_id.startswith("sha256:")
    assert docker_engine.image_id(tag) == image_id
    assert sdk.images.get(tag).labels["io.edge-builder.test"] == tag_prefix
    assert any(line.startswith("Step 1/") for line in lines)

    again: list[str] = []
    start = time.monotonic()
    assert docker_engine.build(**options, on_log=again.append) == image_id
    assert time.monotonic() - start < 5
    assert sum("Using cache" in line for line in again) >= 3

    out = docker_engine.exec_python(tag, "print(open('/shout.txt').read().strip())")
    assert out.strip() == f"HELLO EDGE {tag_prefix.upper()}"


@pytest.mark.docker
def test_undeclared_proxy_build_args_reach_run_but_not_the_image(docker_engine, base_image, tag_prefix, sdk):
    tag = f"{TEST_REPO}:{tag_prefix}-proxy"
    secret = "s3cr3t-" + tag_prefix
    proxy = f"http://user:{secret}@127.0.0.1:3128"
    dockerfile = f"FROM {base_image}\nARG OTHER\nRUN test -n \"$HTTPS_PROXY\" && echo proxy-len-${{#HTTPS_PROXY}}\n"
    lines: list[str] = []
    image_id = docker_engine.build(
        context={"Dockerfile": dockerfile.encode()}, tag=tag, on_log=lines.append,
        buildargs={"HTTPS_PROXY": proxy, "OTHER": "visible"},
    )  # fmt: skip
    assert f"proxy-len-{len(proxy)}" in lines
    recorded = repr(sdk.api.history(image_id)) + repr(sdk.api.inspect_image(image_id))
    assert "OTHER=visible" in recorded and secret not in recorded


@pytest.mark.docker
def test_failing_build_raises_with_log_tail_and_leaves_no_tag(docker_engine, base_image, tag_prefix):
    tag = f"{TEST_REPO}:{tag_prefix}-broken"
    dockerfile = f"FROM {base_image}\nRUN echo before-the-failure-7f3a && ls /no/such/dir\n"
    with pytest.raises(BuildError) as info:
        docker_engine.build(context={"Dockerfile": dockerfile.encode()}, tag=tag)
    assert tag in info.value.message and "returned a non-zero code: 2" in info.value.message
    assert any("before-the-failure-7f3a" in line for line in info.value.log_tail)
    assert any("/no/such/dir" in line for line in info.value.log_tail)
    assert docker_engine.image_id(tag) is None


@pytest.mark.docker
@pytest.mark.parametrize(
    ("dockerfile", "message", "hint"),
    [
        ("FROM {base}\nFROBNICATE x\n", "unknown instruction: FROBNICATE", "fix the Dockerfile"),
        ("FROM edge-builder-test/no-such-base:1\n", "failed: ", "base-images.sh"),
    ],
)
def test_bad_dockerfile_and_missing_base_are_build_errors(docker_engine, base_image, tag_prefix, dockerfile, message,
                                                          hint):  # fmt: skip
    tag = f"{TEST_REPO}:{tag_prefix}-bad"
    with pytest.raises(BuildError) as info:
        docker_engine.build(context={"Dockerfile": dockerfile.format(base=base_image).encode()}, tag=tag)
    assert message in info.value.message and hint in info.value.hint
    assert docker_engine.image_id(tag) is None


@pytest.mark.docker
def test_run_copies_work_dir_in_and_out(docker_engine, base_image, tmp_path, run_label, sdk):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "input.txt").write_text("21\n")
    (tmp_path / "work" / "nested").mkdir()
    (tmp_path / "work" / "nested" / "keep.bin").write_bytes(bytes(range(256)))
    code = (
        "import os, pathlib; n = int(open('input.txt').read());"
        "pathlib.Path('out').mkdir(); pathlib.Path('out/result.txt').write_text(str(2 * n));"
        "os.symlink('result.txt', 'out/link'); os.symlink('/etc/passwd', 'escape');"
        "print('uid', os.getuid(), 'cwd', os.getcwd(), 'n', n)"
    )
    lines: list[str] = []
    result = docker_engine.run(
        image=base_image, command=["python3", "-c", code], workdir_in=tmp_path / "work",
        user="4321", labels=run_label, on_log=lines.append,
    )  # fmt: skip
    assert result.exit_code == 0, result.log_tail
    assert lines == ["uid 4321 cwd /work n 21"] == result.log_tail
    result_file = tmp_path / "work" / "out" / "result.txt"
    assert result_file.read_text() == "42"
    assert result_file.stat().st_uid == os.getuid()  # written by us, not by uid 4321
    assert os.readlink(tmp_path / "work" / "out" / "link") == "result.txt"
    assert not (tmp_path / "work" / "escape").exists()  # absolute link out of the work dir: skipped
    assert (tmp_path / "work" / "nested" / "keep.bin").read_bytes() == bytes(range(256))
    assert _containers_with(sdk, run_label) == []


@pytest.mark.docker
def test_run_nonzero_exit_returns_code_and_tail(docker_engine, base_image, tmp_path, run_label, sdk):
    script = "for i in $(seq 1 40); do echo line-$i; done; echo boom-on-stderr >&2; exit 3"
    result = docker_engine.run(
        image=base_image, command=["sh", "-c", script], workdir_in=tmp_path, labels=run_label,
        env={"UNUSED": "1"}, network="none",
    )  # fmt: skip
    assert result.exit_code == 3
    assert len(result.log_tail) == 30
    assert result.log_tail[0] == "line-12"
    assert result.log_tail[-1] == "boom-on-stderr"  # stderr keeps its place after stdout
    assert _containers_with(sdk, run_label) == []

    code = "for i in range(40): print('progress', i)\nraise RuntimeError('conversion exploded')"
    result = docker_engine.run(image=base_image, command=["python3", "-c", code], labels=run_label)
    assert result.exit_code == 1
    assert result.log_tail[-1] == "RuntimeError: conversion exploded"
    assert "progress 39" in result.log_tail


@pytest.mark.docker
def test_interrupted_run_removes_its_container(docker_engine, base_image, run_label, sdk):
    seen: list = []

    def interrupt(line: str) -> None:
        seen.extend(_containers_with(sdk, run_label))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        docker_engine.run(
            image=base_image, command=["sh", "-c", "echo started; sleep 60"], labels=run_label,
            on_log=interrupt,
        )  # fmt: skip
    assert [(c.status, c.labels[MANAGED_LABEL]) for c in seen] == [("running", "1")]
    assert _containers_with(sdk, run_label) == []


@pytest.mark.docker
def test_run_of_missing_image_is_an_engine_error(docker_engine, run_label):
    with pytest.raises(EngineError) as info:
        docker_engine.run(image=f"{TEST_REPO}:does-not-exist", command=["true"], labels=run_label)
    assert "image not found" in info.value.message


@pytest.mark.docker
def test_exec_python_returns_stdout_or_raises(docker_engine, base_image):
    assert docker_engine.exec_python(base_image, "import sys; print(sys.version_info[:2])").strip() == "(3, 11)"
    with pytest.raises(StepError) as info:
        docker_engine.exec_python(base_image, "import not_a_module_xyz")
    assert "ModuleNotFoundError" in info.value.message


@pytest.mark.docker
def test_arm64_runs_under_emulation(docker_engine, base_image_arm64, run_label):
    ok, why = docker_engine.binfmt_arm64()
    assert ok, why
    result = docker_engine.run(
        image=base_image_arm64, command=["uname", "-m"], platform="linux/arm64", labels=run_label
    )
    assert (result.exit_code, result.log_tail) == (0, ["aarch64"])
    assert docker_engine.exec_python(base_image_arm64, "import platform; print(platform.machine())",
                                     platform="linux/arm64").strip() == "aarch64"  # fmt: skip
