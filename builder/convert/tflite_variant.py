"""Variants are what they say: a built TFLite artifact is checked against its float source.

An "fp16" model of a source that already stores fp16 weights, or a "dynamic"
model without integer weights, changed nothing; reporting it as a success would
put a copy of fp32 in the table under another name (issue 11: an OpenVINO "fp16"
had fp32's size and outputs). Such a variant fails with cause `no-op-variant`.
"""

from __future__ import annotations

from typing import Any

from builder.errors import ConversionError

NO_OP = "no-op-variant"
_INTEGER_WEIGHTS = {"dynamic": "int8", "weight_only": "int8", "int8": "int8", "int16x8": "int8"}


def check_variant(precision: str, built: dict[str, Any], size: int, source: dict[str, Any], source_size: int,
                  *, source_fp16_weights: int = 0) -> None:
    """Raise ConversionError(cause no-op-variant) if the artifact is not different from its fp32 source.

    `built`/`source` are `tflite.tflite_ops` reports; `source_fp16_weights` counts the source's
    fp16 constants behind DEQUANTIZE (`tflite_float.describe`).
    """
    weights = built.get("weight_dtypes", {})
    reason = None
    if precision == "fp16":
        if not weights.get("float16"):
            reason = "it has no float16 weights"
        elif source_fp16_weights >= weights["float16"]:
            reason = (f"the source already stores its weights as fp16 ({source_fp16_weights} constants behind "
                      f"DEQUANTIZE; this variant has {weights['float16']}): fp16 is the fp32 model again "
                      f"({size} vs {source_size} bytes)")
    elif precision in _INTEGER_WEIGHTS and not weights.get(_INTEGER_WEIGHTS[precision]):
        reason = f"it has no {_INTEGER_WEIGHTS[precision]} weights (weights: {weights})"
    if reason is None and built == source and size == source_size:
        reason = "its ops, tensor types and size are those of the source"
    if reason:
        raise ConversionError(f"not different from fp32: the {precision} variant is not {precision}: {reason}",
                              cause=NO_OP, hint="drop this variant for this model: fp32 already is what it would be")
