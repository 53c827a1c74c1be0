"""Is the source already quantized? Read from the model file, without loading a framework.

A quantized source quantized again grows and loses accuracy (ddddocr's dynamically
quantized `common_old.onnx` made an IR: the "fp32" IR grew from 13.6 to 53 MB and its
quantizer stacked 259 fake-quantize nodes on its ConvInteger, cosine 0.667), so the plan builds
only the source's own precision unless the recipe sets `source.requantize: true`.

ONNX, the interchange format, is read here; a backend registers the reader of its own format (`reader`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from builder import plugins
from builder.errors import ConfigError

_ONNX_DYNAMIC = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}
_ONNX_STATIC = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                "QGemm", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid"}


class SourcePrecision(BaseModel):
    precision: str  # "int8" (static) or "dynamic"
    evidence: str   # what in the file says so

    def describe(self) -> str:
        return f"the source is already quantized ({self.precision}: {self.evidence})"


Reader = Callable[[Path], "SourcePrecision | None"]  # a model file -> its quantization, or None for a float one
_READERS: dict[str, Reader] = {}


def reader(fmt: str) -> Callable[[Reader], Reader]:
    """Register how a source in `fmt` says it is quantized (a backend registers its own format's)."""

    def register(fn: Reader) -> Reader:
        _READERS[fmt] = fn
        return fn

    return register


def _counted(ops: Counter, names: set[str]) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted(ops.items()) if op in names)


@reader("onnx")
def _onnx(path: Path) -> SourcePrecision | None:
    import onnx

    ops = Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)
    if ops.keys() & _ONNX_DYNAMIC:
        return SourcePrecision(precision="dynamic", evidence=_counted(ops, _ONNX_DYNAMIC))
    if ops.keys() & _ONNX_STATIC:
        return SourcePrecision(precision="int8", evidence=_counted(ops, _ONNX_STATIC))
    return None


def inspect(path: Path, fmt: str, shown: str | None = None) -> SourcePrecision | None:
    """The source's quantization, or None for a float source (or a format not read here). A file that is not a
    model of its format is bad input, named as `shown` (the recipe and its field; default: `path`)."""
    plugins.load()
    read = _READERS.get(fmt)
    if not read or not Path(path).is_file():
        return None
    try:
        return read(Path(path))
    except Exception as exc:  # a parser of bytes from anywhere: garbage fails in its own way (IndexError, DecodeError...)
        detail = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{shown or path}: not a valid {fmt} model ({detail})",
                          hint="check that the file is whole (not cut off or an error page) and that source.format "
                               "is right") from exc
