"""OpenVINO steps: convert to IR (fp32 / fp16 weights) and NNCF post-training quantization."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from builder.backends.openvino import convert
from builder.backends.openvino.options import Nncf
from builder.stage.runtimes import load
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.stage.steps.layout import LayoutParams, layout_params, samples_for


class ToOpenvino(Step):
    kind = "convert.openvino"
    tool = "OpenVINO"
    consumes = ("onnx", "tflite", "saved_model")
    produces = "openvino"
    summary = "ov.convert_model + ov.save_model (optionally fp16-compressed weights)"

    class Params(StepParams):
        compress_fp16: bool = False

    def run(self, ctx: StepContext, params: Params) -> dict:
        report = convert.to_openvino(ctx.input("model"), ctx.output("model"), compress_fp16=params.compress_fp16)
        return {"conversion": report}


class QuantizeNncf(Step):
    kind = "quantize.nncf"
    tool = "OpenVINO"
    consumes = ("openvino",)
    produces = "openvino"
    summary = "NNCF post-training int8 quantization (with accuracy control when the recipe sets max_accuracy_drop)"

    class Params(LayoutParams):
        nncf: Nncf = Field(Nncf(), description="the variant's nncf options")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        variant = scope.variant_spec
        return layout_params(scope) | ({"nncf": variant.section("nncf").model_dump(mode="json")} if variant else {})

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        with_validation = (params.get("nncf") or {}).get("max_accuracy_drop") is not None
        return ("calibration", "validation") if with_validation else ("calibration",)

    def run(self, ctx: StepContext, params: Params) -> dict:
        model = ctx.input("model")
        nncf = params.nncf
        options = nncf.ptq_options()
        calibration = samples_for(ctx.input("calibration"), params)
        if nncf.max_accuracy_drop is None:
            report = convert.nncf_quantize(model, ctx.output("model"), calibration, **options)
        else:
            validation = samples_for(ctx.input("validation"), params)
            report = convert.nncf_quantize_with_accuracy_control(
                model, ctx.output("model"), calibration, validation, top1_agreement_metric(validation, model),
                max_drop=nncf.max_accuracy_drop, **options,
            )
        return {"quantization": report, "io_dtype": "float32"}  # NNCF quantizes inside: the IR keeps float I/O


def top1_agreement_metric(validation, reference_xml):
    """Validation metric for accuracy control: top-1 agreement with the fp32 model on the given samples."""
    reference = load(reference_xml)
    expected = np.array([np.argmax(reference.run([s])[0]) for s in validation])

    def metric(compiled_model, samples, indices) -> float:
        predicted = np.array([np.argmax(compiled_model([s[None]])[0]) for s in samples])
        return float(np.mean(predicted == expected[indices]))

    return metric


def cosine_metric(validation, reference_xml):
    """Validation metric for accuracy control: mean cosine of the first output with the fp32 model's."""
    reference = load(reference_xml)
    expected = [reference.run([s])[0].reshape(-1) for s in validation]

    def metric(compiled_model, samples, indices) -> float:
        got = [np.asarray(compiled_model([s[None]])[0]).reshape(-1) for s in samples]
        return float(np.mean([a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0)
                              for a, b in zip((expected[i] for i in indices), got)]))

    return metric
