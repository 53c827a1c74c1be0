"""artifact.copy: a source already in the target's format becomes the fp32 artifact as it is."""

from __future__ import annotations

from builder.steps.base import Step, StepContext, StepParams
from builder.util import atomic_copy


class CopyArtifact(Step):
    kind = "artifact.copy"
    summary = "pass a model through unchanged (e.g. a downloaded OpenVINO IR)"

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        atomic_copy(ctx.input("model"), ctx.output("model"))
        return {"passthrough": True}
