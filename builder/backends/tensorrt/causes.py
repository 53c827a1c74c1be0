"""What CUDA says, under TensorRT, when a container does not reach the GPU."""

from __future__ import annotations

from builder.stage import causes

causes.register(causes.ToolErrors(rules=(
    causes.Rule(r"CUDA initialization failure with error: ?(?:100|801|35)|cudaErrorNoDevice|cudaErrorNotSupported"
                r"|cudaErrorInsufficientDriver|Failed to dlopen libcuda", "gpu-unavailable",
                "the container does not reach the GPU: the NVIDIA runtime, NVIDIA_VISIBLE_DEVICES=all and the `video` "
                "group (`builder devices --check` tests a device)", after_core=True),
)))
