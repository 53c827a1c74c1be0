"""TFLite -> TFLite quantization with ai-edge-quantizer: no round trip through ONNX.

A downloaded float .tflite is quantized as it is (after `tflite_float.float_model`
folds fp16/sparse constants and adds a signature), so models that tf2onnx or
onnx2tf cannot read still get their dynamic, weight-only, fp16, int8 and
int16x8 variants. The recipes are ai-edge-quantizer's own: min-max, int8
channelwise weights; static ones calibrate on the recipe's data.
"""

from __future__ import annotations

import importlib.metadata
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from builder.backends.litert import tflite_float
from builder.errors import ConfigError, ConversionError
from builder.util import atomic_write_bytes

PATH = "ai-edge-quantizer"
DirectPrecision = Literal["fp16", "dynamic", "weight_only", "int8", "int16x8"]
DIRECT_PRECISIONS = ("fp16", "dynamic", "weight_only", "int8", "int16x8")
STATIC = ("int8", "int16x8")


def _recipe(precision: str) -> Any:
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe, recipe_manager

    if precision == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       num_bits=16, algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        return manager.get_quantization_recipe()
    return {
        "dynamic": recipe.dynamic_wi8_afp32,
        "weight_only": recipe.weight_only_wi8_afp32,
        "int8": recipe.static_wi8_ai8,
        "int16x8": recipe.static_wi8_ai16,
    }[precision]()


def can_do(precision: str, io_dtype: str = "float32") -> bool:
    """Whether the direct path makes this precision with this I/O: static int8 has int8 I/O, the rest float."""
    if precision == "int8":
        return io_dtype == "int8"
    return precision in DIRECT_PRECISIONS and io_dtype == "float32"


def quantize(source: Path, out: Path, *, precision: DirectPrecision, samples: np.ndarray | None = None) -> dict[str, Any]:
    """Quantize the float .tflite `source` into `out`; `samples` (N, *input shape without batch) for static."""
    if precision not in DIRECT_PRECISIONS:
        raise ConfigError(f"{PATH} does not make precision {precision}", hint=f"one of {', '.join(DIRECT_PRECISIONS)}")
    if precision in STATIC and (samples is None or len(samples) == 0):
        raise ConfigError(f"precision {precision} needs calibration data", hint="add calibration data to the recipe")
    from ai_edge_quantizer import quantizer

    logging.getLogger("absl").setLevel(logging.ERROR)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="eb-aeq-") as tmp:
        prepared = Path(tmp) / "float.tflite"
        prep = tflite_float.float_model(source, prepared)
        try:
            q = quantizer.Quantizer(str(prepared), _recipe(precision))
            calibration = None
            if q.need_calibration:
                key, names = tflite_float.signature_inputs(prepared)
                if len(names) != 1:
                    raise ConfigError(f"{source} has {len(names)} inputs; calibration data feeds one",
                                      hint="use the round trip path, or a single-input model")
                data = np.asarray(samples, np.float32)
                calibration = q.calibrate({key: [{names[0]: s[None]} for s in data]}, num_threads=2)
            blob = bytes(q.quantize(calibration, enable_progress_report=False).quantized_model)
        except (ValueError, RuntimeError, KeyError, NotImplementedError) as exc:
            raise ConversionError(f"{PATH} {precision} quantization of {source} failed: {exc}",
                                  cause="quantizer-failed", log_tail=str(exc).splitlines()[-12:]) from exc
    atomic_write_bytes(Path(out), blob)
    return {
        "precision": precision,
        "path": PATH,
        "quantizer": f"{PATH} {importlib.metadata.version('ai-edge-quantizer')}",
        "size": len(blob),
        "seconds": round(time.monotonic() - start, 2),
        "prepared": prep,
    }
