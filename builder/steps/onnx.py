"""ONNX hub steps (seed 004's map): PyTorch/TF -> ONNX, hygiene, ONNX -> SavedModel, ORT quantization."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.config.onnx2tf import Onnx2tfOptions
from builder.config.recipe import Recipe
from builder.steps.base import Step, StepContext, StepParams
from builder.steps.layout import layout_of, samples_for, set_layout
from builder.util import remove


def _input_shapes(ctx: StepContext) -> dict[str, list[int]] | None:
    spec = ctx.recipe.input
    return {spec.name: spec.shape} if spec.name else None


class SimplifyOnnx(Step):
    kind = "onnx.simplify"
    consumes = ("onnx",)
    produces = "onnx"
    cleans_source = True
    summary = "check, simplify, fix static shapes; ONNX Runtime proves outputs unchanged"

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        from builder.convert import onnx as onnx_convert

        onnx_convert.check_onnx(ctx.input("model"))
        return {"simplify": onnx_convert.simplify_onnx(ctx.input("model"), ctx.output("model"), input_shapes=_input_shapes(ctx))}


class TorchToOnnx(Step):
    kind = "convert.torch_onnx"
    consumes = ("pytorch_state_dict", "torchscript", "exported_program")
    produces = "onnx"
    summary = "torch.onnx export (factory + state dict, TorchScript or ExportedProgram), then simplify"

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        from builder.convert import onnx as onnx_convert

        source = ctx.recipe.source
        torch_cfg = source.torch
        fmt = source.resolved_format
        model = ctx.input("model")
        raw = ctx.output("model").with_name("exported.onnx")
        export = onnx_convert.torch_to_onnx(
            raw,
            input_shape=ctx.recipe.input.shape,
            factory=torch_cfg.factory if torch_cfg else None,
            state_dict=model if fmt == "pytorch_state_dict" else None,
            torchscript=model if fmt == "torchscript" else None,
            exported_program=model if fmt == "exported_program" else None,
            **(torch_cfg.model_dump(include={"opset", "input_names", "output_names", "dynamic_axes"}) if torch_cfg else {}),
        )
        simplify = onnx_convert.simplify_onnx(raw, ctx.output("model"), input_shapes=_input_shapes(ctx))
        remove(raw)
        return {"export": export, "simplify": simplify}


class TfToOnnx(Step):
    kind = "convert.tf_onnx"
    consumes = ("saved_model", "tflite")
    produces = "onnx"
    summary = "tf2onnx: SavedModel or .tflite -> ONNX"

    class Params(StepParams):
        opset: int = 17

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.convert import onnx as onnx_convert
        from builder.runtimes import load

        model = ctx.input("model")
        fmt = "tflite" if model.suffix == ".tflite" else "saved_model"
        nchw = None
        if fmt == "tflite" and layout_of(ctx, model) == "NHWC":  # hand ONNX the NCHW layout it is meant for
            nchw = [t.name for t in load(model).inputs if len(t.shape) == 4]
            set_layout(ctx, ctx.output("model"), "NCHW")
        report = onnx_convert.tf_to_onnx(model, ctx.output("model"), source_format=fmt, opset=params.opset,
                                         nchw_inputs=nchw)
        return {"tf2onnx": report}


class OnnxToSavedModel(Step):
    kind = "convert.onnx2tf"
    consumes = ("onnx",)
    produces = "saved_model"
    summary = "onnx2tf: ONNX (NCHW) -> TF SavedModel (NHWC); its options from source.onnx2tf"

    class Params(Onnx2tfOptions, StepParams):
        """onnx2tf's options, passed on."""

    @classmethod
    def recipe_params(cls, recipe: Recipe) -> dict:
        return recipe.source.onnx2tf.step_params() if recipe.source.onnx2tf else {}

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.convert import onnx2tf

        out = ctx.output("model")
        remove(out)
        report = onnx2tf.onnx_to_saved_model(ctx.input("model"), out, options=params.model_dump(exclude_defaults=True))
        if report["layout"] != ctx.recipe.input.layout:
            set_layout(ctx, out, report["layout"])
        return {"onnx2tf": report}


class QuantizeOrt(Step):
    kind = "quantize.ort"
    consumes = ("onnx",)
    produces = "onnx"
    summary = ("ONNX Runtime quantization: dynamic, or static QDQ with calibration "
               "(int8 weights; activations and weight range as the target's ort_quantization says)")

    class Params(StepParams):
        precision: Literal["dynamic", "int8"] = "int8"
        symmetric_activations: bool = Field(
            False, description="activations with zero point 0 (TensorRT's explicit quantization needs it)")
        quantize_bias: bool = Field(True, description="int32 biases behind DequantizeLinear; false keeps them float")

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return ("calibration",) if params.get("precision", "int8") == "int8" else ()

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.convert import onnx_quant

        variant = ctx.variant
        if params.precision == "dynamic":
            report = onnx_quant.ort_quantize_dynamic(ctx.input("model"), ctx.output("model"), per_channel=variant.per_channel)
        else:
            target = ctx.target.ort_quantization
            report = onnx_quant.ort_quantize_static(
                ctx.input("model"), ctx.output("model"), samples_for(ctx, ctx.input("model")),
                method=variant.calibration_method, per_channel=variant.per_channel,
                activation_type=target.activation_type, reduce_range=target.reduce_range,
                symmetric_activations=params.symmetric_activations, quantize_bias=params.quantize_bias,
            )
        io_dtype = onnx_quant.input_dtype(ctx.output("model"))
        if variant.io_dtype and variant.io_dtype != io_dtype:
            ctx.log.warning("io_dtype %s not applied: ONNX Runtime quantization keeps the model's %s inputs",
                            variant.io_dtype, io_dtype)
        return {"quantization": report, "io_dtype": io_dtype}
