"""Selective int8 for TFLite with TensorFlow's quantization debugger: which layers lose most to
quantization, and an int8 model that keeps chosen layers in float.

The error of a layer is its output's RMSE against float, in units of its quantization step
(`rmse/scale`, the debugger guide's measure): about 0.29 is plain rounding, above 0.7 a layer whose
range int8 cannot hold. Model inputs and outputs stay float32.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np

from builder.convert.tflite import Representative, tflite_ops
from builder.errors import ConversionError
from builder.util import atomic_write_bytes

METRIC = "rmse/scale"


def _debugger(saved_model: Path, representative: Representative, denylisted: list[str] | None = None,
              debug_samples: int | None = None) -> Any:
    """Calibrated on every representative sample; the layer statistics are taken on the first `debug_samples`."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylisted) if denylisted else None
    return tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: itertools.islice(representative(), debug_samples),
        debug_options=options)


def layer_errors(saved_model: Path, representative: Representative, samples: int) -> list[tuple[str, float]]:
    """(tensor name, rmse/scale) of every quantized layer, in the order of the model's tensors, measured on
    the first `samples` samples: the debugger runs the model op by op, a second a sample for EfficientNet-Lite0."""
    try:
        debugger = _debugger(saved_model, representative, debug_samples=samples)
        debugger.run()
    except Exception as exc:  # the debugger raises whatever TF and its interpreter raise
        raise ConversionError(f"the quantization debugger failed on {saved_model}: {exc}",
                              cause="quantization-failed") from exc
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = sorted(csv.DictReader(io.StringIO(dump.getvalue())), key=lambda row: int(row["tensor_idx"]))
    return [(row["tensor_name"], float(np.sqrt(float(row["mean_squared_error"])) / float(row["scale"])))
            for row in rows if float(row["scale"]) > 0]


def selective_int8(saved_model: Path, out: Path, representative: Representative, keep_float: list[str]) -> dict:
    """Int8 with the layers producing the `keep_float` tensors left in float; float32 inputs and outputs."""
    import tensorflow as tf

    started = time.monotonic()
    try:
        blob = _debugger(saved_model, representative, keep_float).get_nondebug_quantized_model()
    except Exception as exc:
        raise ConversionError(f"selective int8 of {saved_model} failed: {exc}", cause="quantization-failed") from exc
    atomic_write_bytes(out, blob)
    return {"precision": "int8", "io_dtype": "float32", "kept_float": keep_float, "size": len(blob),
            "seconds": round(time.monotonic() - started, 2), "converter": f"tensorflow {tf.__version__}",
            **tflite_ops(blob)}
