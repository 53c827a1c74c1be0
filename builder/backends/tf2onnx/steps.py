"""The tf2onnx step: a SavedModel or .tflite -> ONNX."""

from __future__ import annotations

from pydantic import Field

from builder.backends.tf2onnx.convert import tf_to_onnx
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.stage.steps.layout import Layout, layout_params


class TfToOnnx(Step):
    kind = "convert.tf_onnx"
    tool = "tf2onnx"
    consumes = ("saved_model", "tflite")
    produces = "onnx"
    summary = "tf2onnx: SavedModel or .tflite -> ONNX"

    class Params(StepParams):
        opset: int = 17
        layout: Layout = Field("NHWC", description="the input model's tensor layout (resolved by the plan)")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        return {"layout": layout_params(scope)["layout"]}

    @classmethod
    def output_layout(cls, params: dict, scope: PlanScope) -> str | None:
        return "NCHW" if scope.format == "tflite" and params["layout"] == "NHWC" else params["layout"]

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.stage.runtimes import load

        model = ctx.input("model")
        fmt = "tflite" if model.suffix == ".tflite" else "saved_model"
        nchw = None
        if fmt == "tflite" and params.layout == "NHWC":  # hand ONNX the NCHW layout it is meant for
            nchw = [t.name for t in load(model).inputs if len(t.shape) == 4]
        report = tf_to_onnx(model, ctx.output("model"), source_format=fmt, opset=params.opset, nchw_inputs=nchw)
        return {"tf2onnx": report}
