"""artifact.copy: a model passed on as it is (a source already in the target's format, or what a step shared
by several variants made), under the variant's artifact name."""

from __future__ import annotations

from builder.stage.steps.base import Step, StepContext, StepParams
from builder.util import atomic_copy


class CopyArtifact(Step):
    kind = "artifact.copy"
    summary = "pass a model through unchanged (e.g. a downloaded model already in the target's format)"

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        for name in ctx.call.outputs:  # the model and the files that are part of it (an IR's weights)
            atomic_copy(ctx.input(name), ctx.output(name))
        return {"passthrough": True}
