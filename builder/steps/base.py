"""The step extension point: one class per kind, registered by subclassing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from builder.placement import Placement

if TYPE_CHECKING:
    from builder.config.recipe import Recipe
    from builder.config.target import Target

_REGISTRY: dict[str, type[Step]] = {}


class StepParams(BaseModel):
    """Typed parameters of a step; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepCall:
    """One resolved step of a plan. Paths are relative to the work directory."""

    id: str
    kind: str
    stage: str
    variant: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    workdir: Path
    recipe: Recipe
    target: Target
    call: StepCall
    log: logging.Logger
    placement: Placement = field(default_factory=Placement)

    @property
    def emulated(self) -> bool:
        return self.placement.emulated

    def input(self, name: str) -> Path:
        return self.workdir / self.call.inputs[name]

    def output(self, name: str) -> Path:
        path = self.workdir / self.call.outputs[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def variant(self):
        return self.recipe.variants[self.call.variant]


class Step:
    """Subclass with a `kind` to add a step. `run` returns records for the manifest/results."""

    kind: ClassVar[str] = ""
    stage: ClassVar[str] = "toolchain"
    consumes: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[str | None] = None
    cleans_source: ClassVar[bool] = False  # run on every source of its format before anything else
    summary: ClassVar[str] = ""
    Params: ClassVar[type[StepParams]] = StepParams

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in _REGISTRY:
                raise RuntimeError(f"step kind {cls.kind!r} registered twice")
            _REGISTRY[cls.kind] = cls

    @classmethod
    def recipe_params(cls, recipe: Recipe) -> dict:
        """Params this step takes from the recipe, put in its calls at plan time (a call's own params win)."""
        return {}

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        """Which prepared datasets ("calibration", "validation") this call reads."""
        return ()

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        raise NotImplementedError
