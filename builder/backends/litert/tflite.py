"""TensorFlow -> TFLite conversion and post-training quantization.

Sources: a SavedModel directory, a .keras/.h5 file (exported to a SavedModel
first), or a TF1 frozen graph (.pb). Precisions follow seeds 000 and 004:
fp32, fp16 weights, dynamic range, full int8 (int8 or uint8 IO) and int16x8.
Failures are classified into `ConversionError.cause` with a hint for the
known ones; the converter's own error lines travel in `log_tail`.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from builder.errors import ConfigError, ConversionError
from builder.stage.causes import unsupported_ops
from builder.stage.convert.keras_sources import keras_application, load_keras_file, save_keras
from builder.util import atomic_write_bytes

__all__ = [
    "FrozenGraphSpec", "IoDtype", "Precision", "classify_failure", "keras_application",
    "load_keras_file", "representative_from_array", "save_keras", "tflite_ops", "to_tflite",
]

Precision = Literal["fp32", "fp16", "dynamic", "int8", "int16x8"]
IoDtype = Literal["float32", "int8", "uint8"]
SourceFormat = Literal["saved_model", "keras", "frozen_graph"]
Representative = Callable[[], Iterable[list[np.ndarray]]]

# Ops that only move data across a float/integer boundary: not "float compute".
_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class FrozenGraphSpec:
    """How to read a TF1 frozen graph: the `tflite_convert` flags of seeds 001 and 003."""

    input_arrays: list[str]
    output_arrays: list[str]
    input_shapes: dict[str, list[int]] | None = None
    allow_custom_ops: bool = False  # TFLite_Detection_PostProcess (SSD) is a custom op
    quantized_input_stats: dict[str, tuple[float, float]] | None = None  # (mean, std) per input
    inference_type: Literal["float", "quantized_uint8"] = "float"  # uint8 for fake-quant-trained graphs
    change_concat_input_ranges: bool | None = None
    legacy_converter: bool = False  # seed 003's --experimental_new_converter=False


def representative_from_array(
    data: np.ndarray, limit: int | None = None, *, has_batch_dim: bool = False
) -> Representative:
    """Calibration samples for the converter, always in the same order.

    `data` is (N, ...) preprocessed samples; with `has_batch_dim` each sample
    already carries a leading batch of 1, (N, 1, ...). Each yield is one
    single-input list `[batch_of_one]` in float32.
    """
    samples = np.asarray(data, dtype=np.float32)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"calibration limit must be >= 1, got {limit}", hint="raise the sample count")
        samples = samples[:limit]
    if samples.ndim < 1 or len(samples) == 0:
        raise ConfigError("calibration data is empty", hint="give at least one calibration sample")
    if has_batch_dim and samples.shape[1:2] != (1,):
        raise ConfigError(f"calibration data shape {samples.shape} has no batch dimension of 1 at axis 1")

    def representative() -> Iterator[list[np.ndarray]]:
        for sample in samples:
            yield [sample if has_batch_dim else sample[None]]

    return representative


def to_tflite(
    source: Path,
    out: Path,
    *,
    source_format: SourceFormat,
    precision: Precision = "fp32",
    representative: Representative | None = None,
    io_dtype: IoDtype = "float32",
    frozen: FrozenGraphSpec | None = None,
    allow_custom_ops: bool = False,
    require_full_int8: bool = True,
) -> dict[str, Any]:
    """Convert `source` to a .tflite file at `out` (written atomically) and return a report.

    With `require_full_int8`, an int8/int16x8 model in which any op still
    computes in float is refused (cause "not-fully-quantized"); the TF 2.21
    converter itself silently leaves such ops (SIN, CUMSUM, ...) in float.
    """
    source, out = Path(source), Path(out)
    # A fake-quant-trained graph becomes a uint8 model for int8; other precisions convert it as float.
    fake_quant = frozen is not None and frozen.inference_type == "quantized_uint8" and precision == "int8"
    _check_args(source, source_format, precision, representative, io_dtype, frozen, fake_quant)
    import tensorflow as tf

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="eb-tflite-") as tmp:
        if source_format == "keras":
            source_dir = save_keras(load_keras_file(source), Path(tmp) / "saved_model")
        else:
            source_dir = source
        try:
            converter = _make_converter(tf, source_dir, frozen)
            converter.allow_custom_ops = allow_custom_ops or (frozen is not None and frozen.allow_custom_ops)
            if fake_quant:
                converter.inference_type = tf.uint8
                converter.quantized_input_stats = frozen.quantized_input_stats
            else:
                _set_precision(tf, converter, precision, representative, io_dtype, require_full_int8)
            blob = converter.convert()
        except Exception as e:  # the converter raises ValueError, OSError and its own ConverterError
            raise _conversion_error(e, source) from e
    seconds = round(time.monotonic() - start, 2)

    info = tflite_ops(blob)
    if precision in ("int8", "int16x8") and require_full_int8 and info["float_ops"]:
        names = ", ".join(info["float_ops"])
        raise ConversionError(
            f"{precision} conversion of {source} left ops computing in float: {names}",
            cause="not-fully-quantized",
            hint="set require_full_int8: false to accept float fallback for these ops "
            "(an integer-only NPU will then reject or split the model), or replace them in the model",
        )
    atomic_write_bytes(out, blob)
    return {
        "precision": precision,
        "io_dtype": io_dtype,
        "size": len(blob),
        "seconds": seconds,
        "converter": f"tensorflow {tf.__version__}",
        **info,
    }


def _check_args(
    source: Path,
    source_format: str,
    precision: str,
    representative: Representative | None,
    io_dtype: str,
    frozen: FrozenGraphSpec | None,
    fake_quant: bool,
) -> None:
    if not source.exists():
        raise ConfigError(f"model source not found: {source}", hint="check the recipe's source path")
    if (source_format == "frozen_graph") != (frozen is not None):
        raise ConfigError(
            f"{source}: frozen graph settings (input/output arrays) go with source_format frozen_graph only",
            hint="give input_arrays and output_arrays for a .pb frozen graph, and none for other sources",
        )
    if fake_quant:
        if precision != "int8" or io_dtype != "uint8":
            raise ConfigError(
                f"{source}: inference_type quantized_uint8 makes a uint8 model, but precision={precision} "
                f"io_dtype={io_dtype} was asked",
                hint="set precision: int8 and io_dtype: uint8 for a fake-quant-trained graph",
            )
        if not frozen.quantized_input_stats:
            raise ConfigError(
                f"{source}: inference_type quantized_uint8 needs quantized_input_stats",
                hint="give (mean, std) per input array, e.g. {input: [128, 127]} for [-1, 1] inputs",
            )
        return
    if io_dtype != "float32" and precision != "int8":
        raise ConfigError(
            f"io_dtype {io_dtype} needs precision int8, not {precision}",
            hint="use io_dtype float32, or precision int8",
        )
    if precision in ("int8", "int16x8") and representative is None:
        raise ConfigError(
            f"precision {precision} needs calibration data (a representative dataset)",
            hint="add calibration data to the recipe, or choose precision dynamic (no data needed)",
        )


def _make_converter(tf: Any, source: Path, frozen: FrozenGraphSpec | None) -> Any:
    if frozen is None:
        return tf.lite.TFLiteConverter.from_saved_model(str(source))
    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(source), frozen.input_arrays, frozen.output_arrays, frozen.input_shapes
    )
    if frozen.change_concat_input_ranges is not None:
        converter.change_concat_input_ranges = frozen.change_concat_input_ranges
    if frozen.legacy_converter:
        converter.experimental_new_converter = False
    return converter


def _set_precision(
    tf: Any,
    converter: Any,
    precision: str,
    representative: Representative | None,
    io_dtype: str,
    require_full_int8: bool,
) -> None:
    if precision == "fp32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision in ("int8", "int16x8"):
        ops_set = tf.lite.OpsSet
        integer = (
            ops_set.TFLITE_BUILTINS_INT8
            if precision == "int8"
            else ops_set.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        )
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [integer] if require_full_int8 else [integer, ops_set.TFLITE_BUILTINS]
        if io_dtype != "float32":
            converter.inference_input_type = getattr(tf, io_dtype)
            converter.inference_output_type = getattr(tf, io_dtype)


# --- failure classification -------------------------------------------------

_UNSUPPORTED_OP_PATTERNS = (
    re.compile(r"TF Select ops: ([\w.]+(?:, [\w.]+)*)"),
    re.compile(r"Custom ops: ([\w.]+(?:, [\w.]+)*)"),
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
)
_KNOWN_CAUSES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "control-flow-v1",
        re.compile(r"functionalize\s+Control\s*Flow\s*V1", re.IGNORECASE),
        "re-export the model as a TF2 SavedModel (control flow v2), or for a TF1 graph try "
        "frozen.legacy_converter: true (seed 003: --enable_v1_converter --experimental_new_converter=False)",
    ),
    (
        "not-fully-quantized",
        re.compile(r"quantization not (yet )?supported for op|failed to quantize", re.IGNORECASE),
        "set require_full_int8: false to keep these ops in float, or replace them in the model",
    ),
    (
        "shape-mismatch",
        re.compile(
            r"shape of tensor .* cannot be changed|dimension \d+ in both shapes must be equal"
            r"|incompatible shapes|shape mismatch|dimensions must be equal"
            r"|attempting to resize dimension",  # calibration data of the wrong shape
            re.IGNORECASE,
        ),
        "make input_shapes and the calibration data match the model's input (batch 1, layout, size)",
    ),
    (
        "unknown-tensor",
        re.compile(r"Invalid tensors? '.*' (were|was) found"),
        "input_arrays/output_arrays must name nodes of the graph (inputs are its Placeholder nodes)",
    ),
)


def classify_failure(text: str) -> tuple[str, str | None]:
    """(cause, hint) for a converter error message; ("conversion-failed", None) if unknown."""
    if unsupported_ops(text, _UNSUPPORTED_OP_PATTERNS):
        return (
            "unsupported-op",
            "set allow_custom_ops: true if the target runtime registers these ops as custom ops "
            "(e.g. TFLite_Detection_PostProcess), or rewrite the model without them; "
            "SELECT_TF_OPS (Flex) needs a runtime built with TF ops",
        )
    for cause, pattern, hint in _KNOWN_CAUSES:
        if pattern.search(text):
            return cause, hint
    return "conversion-failed", None


def _conversion_error(exc: Exception, source: Path) -> ConversionError:
    text = str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    error_lines = [line for line in lines if "error" in line.lower()] or lines
    cause, hint = classify_failure(text)
    if cause == "unsupported-op":
        detail = "ops not supported by TFLite builtins: " + ", ".join(unsupported_ops(text, _UNSUPPORTED_OP_PATTERNS))
    else:
        first = next((line for line in lines if "error:" in line), lines[0])
        detail = first.split("error:", 1)[-1].strip()
    return ConversionError(
        f"TFLite conversion of {source} failed ({cause}): {detail}", cause=cause, hint=hint, log_tail=error_lines[-12:]
    )


# --- flatbuffer inspection ----------------------------------------------------


def tflite_ops(model: Path | bytes) -> dict[str, Any]:
    """Op counts and tensor types of a .tflite flatbuffer.

    Reads the flatbuffer with the schema bindings shipped in ai-edge-litert
    (present in toolchain and device images, newer than TF's copy, and typed,
    unlike parsing `tf.lite.experimental.Analyzer`'s text output).
    Returns ops {name: count}, custom_ops, float_ops (ops other than
    QUANTIZE/DEQUANTIZE with a float32 input or output), weight_dtypes
    {dtype: count of constant tensors}, input_dtypes and output_dtypes.
    """
    from ai_edge_litert import schema_py_generated as schema

    blob = model if isinstance(model, bytes) else Path(model).read_bytes()
    fb = schema.ModelT.InitFromPackedBuf(blob, 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtype_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    float32 = schema.TensorType.FLOAT32

    ops: Counter[str] = Counter()
    custom: dict[str, None] = {}
    float_ops: dict[str, None] = {}
    weights: Counter[str] = Counter()
    for graph in fb.subgraphs or []:
        tensors = graph.tensors or []
        for op in graph.operators or []:
            code = fb.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)  # schema v3a split the field
            if builtin == schema.BuiltinOperator.CUSTOM:
                name = code.customCode.decode()
                custom[name] = None
            else:
                name = op_names[builtin]
            ops[name] += 1
            touched = _tensor_ids(op.inputs) + _tensor_ids(op.outputs)
            if name not in _BOUNDARY_OPS and any(tensors[i].type == float32 for i in touched):
                float_ops[name] = None
        for tensor in tensors:
            buffer = fb.buffers[tensor.buffer] if tensor.buffer else None
            has_data = buffer is not None and ((buffer.data is not None and len(buffer.data) > 0) or buffer.size > 0)
            if has_data:
                weights[dtype_names[tensor.type]] += 1
    main = fb.subgraphs[0]
    return {
        "ops": dict(sorted(ops.items())),
        "custom_ops": sorted(custom),
        "float_ops": sorted(float_ops),
        "weight_dtypes": dict(sorted(weights.items())),
        "input_dtypes": [dtype_names[main.tensors[i].type] for i in _tensor_ids(main.inputs)],
        "output_dtypes": [dtype_names[main.tensors[i].type] for i in _tensor_ids(main.outputs)],
    }


def _tensor_ids(ids: Any) -> list[int]:
    """Tensor indices of an op or subgraph (a numpy array or None; -1 marks an absent optional input)."""
    return [] if ids is None else [int(i) for i in ids if i >= 0]
