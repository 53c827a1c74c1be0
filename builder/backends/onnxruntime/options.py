"""A target's `ort_quantization:` options: what ONNX Runtime's static int8 (quantize.ort, search.ort) makes for
the target's runtime, registered as a section of every target (its defaults suit CPUs)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.config.common import Strict
from builder.config.sections import Section, register


class OrtQuantization(Strict):
    """What ONNX Runtime static int8 quantization (quantize.ort) makes for this target's runtime."""

    activation_type: Literal["int8", "uint8"] = Field(
        "uint8", description="uint8 for CPUs (ONNX Runtime's u8 x s8 kernels; s8 activations measured slower "
        "than fp32 there, bench/ort_int8.py); int8 for TensorRT, whose explicit quantization takes s8 only")
    reduce_range: bool = Field(
        True, description="7-bit weights, so that the u8 x s8 kernels of x86 CPUs without VNNI (AVX2) cannot "
        "saturate (static int8: cosine to fp32 0.989 -> 0.997 on the OCR detector); false keeps 8 bits where "
        "no such kernel runs (TensorRT)")


register(Section("target", "ort_quantization", OrtQuantization,
                 "ONNX Runtime's static int8 for this target's runtime; weights are int8 on every target"))
