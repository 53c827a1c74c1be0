"""artifact.copy: a source already in the target's format becomes the fp32 artifact as it is."""

from __future__ import annotations

from builder.steps.base import Step, StepContext, StepParams
from builder.util import atomic_copy


class CopyArtifact(Step):
    kind = "artifact.copy"
    summary = "pass a model through unchanged (e.g. a downloaded .tflite)"

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        atomic_copy(ctx.input("model"), ctx.output("model"))
        if ctx.input("model").suffix != ".tflite":
            return {"passthrough": True}
        from builder.convert.tflite_float import describe

        stored = describe(ctx.input("model"))  # a "float" .tflite may store fp16 weights behind DEQUANTIZE
        return {"passthrough": True, "source": stored, "weights_stored_as": "fp16" if stored["fp16_weights"] else None}
