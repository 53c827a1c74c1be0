"""Shared pytest fixtures, one section per concern."""

from __future__ import annotations

import os

import pytest

# --- Docker ------------------------------------------------------------------
# Docker tests (marked `docker`) need a real engine: skipped without one, except
# when EDGE_BUILDER_REQUIRE_DOCKER=1 (CI), where a missing engine is a failure.

BASE_IMAGE_AMD64 = "edge-builder/base:bookworm-amd64"
BASE_IMAGE_ARM64 = "edge-builder/base:bookworm-arm64"


def _require_docker() -> bool:
    return os.environ.get("EDGE_BUILDER_REQUIRE_DOCKER") == "1"


def _no_docker(reason: str) -> None:
    if _require_docker():
        pytest.fail(f"{reason} (EDGE_BUILDER_REQUIRE_DOCKER=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine():
    """A connected builder.docker_api.Engine."""
    from builder.docker_api import Engine
    from builder.errors import EngineError

    try:
        return Engine.connect()
    except EngineError as exc:
        _no_docker(f"no Docker engine: {exc.message}")


@pytest.fixture(scope="session")
def base_image(docker_engine) -> str:
    """The local amd64 Debian base image made by .ci/base-images.sh."""
    if docker_engine.image_id(BASE_IMAGE_AMD64) is None:
        _no_docker(f"{BASE_IMAGE_AMD64} missing: run .ci/base-images.sh")
    return BASE_IMAGE_AMD64


@pytest.fixture(scope="session")
def base_image_arm64(docker_engine) -> str:
    """The local arm64 base image, on an engine that can run arm64."""
    ok, why = docker_engine.binfmt_arm64()
    if not ok:
        _no_docker(why)
    if docker_engine.image_id(BASE_IMAGE_ARM64) is None:
        _no_docker(f"{BASE_IMAGE_ARM64} missing: run .ci/base-images.sh")
    return BASE_IMAGE_ARM64
