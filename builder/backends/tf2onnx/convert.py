"""TensorFlow -> ONNX with tf2onnx, run in a subprocess: a SavedModel, a Keras file or a .tflite."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from builder.backends.litert import tflite_float
from builder.errors import ConversionError
from builder.stage.causes import first_error, known_cause, strip_ansi
from builder.util import atomic_copy


def _failure(source: Path, output: str, returncode: int) -> ConversionError:
    """The first real error tf2onnx printed as the message."""
    first = first_error(output) or f"exit code {returncode}"
    return ConversionError(f"tf2onnx could not convert {source.name}: {first}",
                           cause=known_cause(first) or "tf2onnx-failed",
                           log_tail=strip_ansi(output).strip().splitlines()[-20:],
                           hint="see the log tail; unsupported TF ops may need a newer opset")


def _run(args: list[str], log_dir: Path, source: Path) -> None:
    """Run tf2onnx; a failure names `source`, the file the user gave."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", *args], cwd=log_dir,
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise _failure(source, proc.stdout + proc.stderr, proc.returncode)


def tf_to_onnx(
    source: Path, out: Path, *, source_format: Literal["saved_model", "keras", "tflite"], opset: int = 17,
    nchw_inputs: list[str] | None = None,
) -> dict:
    """Convert a SavedModel, Keras file or .tflite to ONNX with tf2onnx (run in a subprocess).

    A Keras file is first exported to a SavedModel (Keras 3 models are not
    handled by tf2onnx's `from_keras`). A .tflite with sparse (DENSIFY) or fp16-stored weights is
    first made dense fp32 (tf2onnx cannot read sparse weights, and ONNX Runtime's quantizer sees
    fp16 weights behind a Cast as activations). TFLite inputs keep their NHWC layout.
    """
    import tf2onnx

    given, report = source, {}
    with tempfile.TemporaryDirectory(prefix="tf2onnx-") as tmpdir:
        work = Path(tmpdir)
        if source_format == "tflite":
            try:
                stored = tflite_float.describe(source)
            except Exception:  # not a TFLite flatbuffer: tf2onnx's own error says so
                stored = {"sparse_tensors": [], "fp16_weights": 0}
            if stored["sparse_tensors"] or stored["fp16_weights"]:
                dense = work / "dense.tflite"
                report["source_edits"] = tflite_float.float_model(source, dense)
                source = dense
        if source_format == "keras":
            import keras

            keras.models.load_model(str(source), compile=False, safe_mode=True).export(  # no Lambda layer code runs
                str(work / "saved_model"), verbose=False)
            source, source_format = work / "saved_model", "saved_model"
        flag = {"saved_model": "--saved-model", "tflite": "--tflite"}[source_format]
        tmp_out = work / "model.onnx"
        args = [flag, str(source), "--output", str(tmp_out), "--opset", str(opset)]
        if nchw_inputs:  # transpose these NHWC inputs to NCHW, the layout onnx2tf and ONNX tools expect
            args += ["--inputs-as-nchw", ",".join(nchw_inputs)]
        _run(args, work, given)
        atomic_copy(tmp_out, out)
    return {"opset": opset, "exporter": "tf2onnx", "tf2onnx": tf2onnx.__version__, **report}
