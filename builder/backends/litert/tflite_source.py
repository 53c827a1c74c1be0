"""A .tflite input: whether a source is quantized already, and convert.tflite on it: ai-edge-quantizer first, the
tf2onnx+onnx2tf round trip second.

A downloaded float .tflite (mediapipe, TF Hub) is quantized as TFLite; the round
trip, which fails on fp16-stored, sparse or custom-op files, is only tried for
what the direct path cannot make (e.g. uint8 I/O) or when it fails. The record
says which path made the artifact, and the artifact is checked to differ from fp32.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuilderError, ConversionError
from builder.stage.source_precision import SourcePrecision, reader
from builder.stage.steps.base import StepContext
from builder.stage.steps.layout import samples_for
from builder.util import atomic_copy, remove

if TYPE_CHECKING:
    from builder.backends.litert.steps import ToTflite


@reader("tflite")
def quantization(path: Path) -> SourcePrecision | None:
    """int8 when the file stores integer weights."""
    from builder.backends.litert.tflite import tflite_ops

    weights = tflite_ops(path).get("weight_dtypes", {})
    integer = {t: n for t, n in weights.items() if t in ("int8", "uint8")}
    if integer:
        return SourcePrecision(precision="int8", evidence=", ".join(f"{n} {t} weights" for t, n in integer.items()))
    return None


DIRECT = "ai-edge-quantizer"
ROUND_TRIP = "tf2onnx+onnx2tf"


def _round_trip(model: Path, out: Path, params: ToTflite.Params, samples) -> dict:
    from builder.backends.litert import onnx2tf, tflite
    from builder.backends.tf2onnx.convert import tf_to_onnx
    from builder.stage.runtimes import load

    with tempfile.TemporaryDirectory(prefix="roundtrip-") as tmp:
        onnx_model, saved_model = Path(tmp) / "model.onnx", Path(tmp) / "saved_model"
        # as convert.tf_onnx does: ONNX gets NCHW inputs, which onnx2tf turns back into the source's NHWC
        nchw = [t.name for t in load(model).inputs if len(t.shape) == 4] if params.layout == "NHWC" else None
        tf_to_onnx(model, onnx_model, source_format="tflite", opset=17, nchw_inputs=nchw)
        onnx2tf.onnx_to_saved_model(onnx_model, saved_model)
        representative = tflite.representative_from_array(samples) if samples is not None else None
        return tflite.to_tflite(saved_model, out, source_format="saved_model", precision=params.precision,
                                representative=representative, io_dtype=params.io_dtype,
                                require_full_int8=params.require_full_int8)


def _direct(model: Path, out: Path, precision: str, require_full_int8: bool, samples) -> dict:
    from builder.backends.litert import tflite, tflite_quant
    from builder.stage.runtimes import load

    report = tflite_quant.quantize(model, out, precision=precision, samples=samples)
    try:  # the quantizer can write a model that LiteRT refuses (e.g. int16x8 bias scales that overflow)
        load(out)
    except BuilderError as exc:
        remove(out)
        raise ConversionError(f"{DIRECT} made a {precision} model that LiteRT cannot load: {exc.message}",
                              cause="quantizer-failed") from exc
    info = tflite.tflite_ops(out)
    if precision in ("int8", "int16x8") and info["float_ops"] and require_full_int8:
        remove(out)
        raise ConversionError(f"{DIRECT} {precision} of {model} left ops computing in float: "
                              f"{', '.join(info['float_ops'])}", cause="not-fully-quantized",
                              hint="set require_full_int8: false to accept float fallback for these ops")
    return report | info


def _fp32(model: Path, out: Path, source: dict) -> dict:
    """The source as it is, or, if it stores fp16 or sparse weights, its dense fp32 form: the reference every
    variant is compared with, and what an fp16 variant must differ from."""
    from builder.backends.litert import tflite_float

    if not (source["fp16_weights"] or source["sparse_tensors"]):
        atomic_copy(model, out)
        return {"path": "source as is", "conversion": {"path": "source as is"}}
    path = "source with its weights made dense fp32"
    return {"path": path, "weights_stored_as": "fp16" if source["fp16_weights"] else "sparse",
            "conversion": {"path": path, "prepared": tflite_float.float_model(model, out)}}


def from_tflite(ctx: StepContext, params: ToTflite.Params) -> dict:
    """Make one precision (convert.tflite's params) of a .tflite source; the record names the path and what
    the source stores."""
    from builder.backends.litert import tflite, tflite_float, tflite_quant, tflite_variant

    model, out = ctx.input("model"), ctx.output("model")
    precision, io_dtype = params.precision, params.io_dtype
    samples = samples_for(ctx.input("calibration"), params) if precision in ("int8", "int16x8") else None
    source = tflite_float.describe(model)
    record: dict = {"source": source}
    report = None
    if precision == "fp32":
        return record | _fp32(model, out, source)
    if tflite_quant.can_do(precision, io_dtype):
        try:
            report = _direct(model, out, precision, params.require_full_int8, samples) | {"path": DIRECT}
        except ConversionError as exc:
            if exc.cause == "sparse-weights":
                raise
            ctx.log.warning("%s could not make %s (%s): trying %s", DIRECT, precision, exc.message, ROUND_TRIP)
            record["direct_failure"] = {"cause": exc.cause, "error": exc.message, "hint": exc.hint}
    else:
        record["direct_failure"] = {"cause": "unsupported", "error": f"{DIRECT} does not make {precision} "
                                    f"with {io_dtype} inputs/outputs", "hint": None}
    if report is None:
        try:
            report = _round_trip(model, out, params, samples) | {"path": ROUND_TRIP}
        except BuilderError as exc:
            direct = record["direct_failure"]
            if direct["cause"] == "unsupported":
                raise
            # the direct path's reason is the root cause; the round trip was only a second try
            raise ConversionError(f"{direct['error']}; the {ROUND_TRIP} round trip failed too: {exc.message}",
                                  cause=direct["cause"], hint=direct["hint"]) from exc
    built = tflite.tflite_ops(out)
    try:
        tflite_variant.check_variant(precision, built, out.stat().st_size, tflite.tflite_ops(model), model.stat().st_size)
    except ConversionError:
        remove(out)
        raise
    return record | {"conversion": report, "path": report["path"]}
