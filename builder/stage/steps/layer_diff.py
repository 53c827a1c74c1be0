"""The `layer_diff` step: where a quantized artifact's error comes from, layer by layer, as its intermediate tensors
against the fp32 artifact's on the same validation samples. `builder run --layer-diff` or the recipe's
`benchmark: {layer_diff: true}` adds it to the plan, for every variant but fp32."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from builder.errors import StepError
from builder.stage import layer_diff, model_explorer
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.stage.steps.measure import runtime_for
from builder.util import atomic_write_bytes

SAMPLES = 4  # validation samples each tensor is compared over
TABLE = "layer_diff_{variant}.csv"
NODE_DATA = "{stem}.error.node_data.json"


class LayerDiff(Step):
    kind = "layer_diff"
    measures = True  # by the device's runtime, whose kernels round int8 their own way: --remeasure runs it again
    stage = "device"
    summary = "per-layer error: each intermediate tensor against fp32's on the same samples (SNR dB, cosine)"

    class Params(StepParams):
        samples: int = Field(SAMPLES, ge=1, description="validation samples compared (the first ones)")
        worst: int = Field(layer_diff.WORST, ge=1, description="layers named as the worst")
        runtime: str = Field(description="the runtime that loads the model, as the validation's")
        reference_runtime: str = Field(description="the runtime that loads the fp32 artifact")
        runtime_options: dict[str, int | float | str | bool] = Field(
            {}, description="options its session needs from the step that made the model, as the validation's")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        return {"runtime": runtime_for(scope)}

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return ("validation",)

    @staticmethod
    def outputs_for(variant: str, artifact: str) -> dict[str, str]:
        """Where the diff of `variant` lands: its table and its Model Explorer node data, beside the artifact."""
        return model_explorer.outputs_beside(artifact, variant, TABLE, NODE_DATA)

    def run(self, ctx: StepContext, params: Params) -> dict:
        if "validation" not in ctx.call.inputs:
            raise StepError("no validation data to compare the layers on",
                            hint="add `validation:` to the recipe, or run without --layer-diff")
        samples = list(np.load(ctx.input("validation"))[:params.samples])
        reference = layer_diff.reader_of(params.reference_runtime)(ctx.input("reference"), samples, {}, ctx.log)
        candidate = layer_diff.reader_of(params.runtime)(ctx.input("model"), samples, params.runtime_options, ctx.log)
        diff = layer_diff.record(reference, candidate, len(samples), params.worst)
        atomic_write_bytes(ctx.output("table"), layer_diff.table_csv(diff))
        node_data = model_explorer.write(ctx.output("node_data"), model_explorer.NodeValues(
            name="noise/signal dB", graph=candidate.graph, values=layer_diff.noise_db(diff["layers"])))
        diff["node_data"] = node_data.name
        worst = diff["layers"][:3]
        ctx.log.info("%d of %d tensors matched fp32's; worst: %s", len(diff["layers"]), len(candidate.tensors),
                     ", ".join(f"{x['name']} ({x['op_type']}) {x['snr_db']:.1f} dB" for x in worst))
        return {"layer_diff": diff}
