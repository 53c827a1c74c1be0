"""Variants are what they say: a built TFLite artifact is checked against its float source.

An "fp16" model without float16 weights, or a "dynamic" model without integer
weights, changed nothing; reporting it as a success would
put a copy of fp32 in the table under another name (issue 11: an OpenVINO "fp16"
had fp32's size and outputs). Such a variant fails with cause `no-op-variant`.
"""

from __future__ import annotations

from typing import Any

from builder.errors import ConversionError

NO_OP = "no-op-variant"
_INTEGER_WEIGHTS = {"dynamic": "int8", "weight_only": "int8", "int8": "int8", "int16x8": "int8"}


def check_variant(precision: str, built: dict[str, Any], size: int, source: dict[str, Any], source_size: int) -> None:
    """Raise ConversionError(cause no-op-variant) if the artifact is not different from its fp32 source.

    `built`/`source` are `tflite.tflite_ops` reports.
    """
    weights = built.get("weight_dtypes", {})
    reason = None
    if precision == "fp16" and not weights.get("float16"):
        reason = "it has no float16 weights"
    elif precision in _INTEGER_WEIGHTS and not weights.get(_INTEGER_WEIGHTS[precision]):
        reason = f"it has no {_INTEGER_WEIGHTS[precision]} weights (weights: {weights})"
    if reason is None and built == source and size == source_size:
        reason = "its ops, tensor types and size are those of the source"
    if reason:
        raise ConversionError(f"not different from fp32: the {precision} variant is not {precision}: {reason}",
                              cause=NO_OP, hint="drop this variant for this model: fp32 already is what it would be")
