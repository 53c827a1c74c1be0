"""`python -m builder.stage.device_check RUNTIME [STEP...]`: a device image's bring-up check (`builder devices --check`).

Runs a tiny model through the runtime the way a benchmark does, inside the device image with the device
stage's container options, and prints one JSON line: ok, the milliseconds it took, or the error and its fix.
The target's device-only steps (an engine built on the device) make the tiny model here first, as a run does on
the device. The runtime says which tiny model it runs (`BaseSession.check_with`) and which tools it found.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builder import formats
from builder.errors import BuilderError
from builder.plan import StepCall
from builder.stage import runtimes
from builder.stage.steps import registry
from builder.stage.steps.base import StepContext


@dataclass(frozen=True)
class TinyModel:
    """A model of one format small enough to live in the code: [1, 4] float32 in and out, and what it computes."""

    data: bytes
    expected: Callable[[np.ndarray], np.ndarray]


TINY: dict[str, TinyModel] = {
    # relu(x) as ONNX (opset 13): the interchange format every backend reads
    "onnx": TinyModel(base64.b64decode(
    "CAg6UAoVCgVpbnB1dBIGb3V0cHV0IgRSZWx1EgR0aW55WhcKBWlucHV0Eg4KDAgBEggKAggBCgIIBGIYCgZvdXRwdXQSDgoMCAES"
    "CAoCCAEKAggEQgQKABAN"), lambda x: np.maximum(x, 0)),
}


def register_tiny_model(fmt: str, model: TinyModel) -> None:
    """A backend's tiny model of its own format, for the runtimes whose check runs that format (`check_with`)."""
    TINY[fmt] = model


def _built_on_device(model: Path, kinds: list[str]) -> Path:
    """The tiny model through the target's device-only steps, each with its default params, as a run builds it."""
    for kind in kinds:
        step = registry.get(kind)
        out = model.with_name(f"tiny{formats.get(step.produces).suffix}")
        call = StepCall(id="check", kind=kind, stage="device", inputs={"model": model.name}, outputs={"model": out.name})
        step().run(StepContext(workdir=model.parent, call=call, log=logging.getLogger("check")), step.Params())
        model = out
    return model


def check(runtime: str, folder: Path, device_steps: list[str]) -> dict:
    checked_with = runtimes.runtime_class(runtime).check_with
    if checked_with is None:
        return {"ok": True, "note": f"no tiny model for runtime {runtime}: only the image was checked"}
    fmt, runs_in = checked_with
    if fmt not in TINY:
        return {"ok": True, "note": f"no tiny {fmt} model for runtime {runtime}: only the image was checked"}
    tiny = TINY[fmt]
    model = folder / f"tiny{formats.get(fmt).suffix}"
    model.write_bytes(tiny.data)
    started = time.perf_counter()
    model = _built_on_device(model, device_steps)
    session = runtimes.load(model, runtime=runs_in, threads=1)
    x = np.array([[-1.0, 0.0, 0.5, 2.0]], dtype=np.float32)
    got = session.run([x])[0]
    if not np.allclose(got, tiny.expected(x), atol=1e-2):
        return {"ok": False, "error": f"{runs_in} ran the tiny model wrongly: {got.tolist()}",
                "hint": "the runtime's install is broken: rebuild the device image (--rebuild)"}
    return {"ok": True, "runtime": runs_in, "ms": round((time.perf_counter() - started) * 1000, 1),
            **runtimes.runtime_class(runs_in).tools()}


def main(runtime: str, device_steps: list[str]) -> int:
    try:
        with tempfile.TemporaryDirectory() as folder:
            result = check(runtime, Path(folder), device_steps)
    except BuilderError as exc:
        result = {"ok": False, "error": exc.message, "hint": exc.hint, "cause": getattr(exc, "cause", None)}
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer, reported with its type
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":  # the backends register their tiny models with the module, not with __main__
    from builder.stage import device_check

    sys.exit(device_check.main(sys.argv[1], sys.argv[2:]))
