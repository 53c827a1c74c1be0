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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from builder.backends.litert.tflite import Representative, tflite_ops
from builder.errors import ConversionError
from builder.util import atomic_write_bytes

METRIC = "rmse/scale"
T = TypeVar("T")


class Debugger:
    """TensorFlow's quantization debugger over one calibration on every representative sample: the layers'
    errors, and int8 models that keep chosen layers in float, each quantized again from the same calibrated
    model (a new denylist re-quantizes, it does not calibrate again)."""

    def __init__(self, saved_model: Path, representative: Representative, debug_samples: int):
        """The layer statistics are taken on the first `debug_samples` samples: the debugger runs the model op
        by op, about a second a sample for EfficientNet-Lite0."""
        import tensorflow as tf

        self.saved_model = saved_model
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        self._debugger = self._call("calibration", lambda: tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: itertools.islice(representative(), debug_samples)))

    def _call(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except Exception as exc:  # the debugger raises whatever TF and its interpreter raise
            raise ConversionError(f"the quantization debugger's {what} failed on {self.saved_model}: {exc}",
                                  cause="quantization-failed") from exc

    def layer_errors(self) -> list[tuple[str, float]]:
        """(tensor name, rmse/scale) of every quantized layer, in the order of the model's tensors."""
        self._call("run", self._debugger.run)
        dump = io.StringIO()
        self._debugger.layer_statistics_dump(dump)
        rows = sorted(csv.DictReader(io.StringIO(dump.getvalue())), key=lambda row: int(row["tensor_idx"]))
        return [(row["tensor_name"], float(np.sqrt(float(row["mean_squared_error"])) / float(row["scale"])))
                for row in rows if float(row["scale"]) > 0]

    def selective_int8(self, out: Path, keep_float: list[str]) -> dict:
        """Int8 with the layers producing the `keep_float` tensors left in float; float32 inputs and outputs."""
        import tensorflow as tf

        started = time.monotonic()

        def quantize() -> bytes:
            self._debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep_float)
            return self._debugger.get_nondebug_quantized_model()

        blob = self._call(f"int8 with {len(keep_float)} layer(s) in float", quantize)
        atomic_write_bytes(out, blob)
        return {"precision": "int8", "io_dtype": "float32", "kept_float": keep_float, "size": len(blob),
                "seconds": round(time.monotonic() - started, 2), "converter": f"tensorflow {tf.__version__}",
                **tflite_ops(blob)}
