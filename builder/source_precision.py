"""Is the source already quantized? Read from the model file, without loading a framework.

A quantized source quantized again grows and loses accuracy (ddddocr's dynamically
quantized `common_old.onnx` on openvino: the "fp32" IR grew from 13.6 to 53 MB and NNCF
stacked 259 FakeQuantize nodes on its ConvInteger, cosine 0.667), so the plan builds only
the source's own precision unless the recipe sets `source.requantize: true`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from builder.errors import ConfigError

_ONNX_DYNAMIC = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}
_ONNX_STATIC = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                "QGemm", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid"}


class SourcePrecision(BaseModel):
    precision: str  # "int8" (static) or "dynamic"
    evidence: str   # what in the file says so

    def describe(self) -> str:
        return f"the source is already quantized ({self.precision}: {self.evidence})"


def _counted(ops: Counter, names: set[str]) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted(ops.items()) if op in names)


def _onnx(path: Path) -> SourcePrecision | None:
    import onnx

    ops = Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)
    if ops.keys() & _ONNX_DYNAMIC:
        return SourcePrecision(precision="dynamic", evidence=_counted(ops, _ONNX_DYNAMIC))
    if ops.keys() & _ONNX_STATIC:
        return SourcePrecision(precision="int8", evidence=_counted(ops, _ONNX_STATIC))
    return None


def _openvino(path: Path) -> SourcePrecision | None:
    layers = Counter(layer.get("type") for layer in ET.parse(path).getroot().iter("layer"))
    if layers["FakeQuantize"]:
        return SourcePrecision(precision="int8", evidence=f"{layers['FakeQuantize']} FakeQuantize")
    return None


def _tflite(path: Path) -> SourcePrecision | None:
    from builder.backends.litert.tflite import tflite_ops

    weights = tflite_ops(path).get("weight_dtypes", {})
    integer = {t: n for t, n in weights.items() if t in ("int8", "uint8")}
    if integer:
        return SourcePrecision(precision="int8", evidence=", ".join(f"{n} {t} weights" for t, n in integer.items()))
    return None


_READERS = {"onnx": _onnx, "openvino": _openvino, "tflite": _tflite}


def inspect(path: Path, fmt: str, shown: str | None = None) -> SourcePrecision | None:
    """The source's quantization, or None for a float source (or a format not read here). A file that is not a
    model of its format is bad input, named as `shown` (the recipe and its field; default: `path`)."""
    reader = _READERS.get(fmt)
    if not reader or not Path(path).is_file():
        return None
    try:
        return reader(Path(path))
    except Exception as exc:  # a parser of bytes from anywhere: garbage fails in its own way (IndexError, DecodeError...)
        detail = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{shown or path}: not a valid {fmt} model ({detail})",
                          hint="check that the file is whole (not cut off or an error page) and that source.format "
                               "is right") from exc
