"""convert.executorch: the PyTorch source (a factory with its state dict, or an ExportedProgram) -> a .pte program
lowered to XNNPACK, in fp32 or PT2E static int8 calibrated on the recipe's calibration data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.backends.executorch import export
from builder.config.recipe import TorchExport
from builder.errors import ConfigError
from builder.stage.convert.onnx import load_torch_module
from builder.stage.steps.base import PlanScope, Step, StepContext
from builder.stage.steps.layout import LayoutParams, layout_params, samples_for


class ToExecutorch(Step):
    kind = "convert.executorch"
    tool = "ExecuTorch"
    consumes = ("pytorch_state_dict", "exported_program")
    produces = "executorch"
    summary = "torch.export -> ExecuTorch .pte with the XNNPACK delegate: fp32, or PT2E static int8"

    class Params(LayoutParams):
        precision: Literal["fp32", "int8"] = "fp32"
        format: str | None = Field(None, description="the source's format")
        input_shape: list[int] | None = Field(None, description="the example input's shape: the recipe's input.shape")
        torch: TorchExport | None = Field(None, description="the source's export settings (source.torch)")
        trust_remote_code: bool = Field(False, description="import the factory from outside installed packages")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        resolved = {"format": scope.format, "input_shape": scope.recipe.input.shape,
                    "torch": scope.source.torch.model_dump(mode="json") if scope.source.torch else None,
                    "trust_remote_code": scope.trust_remote_code}
        return resolved | (layout_params(scope) if params.get("precision") == "int8" else {})

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return ("calibration",) if params.get("precision") == "int8" else ()

    def run(self, ctx: StepContext, params: Params) -> dict:
        import torch

        if params.input_shape is None or any(d <= 0 for d in params.input_shape):
            raise ConfigError("ExecuTorch exports a fixed input shape", hint="give input.shape without -1 dims")
        example = torch.zeros(params.input_shape)
        model = ctx.input("model")
        if params.format == "exported_program":
            module = torch.export.load(str(model)).module()
        else:
            module = load_torch_module(params.torch.factory if params.torch else None, model, None, None, example,
                                       trusted=params.trust_remote_code)
        if params.precision == "fp32":
            return {"conversion": export.export(module, example, ctx.output("model"))}
        calibration = samples_for(ctx.input("calibration"), params)
        return {"conversion": export.quantize_int8(module, example, calibration, ctx.output("model")),
                "io_dtype": "float32"}
