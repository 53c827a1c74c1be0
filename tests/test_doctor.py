"""`builder doctor` against the real engine: every check is shown, problems exit 1 with their fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECKS = ("docker engine", "arm64 (", "NVIDIA container runtime", "base image edge-builder/base:bookworm-amd64",
          "base image edge-builder/base:bookworm-arm64", "free disk at", "proxy:", "CA bundle:", "pip index:")


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.cli", "doctor", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250", **env}, timeout=120)


def lines_of(proc: subprocess.CompletedProcess, mark: str) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith(mark)]


@pytest.mark.docker
def test_every_check_passes_on_a_prepared_engine(docker_engine, base_image, base_image_arm64):
    proc = doctor()
    assert proc.returncode == 0, proc.stdout
    for name in CHECKS:
        assert any(name in line for line in lines_of(proc, "✓")), name
    assert lines_of(proc, "✗") == []


@pytest.mark.docker
def test_a_missing_base_image_is_a_problem_with_its_fix(docker_engine, base_image, tmp_path):
    mapping = tmp_path / "bases.yaml"
    mapping.write_text("python:3.11-slim-bookworm: edge-builder-test/no-such-base:1\n")
    proc = doctor(EDGE_BUILDER_BASE_IMAGES=str(mapping))
    assert proc.returncode == 1
    problems = lines_of(proc, "✗")
    assert problems and all("base image edge-builder-test/no-such-base:1" in p for p in problems)
    assert any("(linux/arm64)" in p and "rpi device" in p for p in problems)
    assert "fix: docker pull it, or map it" in proc.stdout


def test_unreachable_engine_and_bad_ca_bundle_are_problems_and_the_rest_still_runs(tmp_path):
    proc = doctor("--ca-bundle", str(tmp_path / "missing.pem"), DOCKER_HOST="tcp://127.0.0.1:1")
    assert proc.returncode == 1
    problems = lines_of(proc, "✗")
    assert [p.split(":")[0] for p in problems] == ["✗ docker engine", "✗ CA bundle"]
    assert "127.0.0.1:1" in problems[0] and "missing.pem" in problems[1]
    assert proc.stdout.count("fix:") == 2
    assert any("free disk at" in line for line in lines_of(proc, "✓"))


def test_proxy_credentials_are_never_printed():
    proc = doctor(DOCKER_HOST="tcp://127.0.0.1:1", HTTPS_PROXY="http://alice:s3cret@proxy.corp:3128")
    assert "s3cret" not in proc.stdout + proc.stderr
    assert "HTTPS_PROXY=http://***@proxy.corp:3128" in proc.stdout
