"""convert.tensorrt: ONNX -> TensorRT engine, built on the device (an engine is tied to its GPU and TensorRT).

The mapping from Params to builder settings is plain data (`builder_settings`), so it is
tested without a GPU; `trtexec_command` is the same build as a trtexec command line, for
anyone reproducing or comparing it by hand; `apply_settings` is the one place those
settings meet the TensorRT 10 Python API.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import Field, model_validator

from builder.backends.tensorrt.runtime import check_version, gpu_object, import_tensorrt
from builder.errors import ConversionError
from builder.stage.steps.base import Step, StepContext, StepParams
from builder.util import atomic_write_bytes

PRECISION_FLAGS = {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}  # int8 keeps fp16 for non-Q/DQ layers
AVG_TIMING_ITERATIONS = 8  # trtexec's default (--avgTiming); the TensorRT API's own default is 1
# tensorrt.BuilderFlag name -> its trtexec option; None: trtexec sets it itself with --useDLACore
TRTEXEC_FLAGS = {"FP16": "--fp16", "INT8": "--int8", "GPU_FALLBACK": "--allowGPUFallback",
                 "PREFER_PRECISION_CONSTRAINTS": None}


@dataclass(frozen=True)
class BuilderSettings:
    """What `apply_settings` sets on a tensorrt.IBuilderConfig, by TensorRT's own names."""

    flags: tuple[str, ...]  # tensorrt.BuilderFlag members
    workspace_bytes: int  # set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)
    optimization_level: int  # builder_optimization_level
    avg_timing_iterations: int  # avg_timing_iterations
    default_device_type: Literal["GPU", "DLA"]  # tensorrt.DeviceType member
    dla_core: int | None  # DLA_core
    gpu_fallback: bool  # BuilderFlag.GPU_FALLBACK: layers DLA cannot run go to the GPU

    def as_dict(self) -> dict:
        return asdict(self) | {"flags": list(self.flags)}


def builder_settings(params: ToTensorrt.Params) -> BuilderSettings:
    """Params -> builder settings; with a DLA core, what `trtexec --useDLACore=N --allowGPUFallback` sets."""
    flags = PRECISION_FLAGS[params.precision]
    dla = params.dla_core is not None
    if dla:
        flags += ("GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS")
    return BuilderSettings(
        flags=flags,
        workspace_bytes=params.workspace_mb << 20,
        optimization_level=params.optimization_level,
        avg_timing_iterations=AVG_TIMING_ITERATIONS,
        default_device_type="DLA" if dla else "GPU",
        dla_core=params.dla_core,
        gpu_fallback=dla,
    )


def trtexec_command(settings: BuilderSettings, onnx: str, engine: str, *, binary: str = "trtexec") -> list[str]:
    """The trtexec (TensorRT 10) command line that builds the same engine from `onnx` into `engine`."""
    args = [binary, f"--onnx={onnx}", f"--saveEngine={engine}"]
    args += [TRTEXEC_FLAGS[f] for f in settings.flags if TRTEXEC_FLAGS[f]]
    args += [f"--memPoolSize=workspace:{settings.workspace_bytes >> 20}M",
             f"--builderOptimizationLevel={settings.optimization_level}",
             f"--avgTiming={settings.avg_timing_iterations}"]
    if settings.dla_core is not None:
        args.append(f"--useDLACore={settings.dla_core}")
    return args


def network_flags(trt) -> int:
    """create_network's flags: EXPLICIT_BATCH where TensorRT still has it (8.6 makes an implicit-batch network
    without it, which the ONNX parser refuses; 10.x ignores it), none where it is gone."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    return 0 if flag is None else 1 << int(flag)


def apply_settings(trt, config, settings: BuilderSettings) -> None:
    """Set `settings` on `config`, a tensorrt.IBuilderConfig (`trt` is the tensorrt module)."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.optimization_level
    config.avg_timing_iterations = settings.avg_timing_iterations
    for flag in settings.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    config.default_device_type = getattr(trt.DeviceType, settings.default_device_type)
    if settings.dla_core is not None:
        config.DLA_core = settings.dla_core


class ToTensorrt(Step):
    kind = "convert.tensorrt"
    tool = "TensorRT"
    stage = "device"
    consumes = ("onnx",)
    produces = "tensorrt"
    summary = "TensorRT builder from ONNX: fp32, fp16, int8 (explicit, from a QDQ ONNX model), optionally on a DLA core"

    class Params(StepParams):
        precision: Literal["fp32", "fp16", "int8"] = Field(
            "fp16", description="int8 takes its scales from the model's Q/DQ nodes (quantize.ort) and keeps fp16 on")
        workspace_mb: int = Field(1024, gt=0, description="workspace memory pool limit, MiB")
        optimization_level: int = Field(
            3, ge=0, le=5, description="builder optimization level: 0 builds fastest, 5 searches longest (TensorRT: 3)")
        dla_core: int | None = Field(
            None, ge=0, description="DLA core (Orin/Xavier) for the layers DLA can run; the others fall back to the GPU")

        @model_validator(mode="after")
        def _dla_needs_fp16_or_int8(self):
            if self.dla_core is not None and self.precision == "fp32":
                raise ValueError("dla_core needs precision fp16 or int8: the DLA has no fp32 kernels")
            return self

    def run(self, ctx: StepContext, params: Params) -> dict:
        trt = import_tensorrt()
        check_version(trt.__version__)
        settings = builder_settings(params)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = gpu_object(trt.Builder, logger, what="builder")
        if settings.dla_core is not None and settings.dla_core >= builder.num_DLA_cores:
            raise ConversionError(f"DLA core {settings.dla_core} does not exist: this device has "
                                  f"{builder.num_DLA_cores} DLA core(s)", cause="conversion-failed",
                                  hint="drop dla_core or choose a core below that number")
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(ctx.input("model").read_bytes()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ConversionError(f"TensorRT cannot parse {ctx.input('model').name}", cause="unsupported-op", log_tail=errors)
        config = builder.create_builder_config()
        apply_settings(trt, config, settings)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise ConversionError("TensorRT failed to build the engine", cause="conversion-failed",
                                  hint="see the step log; try fp16 or a simplified ONNX model")
        atomic_write_bytes(ctx.output("model"), bytes(engine))
        command = trtexec_command(settings, ctx.call.inputs["model"], ctx.call.outputs["model"])
        return {"conversion": {"precision": params.precision, "tensorrt": trt.__version__,
                               "settings": settings.as_dict(), "trtexec": shlex.join(command)}}
