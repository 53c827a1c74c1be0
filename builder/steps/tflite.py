"""TensorFlow-side steps: Keras -> SavedModel, and (SavedModel | frozen graph) -> TFLite at any precision."""

from __future__ import annotations

from typing import Literal

from builder.steps.base import Step, StepContext, StepParams
from builder.steps.layout import copy_layout, samples_for
from builder.util import remove
from builder.workdir import SOURCE_DIR


class KerasToSavedModel(Step):
    kind = "convert.keras"
    consumes = ("keras",)
    produces = "saved_model"
    summary = "Keras application or .keras/.h5 file -> SavedModel"

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        from builder.convert import tflite

        source = ctx.recipe.source if ctx.recipe.source.keras else None
        app = source.keras if source else None
        out = ctx.output("model")
        if app is not None:
            weights_file = ctx.workdir / SOURCE_DIR / "weights.h5" if app.weights != "none" else None
            shape = tuple(app.input_shape or ctx.recipe.input.shape[1:])
            extra = {"alpha": app.alpha} if app.alpha else {}
            model = tflite.keras_application(app.application, weights=None, weights_path=weights_file,
                                             input_shape=shape, **extra)
            if weights_file is None:
                ctx.log.warning("Keras %s has RANDOM weights (weights: none): accuracy is not meaningful", app.application)
        else:
            model = tflite.load_keras_file(ctx.input("model"))
        remove(out)
        tflite.save_keras(model, out)
        return {"application": app.application if app else None, "random_weights": bool(app and app.weights == "none")}


class ToTflite(Step):
    kind = "convert.tflite"
    consumes = ("saved_model", "frozen_graph", "tflite")
    produces = "tflite"
    summary = ("TFLiteConverter: fp32, fp16, dynamic range, full int8 (int8/uint8 io), int16x8; "
               "a .tflite input: ai-edge-quantizer, else the tf2onnx+onnx2tf round trip")

    class Params(StepParams):
        precision: Literal["fp32", "fp16", "dynamic", "int8", "int16x8"] = "fp32"

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return ("calibration",) if params.get("precision") in ("int8", "int16x8") else ()

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.convert import tflite

        model = ctx.input("model")
        if model.suffix == ".tflite":
            from builder.steps.tflite_source import from_tflite

            return from_tflite(ctx, params.precision)
        variant = ctx.variant if ctx.call.variant else None
        io_dtype = ctx.recipe.io_dtype_of(ctx.call.variant) if variant else "float32"
        if params.precision not in ("int8", "int16x8"):
            io_dtype = "float32"
        representative = None
        if params.precision in ("int8", "int16x8"):
            representative = tflite.representative_from_array(samples_for(ctx, model))
        frozen = None
        source_format = "frozen_graph" if model.suffix == ".pb" else "saved_model"
        if source_format == "frozen_graph":
            spec = ctx.recipe.source.frozen_graph
            frozen = tflite.FrozenGraphSpec(**spec.model_dump())
        report = tflite.to_tflite(
            model, ctx.output("model"), source_format=source_format, precision=params.precision,
            representative=representative, io_dtype=io_dtype, frozen=frozen,
            allow_custom_ops=bool(frozen and frozen.allow_custom_ops),
            require_full_int8=variant.require_full_int8 if variant else True,
        )
        copy_layout(ctx, model, ctx.output("model"))
        if params.precision != "fp32":  # no float source to compare with: the tensor types must show it
            from builder.convert.tflite_variant import check_variant

            check_variant(params.precision, report, report["size"], {}, 0)
        if report.get("float_ops") and params.precision in ("int8", "int16x8"):
            ctx.log.warning("ops left in float: %s", ", ".join(report["float_ops"]))
        return {"conversion": report}

