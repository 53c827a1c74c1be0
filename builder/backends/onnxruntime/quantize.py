"""ONNX Runtime quantization: dynamic (weights only) and static QDQ with calibration."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

from builder.errors import ConfigError, ConversionError
from builder.util import atomic_copy

log = logging.getLogger(__name__)

QuantDtype = Literal["int8", "uint8", "int16"]  # int16: activations of int16x8


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "int16": QuantType.QInt16}
    if name not in types:
        raise ConfigError(f"ONNX Runtime quantization type {name!r} is not one of {sorted(types)}")
    return types[name]


def _preprocessed(src: Path, work: Path) -> Path:
    """quant_pre_process (shape inference + graph optimization); the source if it cannot run."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / "preprocessed.onnx"
    try:
        quant_pre_process(str(src), str(out))
        return out
    except Exception as exc:  # symbolic shape inference fails on some graphs; quantization still works
        log.warning("quant_pre_process skipped for %s: %s", src.name, exc)
        return src


PER_CHANNEL_OPSET = 13  # DequantizeLinear takes `axis` (per-channel scales) from opset 13 on


def _with_opset(src: Path, work: Path, opset: int) -> Path:
    """`src` converted to at least `opset` of the default domain (e.g. Paddle exports at opset 11)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(src))
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return src
    log.info("upgrading %s from opset %d to %d for per-channel quantization", src.name, current, opset)
    out = work / f"opset{opset}.onnx"
    onnx.save(version_converter.convert_version(model, opset), str(out))
    return out


def _finish(tmp_out: Path, out: Path, started: float, **report) -> dict:
    import onnxruntime

    atomic_copy(tmp_out, out)
    return {"quantizer": f"onnxruntime {onnxruntime.__version__}", "seconds": round(time.monotonic() - started, 2),
            "size": out.stat().st_size, **report}


def ort_quantize_dynamic(src: Path, out: Path, *, per_channel: bool = False, weight_type: QuantDtype = "int8") -> dict:
    """Int8 weights, activations quantized on the fly at run time (MatMul/Gemm/Conv...)."""
    from onnxruntime.quantization import quantize_dynamic

    qtype = _quant_type(weight_type)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ort-quant-") as tmp:
        work = Path(tmp)
        try:
            model = _preprocessed(_with_opset(src, work, PER_CHANNEL_OPSET) if per_channel else src, work)
            quantize_dynamic(model, work / "model.onnx", per_channel=per_channel, weight_type=qtype)
        except Exception as exc:
            raise ConversionError(f"ONNX Runtime dynamic quantization of {src.name} failed: {exc}",
                                  cause="quantization-failed") from exc
        return _finish(work / "model.onnx", out, started, mode="dynamic", per_channel=per_channel,
                       weight_type=weight_type)


class ArrayDataReader:
    """CalibrationDataReader over (N, ...) samples without batch dim, for the model's single input."""

    def __init__(self, input_name: str, samples: np.ndarray):
        self._input_name = input_name
        self._samples = np.asarray(samples, dtype=np.float32)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._samples):
            return None
        sample = self._samples[self._next][None]
        self._next += 1
        return {self._input_name: sample}


def _graph_inputs(path: Path) -> list:
    """The model's inputs (ValueInfoProto) that are fed at run time, not initializers."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def input_dtype(path: Path) -> str:
    """The numpy dtype of the model's inputs, e.g. "float32" (comma-separated when they differ)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    dtypes = (tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name for i in _graph_inputs(path))
    return ",".join(dict.fromkeys(dtypes))


def single_input(path: Path) -> str:
    names = [i.name for i in _graph_inputs(path)]
    if len(names) != 1:
        raise ConfigError(f"static quantization from an array needs a single-input model; {path.name} has {names}")
    return names[0]


ENTROPY_BINS = (2048, 128)  # histogram bins, and the bins a range is fitted to by KL divergence (TensorRT's)
HISTOGRAM_CHUNK = 16  # samples whose every activation is held at once while histograms are built


def _histogram_ranges(model: Path, calibration: np.ndarray, method: str, symmetric: bool, work: Path) -> dict:
    """Activation ranges from histograms, as TensorQuantOverrides, built HISTOGRAM_CHUNK samples at a time:
    ONNX Runtime's histogram calibrators keep every activation of every sample they are given, which on
    520 samples of EfficientNet-Lite0 took more memory than the machine had. Its histograms merge across
    calls. quantize_static's own entropy method uses 128 bins for both (onnxruntime 1.31), so its threshold
    is always the whole range (minmax by another name): entropy here fits 128 bins to 2048."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    options = ({"symmetric": symmetric, "num_bins": ENTROPY_BINS[0], "num_quantized_bins": ENTROPY_BINS[1]}
               if method == "entropy" else {})  # percentile: onnxruntime's own defaults, as quantize_static's
    calibrator = create_calibrator(str(model), augmented_model_path=str(work / f"{method}.onnx"),
                                   calibrate_method=CalibrationMethod[method.capitalize()], extra_options=options)
    name = single_input(model)
    for start in range(0, len(calibration), HISTOGRAM_CHUNK):
        calibrator.collect_data(ArrayDataReader(name, calibration[start:start + HISTOGRAM_CHUNK]))
    return {name: [{"rmin": np.float32(tensor.range_value[0]), "rmax": np.float32(tensor.range_value[1])}]
            for name, tensor in calibrator.compute_data().data.items()}


def ort_quantize_static(
    src: Path,
    out: Path,
    calibration: np.ndarray,
    *,
    method: Literal["minmax", "entropy", "percentile"] = "minmax",
    per_channel: bool = True,
    activation_type: QuantDtype = "uint8",
    weight_type: QuantDtype = "int8",
    quant_format: Literal["QDQ", "QOperator"] = "QDQ",
    symmetric_activations: bool = False,
    quantize_bias: bool = True,
    reduce_range: bool = False,
    nodes_to_exclude: list[str] | None = None,
) -> dict:
    """Static quantization with calibration; QDQ keeps the graph float-typed around Q/DQ pairs.

    uint8 activations with int8 weights run on ONNX Runtime's u8 x s8 CPU kernels; with int8
    activations the same model ran 1.7x slower than fp32 on an AVX2 CPU (bench/ort_int8.py).
    Those kernels can saturate on x86 CPUs without VNNI; `reduce_range` (7-bit weights) avoids it.

    `symmetric_activations` gives every activation zero point 0 and `quantize_bias=False`
    keeps biases float instead of int32 behind a DequantizeLinear: what TensorRT's explicit
    quantization accepts (its ONNX parser rejects non-zero zero points and int32 Q/DQ inputs).
    `nodes_to_exclude` stay float. int16 activations use ONNX Runtime's own Q/DQ ops below opset 21.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    if method not in ("minmax", "entropy", "percentile"):
        raise ConfigError(f"calibration method {method!r} is not one of ['entropy', 'minmax', 'percentile']")
    types = _quant_type(activation_type), _quant_type(weight_type)
    if len(calibration) == 0:
        raise ConfigError("calibration data is empty", hint="give at least one calibration sample")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ort-quant-") as tmp:
        work = Path(tmp)
        model = _preprocessed(_with_opset(src, work, PER_CHANNEL_OPSET) if per_channel else src, work)
        reader = ArrayDataReader(single_input(model), calibration)
        try:
            # minmax keeps only each activation's extremes; the histogram methods' ranges come in as overrides
            overrides = ({} if method == "minmax"
                         else _histogram_ranges(model, calibration, method, symmetric_activations, work))
            quantize_static(
                model, work / "model.onnx", reader, quant_format=QuantFormat[quant_format],
                per_channel=per_channel, reduce_range=reduce_range, activation_type=types[0], weight_type=types[1],
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(nodes_to_exclude or ()),
                extra_options={"ActivationSymmetric": symmetric_activations, "QuantizeBias": quantize_bias,
                               "UseQDQContribOps": activation_type == "int16", "TensorQuantOverrides": overrides},
            )
        except Exception as exc:
            raise ConversionError(f"ONNX Runtime static quantization of {src.name} failed: {exc}",
                                  cause="quantization-failed",
                                  hint="check the calibration data matches the model input (N, C, H, W)") from exc
        return _finish(work / "model.onnx", out, started, mode="static", method=method, format=quant_format,
                       per_channel=per_channel, activation_type=activation_type, weight_type=weight_type,
                       symmetric_activations=symmetric_activations, quantize_bias=quantize_bias,
                       reduce_range=reduce_range, samples=len(calibration),
                       **({"kept_float": list(nodes_to_exclude)} if nodes_to_exclude else {}))
