"""quantize.ort: ONNX Runtime's dynamic quantization, or static QDQ with calibration, with the options the step,
the variant and the target give (OrtStaticOptions, which the accuracy-aware search.ort shares)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.backends.onnxruntime import quantize
from builder.backends.onnxruntime.options import OrtQuantization
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.stage.steps.layout import LayoutParams, layout_params, samples_for


class OrtStaticOptions(StepParams):
    """ONNX Runtime's static int8 options: the step's own (what TensorRT needs), the variant's and the target's."""

    symmetric_activations: bool = Field(
        False, description="activations with zero point 0 (TensorRT's explicit quantization needs it)")
    quantize_bias: bool = Field(True, description="int32 biases behind DequantizeLinear; false keeps them float")
    per_channel: bool = Field(True, description="the variant's per_channel")
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="the variant's calibration_method")
    ort_quantization: OrtQuantization = Field(OrtQuantization(), description="the target's")

    @staticmethod
    def resolve(scope: PlanScope) -> dict:
        """The variant's and the target's options."""
        variant = scope.variant_spec
        return {"ort_quantization": scope.target.section("ort_quantization").model_dump(mode="json"),
                **({"per_channel": variant.per_channel, "calibration_method": variant.calibration_method} if variant else {})}

    def static(self) -> dict:
        """quantize.ort_quantize_static's keyword arguments."""
        return {"method": self.calibration_method, "per_channel": self.per_channel,
                "activation_type": self.ort_quantization.activation_type, "reduce_range": self.ort_quantization.reduce_range,
                "symmetric_activations": self.symmetric_activations, "quantize_bias": self.quantize_bias}


class QuantizeOrt(Step):
    kind = "quantize.ort"
    consumes = ("onnx",)
    produces = "onnx"
    summary = ("ONNX Runtime quantization: dynamic, or static QDQ with calibration "
               "(int8 weights; activations and weight range as the target's ort_quantization says)")

    class Params(OrtStaticOptions, LayoutParams):
        precision: Literal["dynamic", "int8"] = "int8"
        io_dtype: str | None = Field(None, description="the variant's io_dtype: not applied, only warned about")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        variant = scope.variant_spec
        if params.get("precision", "int8") == "int8":
            return layout_params(scope) | OrtStaticOptions.resolve(scope) | ({"io_dtype": variant.io_dtype} if variant else {})
        return {"per_channel": variant.per_channel, "io_dtype": variant.io_dtype} if variant else {}

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return ("calibration",) if params.get("precision", "int8") == "int8" else ()

    def run(self, ctx: StepContext, params: Params) -> dict:
        if params.precision == "dynamic":
            report = quantize.ort_quantize_dynamic(ctx.input("model"), ctx.output("model"), per_channel=params.per_channel)
        else:
            report = quantize.ort_quantize_static(ctx.input("model"), ctx.output("model"),
                                                    samples_for(ctx.input("calibration"), params), **params.static())
        io_dtype = quantize.input_dtype(ctx.output("model"))
        if params.io_dtype and params.io_dtype != io_dtype:
            ctx.log.warning("io_dtype %s not applied: ONNX Runtime quantization keeps the model's %s inputs",
                            params.io_dtype, io_dtype)
        return {"quantization": report, "io_dtype": io_dtype}
