"""TensorFlow-side steps: Keras -> SavedModel, and (SavedModel | frozen graph) -> TFLite at any precision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.config.common import IoDtype
from builder.config.recipe import FrozenGraph
from builder.steps.base import PlanScope, Step, StepContext, StepParams
from builder.steps.layout import LayoutParams, layout_params, samples_for
from builder.util import remove
from builder.workdir import SOURCE_DIR

KERAS_WEIGHTS = f"{SOURCE_DIR}/weights.h5"
QUANTIZED = ("int8", "int16x8")  # the precisions that read calibration data and take the variant's io options


class KerasToSavedModel(Step):
    kind = "convert.keras"
    consumes = ("keras",)
    produces = "saved_model"
    summary = "Keras application or .keras/.h5 file -> SavedModel"

    class Params(StepParams):
        application: str | None = Field(None, description="the source's keras.applications model (else a file)")
        alpha: float | None = None
        input_shape: list[int] | None = Field(None, description="H, W, C: source.keras.input_shape or the input's")
        weights: bool = Field(False, description="the application's weights file was fetched (else random weights)")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        app = scope.source.keras
        if app is None:
            return {}
        return {"application": app.application, "alpha": app.alpha, "weights": app.weights != "none",
                "input_shape": app.input_shape or scope.recipe.input.shape[1:]}

    @classmethod
    def file_inputs(cls, params: dict) -> dict[str, str]:
        return {"weights": KERAS_WEIGHTS} if params.get("application") and params.get("weights") else {}

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.convert import tflite

        out = ctx.output("model")
        if params.application is not None:
            extra = {"alpha": params.alpha} if params.alpha else {}
            model = tflite.keras_application(params.application, weights=None,
                                             weights_path=ctx.input("weights") if params.weights else None,
                                             input_shape=tuple(params.input_shape), **extra)
            if not params.weights:
                ctx.log.warning("Keras %s has RANDOM weights (weights: none): accuracy is not meaningful",
                                params.application)
        else:
            model = tflite.load_keras_file(ctx.input("model"))
        remove(out)
        tflite.save_keras(model, out)
        return {"application": params.application, "random_weights": bool(params.application and not params.weights)}


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
        from builder.convert import tflite

        model = ctx.input("model")
        if model.suffix == ".tflite":
            from builder.steps.tflite_source import from_tflite

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
            from builder.convert.tflite_variant import check_variant

            check_variant(params.precision, report, report["size"], {}, 0)
        if report.get("float_ops") and params.precision in ("int8", "int16x8"):
            ctx.log.warning("ops left in float: %s", ", ".join(report["float_ops"]))
        return {"conversion": report}

