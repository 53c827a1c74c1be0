"""convert.ort: ONNX -> ORT format, ONNX Runtime's flatbuffer for small builds (ORT Mobile).

The graph is optimized before it is saved: `basic` keeps only the optimizations that
hold on every execution provider (what ONNX Runtime's own converter does for a
portable model); `all` adds the layout ones of the CPU that converts it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.errors import ConversionError
from builder.stage.steps.base import Step, StepContext, StepParams

_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class ConvertOrt(Step):
    kind = "convert.ort"
    consumes = ("onnx",)
    produces = "ort"
    summary = "ONNX -> ORT format (ONNX Runtime's .ort flatbuffer), optimized at a chosen level"

    class Params(StepParams):
        optimization: Literal["basic", "extended", "all"] = Field(
            "basic", description="graph optimizations applied before saving: basic is portable across CPUs")

    def run(self, ctx: StepContext, params: Params) -> dict:
        import onnxruntime as ort

        out = ctx.output("model")
        staged = out.with_name(f".{out.name}.partial")  # a killed run leaves no .ort a later run trusts
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[params.optimization])
        options.optimized_model_filepath = str(staged)
        options.add_session_config_entry("session.save_model_format", "ORT")
        try:
            ort.InferenceSession(str(ctx.input("model")), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            staged.unlink(missing_ok=True)
            raise ConversionError(f"onnxruntime could not convert {ctx.input('model').name} to the ORT format: {exc}",
                                  cause="ort-convert-failed") from exc
        staged.replace(out)
        ctx.log.info("wrote %s (%d bytes, %s optimizations, onnxruntime %s)", out.name, out.stat().st_size,
                     params.optimization, ort.__version__)
        return {"ort": {"optimization": params.optimization, "onnxruntime": ort.__version__,
                        "size": out.stat().st_size}}
