"""`python -m builder.device_check RUNTIME`: a device image's bring-up check (`builder devices --check`).

Runs a tiny model through the runtime the way a benchmark does, inside the device image with the device
stage's container options, and prints one JSON line: ok, the milliseconds it took, or the error and its fix.
A TensorRT check builds its engine here first (convert.tensorrt), as a run does on the device.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from builder.errors import BuilderError

# relu(2x + 1) as TFLite (made by TensorFlow 2.21's converter) and relu(x) as ONNX (opset 13), both [1, 4] float32
TINY = {
    "tflite": (base64.b64decode(
    "HAAAAFRGTDMUACAAHAAYABQAEAAMAAAACAAEABQAAAAcAAAAHAAAAHQAAABUAQAAZAEAAGQDAAADAAAAAAAAAAIAAAA0AAAABAAA"
    "ANz///8HAAAABAAAABMAAABDT05WRVJTSU9OX01FVEFEQVRBAAgADAAIAAQACAAAAAYAAAAEAAAAEwAAAG1pbl9ydW50aW1lX3Zl"
    "cnNpb24ACAAAANwAAADUAAAAwAAAAKQAAACcAAAAlAAAAHQAAAAEAAAAXv///wQAAABgAAAAEAAAAAAAAAAIAA4ACAAEAAgAAAAQ"
    "AAAAJAAAAAAABgAIAAQABgAAAAQAAAAAAAAADAAYABQAEAAMAAQADAAAADdlf7AXNt3tAwAAAAIAAAAEAAAABgAAADIuMjEuMAAA"
    "yv///wQAAAAQAAAAMS41LjAAAAAAAAAAAAAAAKT9//+o/f//7v///wQAAAAEAAAAAAAAQAAABgAIAAQABgAAAAQAAAAEAAAAAACA"
    "P9T9///Y/f//DwAAAE1MSVIgQ29udmVydGVkLgABAAAAFAAAAAAADgAYABQAEAAMAAgABAAOAAAAFAAAABwAAACsAAAAsAAAALQA"
    "AAAEAAAAbWFpbgAAAAACAAAAZAAAABQAAAAAAA4AGgAUABAADAALAAQADgAAABwAAAAAAAALHAAAACAAAAABAAAAAAAGAAgABwAG"
    "AAAAAAAAAQEAAAAEAAAAAgAAAAMAAAABAAAAAAAOABQAAAAQAAwACwAEAA4AAAAQAAAAAAAAFQwAAAAQAAAAqP7//wEAAAADAAAA"
    "AgAAAAAAAAACAAAAAQAAAAQAAAABAAAAAAAAAAUAAADsAAAApAAAAHQAAABAAAAABAAAAD7///8AAAABEAAAABAAAAAFAAAAGAAA"
    "AAD///8IAAAASWRlbnRpdHkAAAAAAgAAAAEAAAAEAAAAdv///wAAAAEQAAAAEAAAAAQAAAAQAAAAOP///wMAAABtdWwAAgAAAAEA"
    "AAAEAAAApv///wAAAAEQAAAAEAAAAAMAAAAUAAAAaP///wUAAABtdWwveQAAAAAAAADS////AAAAARAAAAAQAAAAAgAAABQAAACU"
    "////BQAAAGFkZC95AAAAAAAAAAAAFgAYABQAAAAQAAwACAAAAAAAAAAHABYAAAAAAAABEAAAABAAAAABAAAAFAAAANj///8FAAAA"
    "aW5wdXQAAAACAAAAAQAAAAQAAAACAAAAHAAAAAgAAAAEAAQABAAAAAwADAALAAAAAAAEAAwAAAASAAAAAAAAEg=="),
    lambda x: np.maximum(2 * x + 1, 0)),
    "onnx": (base64.b64decode(
    "CAg6UAoVCgVpbnB1dBIGb3V0cHV0IgRSZWx1EgR0aW55WhcKBWlucHV0Eg4KDAgBEggKAggBCgIIBGIYCgZvdXRwdXQSDgoMCAES"
    "CAoCCAEKAggEQgQKABAN"),
    lambda x: np.maximum(x, 0)),
}
CHECKED_AS = {"litert": ("tflite", "litert"), "ethos-u": ("tflite", "litert"), "onnxruntime": ("onnx", "onnxruntime"),
              "openvino": ("onnx", "openvino"), "tensorrt": ("onnx", "tensorrt")}
"""A target's runtime -> the tiny model's format and the runtime that runs it (the Ethos-U NPU is not here:
its device image runs the fp32 baseline in LiteRT)."""


def _engine(onnx: Path) -> Path:
    """The tiny ONNX model built into a TensorRT engine by the step a run uses."""
    from builder.steps.base import StepCall, StepContext
    from builder.steps.tensorrt import ToTensorrt

    call = StepCall(id="check", kind=ToTensorrt.kind, stage="device", inputs={"model": onnx.name},
                    outputs={"model": "tiny.engine"})
    ToTensorrt().run(StepContext(workdir=onnx.parent, call=call, log=logging.getLogger("check")),
                     ToTensorrt.Params(precision="fp16"))
    return onnx.parent / "tiny.engine"


def check(runtime: str, folder: Path) -> dict:
    from builder import runtimes

    if runtime not in CHECKED_AS:
        return {"ok": True, "note": f"no tiny model for runtime {runtime}: only the image was checked"}
    fmt, runs_in = CHECKED_AS[runtime]
    data, expected = TINY[fmt]
    model = folder / f"tiny.{fmt}"
    model.write_bytes(data)
    started = time.perf_counter()
    if runs_in == "tensorrt":
        model = _engine(model)
    session = runtimes.load(model, runtime=runs_in, threads=1)
    x = np.array([[-1.0, 0.0, 0.5, 2.0]], dtype=np.float32)
    got = session.run([x])[0]
    if not np.allclose(got, expected(x), atol=1e-2):
        return {"ok": False, "error": f"{runs_in} ran the tiny model wrongly: {got.tolist()}",
                "hint": "the runtime's install is broken: rebuild the device image (--rebuild)"}
    result = {"ok": True, "runtime": runs_in, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if runs_in == "tensorrt":
        from builder import trtexec

        binary = trtexec.trtexec_binary()
        result["trtexec"] = str(binary) if binary else "absent: benchmarks will have no trtexec figures"
    return result


def main(runtime: str) -> int:
    try:
        with tempfile.TemporaryDirectory() as folder:
            result = check(runtime, Path(folder))
    except BuilderError as exc:
        result = {"ok": False, "error": exc.message, "hint": exc.hint, "cause": getattr(exc, "cause", None)}
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer, reported with its type
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
