"""The step extension point: one class per kind, registered by subclassing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

from builder.placement import Placement
from builder.plan import StepCall

if TYPE_CHECKING:
    from builder.config.recipe import Recipe, Source, Variant
    from builder.config.target import Target

_REGISTRY: dict[str, type[Step]] = {}


class StepParams(BaseModel):
    """Typed parameters of a step; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class PlanScope:
    """What a call's params are resolved from at plan time: nothing else is read when it runs."""

    recipe: Recipe
    target: Target
    source: Source  # the fetched source (the recipe's, or its fallback)
    variant: str | None  # the variant whose chain asks for the call
    format: str | None = None  # the call's input model: its format and tensor layout
    layout: str | None = None
    trust_remote_code: bool = False  # the user runs the recipe's own code (--trust-remote-code)

    @property
    def variant_spec(self) -> Variant | None:
        return self.recipe.variants[self.variant] if self.variant else None


@dataclass
class StepContext:
    """What a running step sees: its call (resolved params, declared inputs and outputs), not the recipe."""

    workdir: Path
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


class Step:
    """Subclass with a `kind` to add a step. `run` returns records for the manifest/results."""

    kind: ClassVar[str] = ""
    stage: ClassVar[str] = "toolchain"
    consumes: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[str | None] = None
    cleans_source: ClassVar[bool] = False  # run on every source of its format before anything else
    measures: ClassVar[bool] = False  # a measurement of the device it ran on: rerun by --remeasure
    summary: ClassVar[str] = ""
    tool: ClassVar[str | None] = None  # the vendor tool whose errors it reports, as a failure's hint names it
    Params: ClassVar[type[StepParams]] = StepParams

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in _REGISTRY:
                raise RuntimeError(f"step kind {cls.kind!r} registered twice")
            _REGISTRY[cls.kind] = cls

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        """Params this call takes from the recipe, target or variant, given its own `params` (which win)."""
        return {}

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        """Which prepared datasets ("calibration", "validation", "labels") this call reads."""
        return ()

    @classmethod
    def file_inputs(cls, params: dict) -> dict[str, str]:
        """Other files this call reads besides its model: name -> path in the work directory."""
        return {}

    @classmethod
    def side_outputs(cls, model: str) -> dict[str, str]:
        """Files this step writes beside the model it makes at `model`: name -> path."""
        return {}

    @classmethod
    def own_outputs(cls, params: dict, inputs: dict[str, str]) -> dict[str, str]:
        """Files this call writes that its resolved `params` decide (a benchmark's LoadGen logs): name -> path."""
        return {}

    @classmethod
    def measure_inputs(cls, call: StepCall) -> dict[str, str]:
        """Files the benchmark and validation of the model this call made read besides it."""
        return {}

    @classmethod
    def output_layout(cls, params: dict, scope: PlanScope) -> str | None:
        """The tensor layout of the model this call makes (by default, its input's)."""
        return scope.layout

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        raise NotImplementedError
