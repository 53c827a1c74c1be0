"""ONNX hub steps (seed 004's map): PyTorch -> ONNX and its hygiene (TensorFlow -> ONNX and the converters
from ONNX: their backends)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from builder.config.recipe import TorchExport
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams

TORCH_FORMATS = ("pytorch_state_dict", "torchscript", "exported_program")


class ShapeParams(StepParams):
    input_shapes: dict[str, list[int]] | None = Field(
        None, description="input name -> static shape to fix (the recipe's input, when it names it)")


def _input_shapes(scope: PlanScope) -> dict:
    spec = scope.recipe.input
    return {"input_shapes": {spec.name: spec.shape} if spec.name else None}


class SimplifyOnnx(Step):
    kind = "onnx.simplify"
    consumes = ("onnx",)
    produces = "onnx"
    cleans_source = True
    summary = "check, simplify, fix static shapes; ONNX Runtime proves outputs unchanged"

    Params = ShapeParams

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        return _input_shapes(scope)

    def run(self, ctx: StepContext, params: ShapeParams) -> dict:
        from builder.stage.convert import onnx as onnx_convert

        onnx_convert.check_onnx(ctx.input("model"))
        return {"simplify": onnx_convert.simplify_onnx(ctx.input("model"), ctx.output("model"),
                                                       input_shapes=params.input_shapes)}


class TorchToOnnx(Step):
    kind = "convert.torch_onnx"
    consumes = ("pytorch_state_dict", "torchscript", "exported_program")
    produces = "onnx"
    summary = "torch.onnx export (factory + state dict, TorchScript or ExportedProgram), then simplify"

    class Params(ShapeParams):
        format: Literal[TORCH_FORMATS] | None = Field(None, description="the source's format")  # type: ignore[valid-type]
        input_shape: list[int] | None = Field(None, description="the example input's shape: the recipe's input.shape")
        torch: TorchExport | None = Field(None, description="the source's export settings (source.torch)")
        trust_remote_code: bool = Field(False, description="import the factory from outside installed packages "
                                        "(--trust-remote-code)")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        return _input_shapes(scope) | {"format": scope.format, "input_shape": scope.recipe.input.shape,
                                       "torch": scope.source.torch.model_dump(mode="json") if scope.source.torch else None,
                                       "trust_remote_code": scope.trust_remote_code}

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.stage.convert import onnx as onnx_convert

        torch_cfg, fmt, model = params.torch, params.format, ctx.input("model")
        with tempfile.TemporaryDirectory(prefix="torch-onnx-") as tmp:
            raw = Path(tmp) / "exported.onnx"
            export = onnx_convert.torch_to_onnx(
                raw,
                input_shape=params.input_shape,
                factory=torch_cfg.factory if torch_cfg else None,
                state_dict=model if fmt == "pytorch_state_dict" else None,
                torchscript=model if fmt == "torchscript" else None,
                exported_program=model if fmt == "exported_program" else None,
                trust_remote_code=params.trust_remote_code,
                **(torch_cfg.model_dump(include={"opset", "input_names", "output_names", "dynamic_axes"})
                   if torch_cfg else {}),
            )
            simplify = onnx_convert.simplify_onnx(raw, ctx.output("model"), input_shapes=params.input_shapes)
        return {"export": export, "simplify": simplify}
