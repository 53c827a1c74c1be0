"""The target: HOW to build for one kind of hardware. Pure data, one YAML file each.

What it names in the registries (steps, formats, runtimes) is checked when it is loaded (registry_refs.py); the
option sections backends add to it are validated with it (config/sections.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from builder.config.common import Platform, Precision, Strict
from builder.config.sections import Sectioned

ID_RE = r"^[a-z0-9][a-z0-9-]*$"


class BaseProvides(Strict):
    """Something the image needs that its base image may lack: installed with apt when `check` fails."""

    check: str = Field(description="a shell command that succeeds when the base image has it")
    apt: str = Field(pattern=r"^[a-z0-9][a-z0-9.+-]*$", description="the Debian/Ubuntu package that provides it")
    install_stage: bool = Field(False, description="the install stage needs it too (python3-venv, pip)")


class ImageSpec(Strict):
    """One toolchain or device image: a template, a base image and a locked package set."""

    template: str = Field(description="file name in dockerfiles/")
    base: str = Field(description="FROM image; map it to a local one with a base-image map")
    lock: str = Field(description="dockerfiles/locks/<lock>.txt: the exact packages installed")
    platform: Platform | None = Field(None, description="default: toolchain = engine's arch, device = target platform")
    apt: list[str] = Field([], description="Debian packages the image needs")
    smoke: list[str] = Field([], description="Python modules the image's smoke test imports")
    run_smoke: list[str] = Field([], description="Python modules imported in the image's first container run, "
                                 "with the device stage's runtime flags, not at build (a GPU's container runtime "
                                 "mounts the libraries its SDK loads only into running containers)")
    base_provides: list[BaseProvides] = Field([], description="what the base image is expected to carry, each "
                                              "checked at build and installed with apt where it is missing")
    system_site_packages: bool = Field(False, description="the venv also sees the base image's Python packages "
                                       "(a board's SDK bindings may come with its base image, not from PyPI)")


class Images(Strict):
    toolchain: ImageSpec
    device: ImageSpec


class ChainStep(Strict):
    """One step of the chain that turns a model into one precision of this target's format."""

    step: str
    params: dict[str, object] = {}  # keys are keyword arguments of the step


class Requires(Strict):
    """What the device stage needs from the engine it runs on."""

    container_runtime: str | None = Field(None, description="the OCI runtime its containers run with, by the "
                                          "engine's name for it (`docker info`), e.g. the one that reaches a GPU")
    groups: list[str] = Field([], description="supplementary groups of the container user (those that own a GPU's "
                              "device nodes, e.g. `video`)")
    environment: dict[str, str] = Field({}, description="environment of the device stage's containers")
    note: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _runtime_flag(cls, data):
        """A target written before `container_runtime` says `<name>_runtime: true` (false asks for nothing)."""
        if isinstance(data, dict) and "container_runtime" not in data:
            flags = [key for key, value in data.items() if key.endswith("_runtime") and isinstance(value, bool)]
            if len(flags) == 1:
                asked = data[flags[0]]
                data = {k: v for k, v in data.items() if k != flags[0]}
                if asked:
                    data["container_runtime"] = flags[0].removesuffix("_runtime")
        return data


class Target(Sectioned):
    section_owner = "target"  # and the option sections the backends register for targets (config/sections.py)

    id: str = Field(pattern=ID_RE)
    name: str
    description: str = ""
    platform: Platform
    accelerator: Literal["cpu", "gpu", "npu"] = "cpu"
    format: str = Field(description="the model format it ships (`builder formats`)")
    runtime: str = Field(description="the runtime that runs its format on the device")
    variants: dict[Precision, list[ChainStep]] = Field(min_length=1, description="precision -> steps producing it")
    images: Images
    device_only: list[str] = Field([], description="step kinds that must run on the device itself")
    requires: Requires = Requires()

    @field_validator("variants", mode="before")
    @classmethod
    def _single_step_shorthand(cls, variants):
        if isinstance(variants, dict):
            return {k: [v] if isinstance(v, dict) else v for k, v in variants.items()}
        return variants

    @field_validator("variants")
    @classmethod
    def _fp32_first(cls, variants: dict) -> dict:
        if "fp32" not in variants:
            raise ValueError("every target needs an fp32 rule: it is the validation reference")
        return variants

    @property
    def precisions(self) -> list[str]:
        return list(self.variants)
