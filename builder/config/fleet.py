"""The fleet: the devices whose Docker engines run device stages. Pure data, one YAML file.

    registry: 127.0.0.1:5000/edge-builder      # optional: images pushed once, pulled by every engine
    devices:
      - name: pi5-lab
        targets: [rpi, arm-npu]
        engine: ssh://pi@pi5-lab.local         # ssh://, tcp:// (with tls:), unix://, or a Docker context name
        labels: {board: Raspberry Pi 5, soc: BCM2712}
        jobs: 1                                # device stages at once (1: a benchmark has the device alone)

Given with `--fleet FILE` or EDGE_BUILDER_FLEET; `builder schema fleet` prints the JSON Schema.
"""

from __future__ import annotations

import re

from pydantic import Field, FilePath, field_validator, model_validator

from builder.config.common import Strict

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SCHEMES = ("ssh://", "tcp://", "unix://", "npipe://", "http://", "https://")
_REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$")


class EngineTLS(Strict):
    """Client certificates for a `tcp://` engine protected by TLS (as for `docker --tlsverify`)."""

    ca_cert: FilePath = Field(description="CA certificate that signed the engine's certificate")
    client_cert: FilePath = Field(description="this client's certificate")
    client_key: FilePath = Field(description="this client's key")


class DeviceSpec(Strict):
    name: str = Field(pattern=NAME_RE, description="how commands and results name the device")
    targets: list[str] = Field(min_length=1, description="target ids whose device stages this device runs")
    engine: str = Field(description="engine URL (ssh://user@host, tcp://host:2376, unix://...) or a Docker context name")
    tls: EngineTLS | None = Field(None, description="client certificates for a tcp:// engine")
    labels: dict[str, str] = Field({}, description="free-form facts shown by `builder devices` (board, SoC, ...)")
    jobs: int = Field(1, ge=1, le=16, description="device stages at once; keep 1 so a benchmark has the device alone")

    @field_validator("engine")
    @classmethod
    def _engine_form(cls, engine: str) -> str:
        if "://" in engine and not engine.startswith(_SCHEMES):
            raise ValueError(f"engine {engine!r}: use ssh://, tcp://, unix:// or a Docker context name")
        return engine

    @model_validator(mode="after")
    def _tls_needs_tcp(self):
        if self.tls and not self.engine.startswith(("tcp://", "https://")):
            raise ValueError("tls: client certificates apply to a tcp:// engine only")
        return self


class Fleet(Strict):
    registry: str | None = Field(None, description="HOST[:PORT]/REPO that images are pushed to and pulled from")
    devices: list[DeviceSpec] = Field([], description="the devices")

    @field_validator("registry")
    @classmethod
    def _registry_form(cls, registry: str | None) -> str | None:
        return check_registry(registry) if registry else None

    @field_validator("devices")
    @classmethod
    def _unique_names(cls, devices: list[DeviceSpec]) -> list[DeviceSpec]:
        names = [d.name for d in devices]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(f"device name(s) used twice: {', '.join(doubles)}")
        return devices


def check_registry(registry: str) -> str:
    """`HOST[:PORT]/REPO` without a scheme or a tag: where content-hash tags are pushed."""
    if not _REGISTRY_RE.match(registry):
        raise ValueError(f"registry {registry!r}: expected HOST[:PORT]/REPO, e.g. registry.corp:5000/edge-builder")
    return registry.rstrip("/")
