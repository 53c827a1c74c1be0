"""reference.source: the source model's own outputs on the validation set, the truth every artifact is held to.

Validation against the fp32 artifact cannot see a wrong conversion: the fp32 artifact
always agrees with itself. So the source is run once, in the framework it came in,
and every variant (fp32 included) is also compared with these outputs.
"""

from __future__ import annotations

import io

import numpy as np
from pydantic import Field

from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.stage.steps.onnx import TORCH_FORMATS
from builder.util import atomic_write_bytes


class SourceOutputs(Step):
    kind = "reference.source"
    summary = "run the source model in its own framework on the validation samples; every variant is compared with it"

    class Params(StepParams):
        format: str
        factory: str | None = Field(None, description="a PyTorch source's source.torch.factory")
        input_shape: list[int] | None = Field(None, description="a PyTorch source's example input: input.shape")
        trust_remote_code: bool = Field(False, description="import the factory from outside installed packages "
                                        "(--trust-remote-code)")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        if params.get("format") not in TORCH_FORMATS:
            return {}
        torch = scope.source.torch
        return {"factory": torch.factory if torch else None, "input_shape": scope.recipe.input.shape,
                "trust_remote_code": scope.trust_remote_code}

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return ("validation",)

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.stage.convert.source_run import run_source

        samples = np.load(ctx.input("validation"))
        outputs = list(run_source(ctx.input("model"), params.format, samples, factory=params.factory,
                                  input_shape=params.input_shape, trusted=params.trust_remote_code))
        stacked = {f"output_{i}": np.stack([o[i] for o in outputs]) for i in range(len(outputs[0]))}
        buffer = io.BytesIO()
        np.savez(buffer, **stacked)
        atomic_write_bytes(ctx.output("outputs"), buffer.getvalue())
        ctx.log.info("source (%s) run on %d samples: %d output(s)", params.format, len(samples), len(stacked))
        return {"source_outputs": {"format": params.format, "samples": len(samples),
                                   "shapes": {k: list(v.shape[1:]) for k, v in stacked.items()}}}


def load_source_outputs(path, chosen: tuple[int, ...]) -> list[list[np.ndarray]]:
    """Per chosen sample, the source's outputs in its order."""
    with np.load(path) as data:
        arrays = [data[f"output_{i}"] for i in range(len(data.files))]
    return [[a[n] for a in arrays] for n in chosen]
