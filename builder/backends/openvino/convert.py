"""OpenVINO IR conversion (fp32 / fp16 weights) and NNCF post-training int8 quantization.

Sources: an ONNX file, a .tflite file or a SavedModel directory (`ov.convert_model`
reads all three). IR is two files, `model.xml` + `model.bin`; both are written
in a temp folder beside the output and then renamed into place.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from builder.backends.openvino.options import NncfPtq
from builder.errors import ConfigError, ConversionError
from builder.stage.causes import first_error, known_cause

# OpenVINO 2026 frontends: "No translator found for Convolution2DTransposeBias node." (TFLite),
# "No conversion rule found for operations: X" (ONNX); older: "Cannot create X layer".
_OP_PATTERNS = [
    re.compile(r"No translator found for ([\w./:-]+) node"),
    re.compile(r"Cannot create (\w+) layer"),
    re.compile(r"[Nn]o conversion rule (?:is )?found for (?:ops?|operations?)[:\s]+['\"]?([\w./:-]+)"),
    re.compile(r"[Uu]nsupported (?:operation|op)[:\s]+['\"]?([\w./:-]+)"),
    re.compile(r"(\w+) is not supported"),
]


def _unsupported_op(message: str) -> str | None:
    for pattern in _OP_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def _stable_names(model: Any) -> None:
    """Rename auto-named nodes (`Constant_226064`) by position: OpenVINO numbers them from a
    process-wide counter, so the same model saved in two runs would differ in its .xml."""
    for index, op in enumerate(model.get_ordered_ops()):
        if re.fullmatch(rf"{re.escape(op.get_type_name())}_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")


def _save_ir(model: Any, out_xml: Path, *, compress_fp16: bool) -> None:
    import openvino as ov

    if out_xml.suffix != ".xml":
        raise ConfigError(f"OpenVINO output {out_xml} must end in .xml")
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    _stable_names(model)
    with tempfile.TemporaryDirectory(prefix=f".{out_xml.stem}.", dir=out_xml.parent) as tmp:
        staged = Path(tmp) / out_xml.name
        ov.save_model(model, str(staged), compress_to_fp16=compress_fp16)
        # .bin first: a reader that finds the new .xml always finds its weights.
        os.replace(staged.with_suffix(".bin"), out_xml.with_suffix(".bin"))
        os.replace(staged, out_xml)


def _weights_bytes(model: Any) -> int:
    """Size of the model's weights saved without fp16 compression (the fp32 variant's .bin)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="eb-ov-") as tmp:
        ov.save_model(model, str(Path(tmp) / "m.xml"), compress_to_fp16=False)
        return (Path(tmp) / "m.bin").stat().st_size


def _check_fp16_changed_something(out_xml: Path, fp32_weights: int) -> None:
    """An "fp16" IR whose weights are as large as fp32's is fp32 again (a source that stores fp16 weights)."""
    fp16_weights = out_xml.with_suffix(".bin").stat().st_size
    if fp16_weights >= 0.95 * fp32_weights:
        for path in (out_xml, out_xml.with_suffix(".bin")):
            path.unlink(missing_ok=True)
        raise ConversionError(
            f"not different from fp32: compressing weights to fp16 left {fp16_weights} of {fp32_weights} bytes "
            "(the source's weights are stored as fp16 already, or there are none)",
            cause="no-op-variant", hint="drop the fp16 variant for this model: fp32 already is what it would be")


def to_openvino(
    src: Path, out_xml: Path, *, compress_fp16: bool = False, input_shapes: dict[str, list[int]] | None = None
) -> dict:
    """Convert `src` (ONNX, .tflite or SavedModel dir) to OpenVINO IR at `out_xml` (+ .bin)."""
    import openvino as ov

    started = time.monotonic()
    try:
        inputs = {name: ov.PartialShape(shape) for name, shape in input_shapes.items()} if input_shapes else None
        model = ov.convert_model(str(src), input=inputs)
    except Exception as exc:
        message = str(exc)
        op = _unsupported_op(message)
        tail = [line for line in message.splitlines() if line.strip()][-20:]
        if op:
            raise ConversionError(
                f"OpenVINO cannot convert {src.name}: unsupported op {op}", cause="unsupported-op", log_tail=tail,
                hint=f"{op} has no OpenVINO conversion rule; use another runtime for this model "
                "or replace the op in the source model",
            ) from exc
        first = first_error(message, any_line=True) or type(exc).__name__
        raise ConversionError(f"OpenVINO could not convert {src.name}: {first}",
                              cause=known_cause(first) or "openvino-failed", log_tail=tail,
                              hint="check the input shapes; convert through ONNX if the source is TF") from exc
    fp32_weights = _weights_bytes(model) if compress_fp16 else None
    _save_ir(model, out_xml, compress_fp16=compress_fp16)
    if fp32_weights is not None:
        _check_fp16_changed_something(out_xml, fp32_weights)
    return {
        "converter": f"openvino {ov.get_version()}",
        "compress_fp16": compress_fp16,
        "seconds": round(time.monotonic() - started, 2),
        "size": out_xml.stat().st_size + out_xml.with_suffix(".bin").stat().st_size,
        "inputs": {p.get_any_name(): str(p.get_partial_shape()) for p in model.inputs},
    }


def _dataset(samples: np.ndarray):
    import nncf

    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim < 2 or len(samples) == 0:
        raise ConfigError(f"calibration data must be (N, ...) samples without batch dim, got shape {samples.shape}")
    return nncf.Dataset(samples, lambda sample: sample[None])


def _subset(calibration: np.ndarray, subset_size: int | None) -> int:
    """The calibration samples NNCF uses: all of them unless `subset_size` says fewer."""
    return min(len(calibration), subset_size or len(calibration))


def _ptq_kwargs(ptq: NncfPtq, subset_size: int) -> dict:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    kwargs: dict = {
        "preset": nncf.QuantizationPreset(ptq.preset),
        "subset_size": subset_size,
        "fast_bias_correction": ptq.fast_bias_correction,
        "advanced_parameters": AdvancedQuantizationParameters(overflow_fix=OverflowFix(ptq.overflow_fix)),
    }
    if ptq.ignored_scope:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(ptq.ignored_scope))
    if ptq.model_type is not None:
        kwargs["model_type"] = nncf.ModelType(ptq.model_type)
    return kwargs


def _quantized(xml: Path, out_xml: Path, started: float, run: Callable[[Any], Any]) -> dict:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    try:
        quantized = run(model)
    except (nncf.ValidationError, nncf.InternalError, RuntimeError, ValueError) as exc:
        raise ConversionError(f"NNCF could not quantize {xml.name}: {exc}", cause="quantization-failed",
                              hint="check the calibration data layout (N, C, H, W without batch dim)") from exc
    _save_ir(quantized, out_xml, compress_fp16=False)
    return {
        "quantizer": f"nncf {nncf.__version__}",
        "seconds": round(time.monotonic() - started, 2),
        "size": out_xml.stat().st_size + out_xml.with_suffix(".bin").stat().st_size,
    }


def nncf_quantize(xml: Path, out_xml: Path, calibration: np.ndarray, **options) -> dict:
    """NNCF post-training int8 quantization of an IR with `options` (NncfPtq's fields); `calibration` is
    (N, ...) without batch dim, all of it used unless `subset_size` says fewer."""
    import nncf

    ptq = NncfPtq(**options)
    dataset = _dataset(calibration)
    samples = _subset(calibration, ptq.subset_size)
    kwargs = _ptq_kwargs(ptq, samples)
    report = _quantized(xml, out_xml, time.monotonic(), lambda model: nncf.quantize(model, dataset, **kwargs))
    return {**report, "preset": ptq.preset, "samples": samples}


ValidationFn = Callable[[Any, np.ndarray, np.ndarray], float]


def nncf_quantize_with_accuracy_control(
    xml: Path,
    out_xml: Path,
    calibration: np.ndarray,
    validation: np.ndarray,
    validation_fn: ValidationFn,
    *,
    max_drop: float = 0.01,
    drop_type: Literal["absolute", "relative"] = "absolute",
    max_reverted: int | None = None,
    **options,
) -> dict:
    """Int8 PTQ with `options` (NncfPtq's fields) that reverts the most harmful layers to float (at most
    `max_reverted`) until the metric drop is <= `max_drop`.

    `validation_fn(compiled_model, samples, indices)` returns the metric
    (higher is better) on `validation[indices]`; NNCF calls it on the whole set
    and on single samples when it ranks layers, so `indices` lets the function
    look up labels or reference outputs.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    validation = np.asarray(validation, dtype=np.float32)
    # Items are indices so that every call can tell which samples it got.
    val_dataset = nncf.Dataset(list(range(len(validation))), lambda i: validation[i][None])

    def metric(compiled_model: Any, items: Any) -> float:
        indices = np.asarray(list(items), dtype=np.int64)
        return float(validation_fn(compiled_model, validation[indices], indices))

    ptq = NncfPtq(**options)
    cal_dataset = _dataset(calibration)
    kwargs = _ptq_kwargs(ptq, _subset(calibration, ptq.subset_size))
    kwargs["advanced_quantization_parameters"] = kwargs.pop("advanced_parameters")  # this API's name for it
    if max_reverted is not None:  # NNCF's iterations: one layer reverted to float each
        kwargs["advanced_accuracy_restorer_parameters"] = AdvancedAccuracyRestorerParameters(
            max_num_iterations=max_reverted)
    report = _quantized(xml, out_xml, time.monotonic(), lambda model: nncf.quantize_with_accuracy_control(
        model, cal_dataset, val_dataset, metric, max_drop=max_drop, drop_type=nncf.DropType(drop_type), **kwargs))
    return {**report, "preset": ptq.preset, "max_drop": max_drop, "drop_type": drop_type}


def compress_fp16(xml: Path, out_xml: Path) -> dict:
    """An IR's weights compressed to fp16."""
    import openvino as ov

    started = time.monotonic()
    _save_ir(ov.Core().read_model(str(xml)), out_xml, compress_fp16=True)
    return {"converter": f"openvino {ov.get_version()}", "compress_fp16": True,
            "seconds": round(time.monotonic() - started, 2),
            "size": out_xml.stat().st_size + out_xml.with_suffix(".bin").stat().st_size}


def quantized_ops(xml: Path) -> set[str]:
    """The ops of an IR whose data input comes through a FakeQuantize: the ones NNCF quantized."""
    import openvino as ov

    return {op.get_friendly_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()
            if op.get_input_size() and op.get_type_name() != "FakeQuantize"
            and op.input_value(0).get_node().get_type_name() == "FakeQuantize"}


def compile_f32(xml: Path, threads: int | None = None) -> Any:
    """Compile an IR on CPU with f32 inference precision (the CPU may default to bf16)."""
    import openvino as ov

    config: dict = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(xml), "CPU", config)


__all__ = ["compile_f32", "compress_fp16", "nncf_quantize", "quantized_ops", "nncf_quantize_with_accuracy_control", "to_openvino"]
