"""convert.tensorrt: ONNX -> TensorRT engine, built on the device (an engine is tied to its GPU and TensorRT)."""

from __future__ import annotations

from typing import Literal

from builder.errors import ConversionError
from builder.steps.base import Step, StepContext, StepParams
from builder.util import atomic_write_bytes


class ToTensorrt(Step):
    kind = "convert.tensorrt"
    stage = "device"
    consumes = ("onnx",)
    produces = "tensorrt"
    summary = "TensorRT builder from ONNX: fp32, fp16, int8 (explicit, from a QDQ ONNX model)"

    class Params(StepParams):
        precision: Literal["fp32", "fp16", "int8"] = "fp16"
        workspace_mb: int = 1024

    def run(self, ctx: StepContext, params: Params) -> dict:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(ctx.input("model").read_bytes()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ConversionError(f"TensorRT cannot parse {ctx.input('model').name}", cause="unsupported-op", log_tail=errors)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, params.workspace_mb << 20)
        if params.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if params.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # scales come from the model's Q/DQ nodes (quantize.ort)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise ConversionError("TensorRT failed to build the engine", cause="conversion-failed",
                                  hint="see the step log; try fp16 or a simplified ONNX model")
        atomic_write_bytes(ctx.output("model"), bytes(engine))
        return {"conversion": {"precision": params.precision, "tensorrt": trt.__version__}}
