"""LiteRT's steps: (SavedModel | frozen graph | .tflite) -> TFLite at any precision, and ONNX -> SavedModel by
onnx2tf, the way to TFLite from ONNX. TensorFlow and onnx2tf are imported only when a step runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.backends.litert import onnx2tf, tflite
from builder.backends.litert.onnx2tf_options import Onnx2tfOptions
from builder.backends.litert.tflite_source import from_tflite
from builder.backends.litert.tflite_variant import check_variant
from builder.config.common import IoDtype
from builder.config.recipe import FrozenGraph
from builder.errors import ConversionError
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.stage.steps.layout import Layout, LayoutParams, layout_params, samples_for
from builder.util import remove

QUANTIZED = ("int8", "int16x8")  # the precisions that read calibration data and take the variant's io options


class ToTflite(Step):
    kind = "convert.tflite"
    tool = "TFLite"
    consumes = ("saved_model", "frozen_graph", "tflite")
    produces = "tflite"
    summary = ("TFLiteConverter: fp32, fp16, dynamic range, full int8 (int8/uint8 io), int16x8; "
               "a .tflite input: ai-edge-quantizer, else the tf2onnx+onnx2tf round trip")

    class Params(LayoutParams):
        precision: Literal["fp32", "fp16", "dynamic", "int8", "int16x8"] = "fp32"
        io_dtype: IoDtype = Field(
            "float32", description="the variant's input/output type (int8 and int16x8; float32 otherwise)")
        require_full_int8: bool = Field(True, description="the variant's: refuse ops left in float (int8, int16x8)")
        frozen_graph: FrozenGraph | None = Field(None, description="the source's frozen-graph arrays, for a .pb input")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        resolved: dict = {}
        if scope.format == "frozen_graph":
            resolved["frozen_graph"] = scope.source.frozen_graph.model_dump(mode="json")
        if params.get("precision") in QUANTIZED:
            resolved |= layout_params(scope)
            if scope.variant:
                resolved |= {"io_dtype": scope.recipe.io_dtype_of(scope.variant),
                             "require_full_int8": scope.variant_spec.require_full_int8}
        return resolved

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return ("calibration",) if params.get("precision") in QUANTIZED else ()

    def run(self, ctx: StepContext, params: Params) -> dict:
        model = ctx.input("model")
        if model.suffix == ".tflite":
            return from_tflite(ctx, params)
        representative = None
        if params.precision in QUANTIZED:
            representative = tflite.representative_from_array(samples_for(ctx.input("calibration"), params))
        frozen = None
        source_format = "frozen_graph" if model.suffix == ".pb" else "saved_model"
        if source_format == "frozen_graph":
            frozen = tflite.FrozenGraphSpec(**params.frozen_graph.model_dump())
        report = tflite.to_tflite(
            model, ctx.output("model"), source_format=source_format, precision=params.precision,
            representative=representative, io_dtype=params.io_dtype, frozen=frozen,
            allow_custom_ops=bool(frozen and frozen.allow_custom_ops), require_full_int8=params.require_full_int8,
        )
        if params.precision != "fp32":  # no float source to compare with: the tensor types must show it
            check_variant(params.precision, report, report["size"], {}, 0)
        if report.get("float_ops") and params.precision in ("int8", "int16x8"):
            ctx.log.warning("ops left in float: %s", ", ".join(report["float_ops"]))
        return {"conversion": report}


class OnnxToSavedModel(Step):
    kind = "convert.onnx2tf"
    tool = "onnx2tf"
    consumes = ("onnx",)
    produces = "saved_model"
    summary = "onnx2tf: ONNX (NCHW) -> TF SavedModel (NHWC); its options from source.onnx2tf"

    class Params(Onnx2tfOptions, StepParams):
        """onnx2tf's options, passed on."""

        output_layout: Layout = Field("NHWC", description=(
            "the SavedModel's input layout: NCHW when keep_ncw_or_nchw_or_ncdhw_input_names keeps the input"))

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        given = scope.source.section("onnx2tf")
        options = given.step_params() if given else {}
        kept = params.get("keep_ncw_or_nchw_or_ncdhw_input_names", options.get("keep_ncw_or_nchw_or_ncdhw_input_names"))
        name = scope.recipe.input.name
        return options | {"output_layout": "NCHW" if kept and (name is None or name in kept) else "NHWC"}

    @classmethod
    def output_layout(cls, params: dict, scope: PlanScope) -> str | None:
        return params["output_layout"]

    def run(self, ctx: StepContext, params: Params) -> dict:
        out = ctx.output("model")
        remove(out)
        options = params.model_dump(exclude_defaults=True, exclude={"output_layout"})
        report = onnx2tf.onnx_to_saved_model(ctx.input("model"), out, options=options)
        if report["layout"] != params.output_layout:
            remove(out)
            raise ConversionError(f"onnx2tf made {report['layout']} inputs; the plan expected {params.output_layout}",
                                  cause="conversion-failed", hint="name the model's input in input.name, and list "
                                  "every input in source.onnx2tf.keep_ncw_or_nchw_or_ncdhw_input_names or none")
        return {"onnx2tf": report}
