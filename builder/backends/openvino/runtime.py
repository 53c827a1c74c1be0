"""OpenVINO sessions (IR .xml; OpenVINO also reads .onnx/.tflite given runtime="openvino")."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from builder import records
from builder.backends.openvino import benchmark_app
from builder.errors import ConfigError, StepError
from builder.records import ExtraSection, Strict
from builder.stage.runtimes import BaseSession, Session, TensorInfo, Timing, random_inputs, with_shapes


class OpenVINOFigures(Strict):
    """Where and at what precision OpenVINO ran a benchmarked model (`extra.openvino` of a benchmark)."""

    device: str = Field(description="the OpenVINO device: CPU, GPU, NPU, ...")
    inference_precision: str | None = Field(description="the precision it computed in (INFERENCE_PRECISION_HINT)")


records.register_extra("benchmark", ExtraSection("openvino", OpenVINOFigures))


def _ov():
    try:
        import openvino
    except ImportError:
        raise ConfigError("openvino is not installed", hint="pip install openvino") from None
    return openvino


def _info(port, index: int, kind: str) -> TensorInfo:
    names = port.get_names()
    name = port.get_any_name() if names else f"{kind}{index}"
    shape = tuple(-1 if d.is_dynamic else d.get_length() for d in port.get_partial_shape())
    return TensorInfo(name=name, shape=shape, dtype=np.dtype(port.get_element_type().to_dtype()).name)


def compile_model(
    path: Path,
    *,
    device: str = "CPU",
    threads: int | None = None,
    precision: str | None = "f32",
    performance_hint: str = "LATENCY",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    properties: Mapping[str, object] | None = None,
):
    """Read, reshape (if `input_shapes`) and compile a model; returns (compiled, inputs, outputs).
    `properties`: more of the device's properties (PERF_COUNT for a profile).

    `precision` sets INFERENCE_PRECISION_HINT: the CPU plugin otherwise may pick
    bf16, which moved logits by up to 0.17 on these CPUs. None keeps the device default.
    """
    ov = _ov()
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as exc:
        raise StepError(f"OpenVINO could not read {path.name}: {exc}") from exc
    inputs = with_shapes([_info(p, i, "input") for i, p in enumerate(model.inputs)], input_shapes, path)
    if input_shapes:
        model.reshape({info.name: list(info.shape) for info in inputs if info.name in input_shapes})
    config: dict[str, object] = {"PERFORMANCE_HINT": performance_hint.upper()}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads and device.upper().startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = threads
    config |= dict(properties or {})
    try:
        compiled = core.compile_model(model, device, config)
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1]
        raise StepError(
            f"OpenVINO could not compile {path.name} for {device}: {last}",
            hint=f"devices here: {core.available_devices}; precision is one of f32, f16, bf16",
        ) from exc
    outputs = [_info(p, i, "output") for i, p in enumerate(compiled.outputs)]
    return compiled, inputs, outputs


def async_throughput(
    xml_path: Path,
    *,
    seconds: float = 3.0,
    device: str = "CPU",
    precision: str | None = "f32",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict:
    """Asynchronous throughput: THROUGHPUT hint, an AsyncInferQueue with the compiled
    model's OPTIMAL_NUMBER_OF_INFER_REQUESTS kept busy for `seconds`.

    Precision defaults to f32 like `load`, so the number belongs to the validated model.
    """
    import openvino as ov

    xml_path = Path(xml_path)
    compiled, inputs, _ = compile_model(
        xml_path, device=device, precision=precision, performance_hint="THROUGHPUT", input_shapes=input_shapes
    )
    requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, requests)
    data = random_inputs(inputs, origin=xml_path.name)
    for _ in range(requests):  # warm-up: every request once, not counted
        queue.start_async(data)
    queue.wait_all()
    infers = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        queue.start_async(data)  # blocks while all requests are busy
        infers += 1
    queue.wait_all()
    elapsed = time.perf_counter() - start
    return {
        "mode": "throughput",
        "device": device,
        "requests": requests,
        "infers": infers,
        "seconds": elapsed,
        "throughput_fps": infers / elapsed,
    }


class OpenVINOSession(BaseSession):
    """A compiled model with one infer request; f32 precision and LATENCY hint by default."""

    runtime = "openvino"
    check_with = ("onnx", "openvino")

    @classmethod
    def extra_figures(cls, model: Path, session: Session, timing: Timing) -> dict:
        figures = {"extra": {"openvino": {"device": session.device, "inference_precision": session.precision}}}
        if not timing.throughput or timing.emulated:
            return figures
        return figures | {"async": async_throughput(model)}

    @classmethod
    def second_opinions(cls, model: Path, session: Session, timing: Timing) -> dict[str, Callable[[], dict]]:
        if not timing.throughput or timing.emulated or not benchmark_app.benchmark_app_binary():
            return {}
        # benchmark_app's -shape for the session's inputs, dynamic dims (the batch) as 1
        shape = ",".join(f"{t.name}[{','.join(str(d if d > 0 else 1) for d in t.shape)}]" for t in session.inputs)
        return {"benchmark_app": lambda: benchmark_app.benchmark_app_tool(model, seconds=5, shape=shape,
                                                                           threads=timing.threads)}

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 2,
        device: str = "CPU",
        precision: str | None = "f32",
        performance_hint: str = "LATENCY",
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ):
        self._compiled, inputs, outputs = compile_model(
            path,
            device=device,
            threads=threads,
            precision=precision,
            performance_hint=performance_hint,
            input_shapes=input_shapes,
        )
        super().__init__(path, inputs, outputs, threads)
        self.device = device
        self.precision = (
            self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() if device == "CPU" else precision
        )
        self._request = self._compiled.create_infer_request()

    def run_raw(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(inputs)
        return [results[port] for port in self._compiled.outputs]

    def prepared(self, inputs: list[np.ndarray]) -> Callable[[], object]:
        ov = _ov()
        for index, (_, x) in enumerate(zip(self.inputs, inputs, strict=True)):
            # a tensor of its own: a later run_raw must not write into the caller's array
            self._request.set_input_tensor(index, ov.Tensor(np.array(x)))
        return functools.partial(self._request.infer, share_outputs=True)  # outputs stay in the request's tensors
