"""ONNX -> TensorFlow SavedModel with onnx2tf, for the uniform TFLite path.

onnx2tf transposes 4-D NCHW inputs to NHWC (unless told to keep them), keeps
the ONNX input names and names outputs `output_0`, `output_1` ... in the
`serving_default` signature. It runs in a subprocess because it calls
`sys.exit` on errors, logs heavily, rewrites its input file in place and, for
image-like inputs, reads sample data from `calibration_image_sample_data_20x128x128x3_float32.npy`
in its working directory (downloading it from GitHub if absent, which fails
offline): we write that file ourselves, from the calibration data when given.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from builder.errors import ConversionError
from builder.stage.causes import first_error, known_cause, strip_ansi
from builder.util import atomic_copy

log = logging.getLogger(__name__)

_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_KEEP = {"saved_model.pb", "fingerprint.pb", "variables", "assets"}

# Runs in the child: convert, then report the SavedModel's serving signature as JSON.
_RUNNER = """
import json, sys
import onnx2tf
args, result = json.loads(sys.argv[1]), sys.argv[2]
onnx2tf.convert(**args)
import tensorflow as tf
sig = tf.saved_model.load(args["output_folder_path"]).signatures["serving_default"]
spec = lambda t: {"shape": [d if d is not None else -1 for d in t.shape.as_list()], "dtype": t.dtype.name}
json.dump({"inputs": {k: spec(v) for k, v in sig.structured_input_signature[1].items()},
           "outputs": {k: spec(v) for k, v in sig.structured_outputs.items()}}, open(result, "w"))
"""


def _sample_data(calibration: np.ndarray | None) -> np.ndarray:
    """onnx2tf's sample images: NHWC 3-channel float32, resized by onnx2tf to the input size."""
    if calibration is not None and calibration.ndim == 4 and 3 in (calibration.shape[1], calibration.shape[3]):
        data = calibration[:20]
        return np.ascontiguousarray(data.transpose(0, 2, 3, 1) if data.shape[1] == 3 else data, dtype=np.float32)
    return np.random.default_rng(0).uniform(0.0, 1.0, (20, 128, 128, 3)).astype(np.float32)


def _graph_input_names(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


_BAD_SCOPE_CHARS = re.compile(r"[^A-Za-z0-9_.\\/>-]")


def _copy_with_scope_names(src: Path, dst: Path) -> int:
    """Copy `src` with node names TensorFlow accepts as scope names; returns how many were renamed.

    onnx2tf names TF ops after ONNX nodes, and exporters such as Paddle2ONNX
    write names like `Softmax@0`, which TF rejects ("not a valid scope name").
    """
    import onnx

    try:
        model = onnx.load(str(src))
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise ConversionError(f"cannot read {src.name} as ONNX: {exc}", cause="invalid-onnx", log_tail=[str(exc)],
                              hint="re-export the model, or check that the download is complete") from exc
    renamed = 0
    for node in model.graph.node:
        clean = _BAD_SCOPE_CHARS.sub("_", node.name)
        if clean != node.name:
            node.name, renamed = clean, renamed + 1
    onnx.save(model, str(dst))
    return renamed


def _log_tail(text: str, lines: int = 25) -> list[str]:
    noise = ("I0000", "W0000", "E0000", "WARNING: All log messages", "To enable the following")
    kept = [line for line in strip_ansi(text).splitlines() if line.strip() and not line.startswith(noise)]
    return kept[-lines:]


def _failure(onnx_path: Path, output: str, returncode: int) -> ConversionError:
    """The first real error onnx2tf printed (and the ONNX node it was converting) as the message."""
    first = first_error(output)
    node = re.search(r"^(?:ERROR: )?onnx_op_name: (\S+)", strip_ansi(output), re.MULTILINE)
    detail = (first or f"exit code {returncode}") + (f" (ONNX node {node.group(1)})" if first and node else "")
    cause = known_cause(first or "") or "onnx2tf-failed"
    return ConversionError(f"onnx2tf could not convert {onnx_path.name}: {detail}", cause=cause,
                           log_tail=_log_tail(output), hint="see the log tail for the ONNX node onnx2tf failed on")


def _args(model: Path, saved: Path, work: Path, keep_nchw: bool, options: dict) -> dict:
    """onnx2tf.convert's keyword arguments: ours, then the recipe's options (source.onnx2tf)."""
    args: dict = {
        "input_onnx_file_path": str(model),
        "output_folder_path": str(saved),
        "non_verbose": True,
        "output_signaturedefs": True,
        "not_use_onnxsim": True,  # simplify_onnx already ran; onnxsim is not installed
    }
    options = dict(options)
    if keep_nchw:
        options["keep_ncw_or_nchw_or_ncdhw_input_names"] = _graph_input_names(model)
    if options.get("replace_to_pseudo_operators"):  # onnx2tf's CLI lowercases them, its Python API does not
        options["replace_to_pseudo_operators"] = [op.lower() for op in options["replace_to_pseudo_operators"]]
    if options.get("param_replacements"):
        replacements = work / "param_replacement.json"
        replacements.write_text(json.dumps({"format_version": 1, "operations": options.pop("param_replacements")}))
        options["param_replacement_file"] = str(replacements)
    return args | options


def onnx_to_saved_model(
    onnx_path: Path, out_dir: Path, *, calibration: np.ndarray | None = None, keep_nchw: bool = False,
    options: dict | None = None,
) -> dict:
    """Convert `onnx_path` to a SavedModel directory `out_dir` (only the SavedModel is kept).

    `calibration` (N, C, H, W) float32 only seeds onnx2tf's internal output check;
    quantization happens later in `builder.backends.litert.tflite.to_tflite`. `options` are
    onnx2tf.convert's own (`Onnx2tfOptions`, with `param_replacements` as a list).
    Returns the serving signature (NHWC shapes unless the inputs keep NCHW) and timing.
    """
    import onnx2tf

    with tempfile.TemporaryDirectory(prefix="onnx2tf-") as tmpdir:
        work = Path(tmpdir)
        model = work / "model.onnx"
        renamed = _copy_with_scope_names(onnx_path, model)
        if renamed:
            log.info("renamed %d ONNX node(s) whose names TensorFlow rejects as scope names", renamed)
        np.save(work / _SAMPLE_FILE, _sample_data(calibration))
        saved = work / "saved_model"
        args = _args(model, saved, work, keep_nchw, options or {})
        kept = set(args.get("keep_ncw_or_nchw_or_ncdhw_input_names") or ())
        layout = "NCHW" if kept and kept >= set(_graph_input_names(model)) else "NHWC"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", _RUNNER, json.dumps(args), str(work / "signature.json")],
            cwd=work, capture_output=True, text=True, env=env,
        )
        seconds = time.monotonic() - started
        output = proc.stdout + proc.stderr
        log.debug("onnx2tf output:\n%s", output)
        if proc.returncode != 0 or not (saved / "saved_model.pb").is_file():
            raise _failure(onnx_path, output, proc.returncode)
        for entry in saved.iterdir():
            if entry.name not in _KEEP:  # float32/float16 .tflite side products
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        signature = json.loads((work / "signature.json").read_text())
        atomic_copy(saved, out_dir)
    return {
        "tool": f"onnx2tf {onnx2tf.__version__}",
        "seconds": round(seconds, 2),
        "layout": layout,
        "signature": "serving_default",
        **signature,
    }
