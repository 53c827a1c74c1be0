"""TensorRT engine sessions (.engine): TensorRT 10's name-based I/O, device memory through cuda-python.

An engine runs only on the GPU and TensorRT version that built it, so this module is
used in the Jetson device image; anywhere else loading an engine is a clear ConfigError.
CUDA calls go through cuda-python's runtime bindings (NVIDIA's own, as in TensorRT's samples).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from builder.backends.tensorrt import trtexec
from builder.errors import ConfigError, GpuUnavailable, StepError
from builder.stage.runtimes import BaseSession, Session, TensorInfo, Timing, with_shapes

TESTED_TENSORRT = ((8, 6), (11, 0))  # from 8.6 (JetPack 6.0) up to, not including, 11 (no BuilderFlag.FP16/INT8)
GPU_HINT = ("the container does not reach the GPU: run it with the NVIDIA runtime (--runtime nvidia), "
            "NVIDIA_VISIBLE_DEVICES=all and, as a non-root user, in the `video` group (--group-add video), "
            "as `builder run` does; `builder devices --check` tests a device")
NO_GPU_ERRORS = ("cudaErrorNoDevice", "cudaErrorNotSupported", "cudaErrorInsufficientDriver",
                 "cudaErrorInitializationError", "cudaErrorNotPermitted", "cudaErrorSystemNotReady")
"""CUDA errors (100, 801, 35, 3, ...) that mean the process cannot use the GPU at all, not that a call was wrong."""


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise ConfigError(
            "tensorrt is not installed: TensorRT engines (.engine) run only where TensorRT and its GPU are",
            hint="run on the Jetson device image (TensorRT comes with JetPack's L4T base image)",
        ) from None
    return tensorrt


def check_version(version: str) -> None:
    """Refuse a TensorRT outside the tested range, naming it (11 builds only strongly typed networks)."""
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    low, high = TESTED_TENSORRT
    if len(parts) < 2 or not low <= parts < high:
        raise StepError(f"TensorRT {version} is outside the tested range {low[0]}.{low[1]} to "
                        f"{high[0]}.x (excluded)",
                        hint="use JetPack 6 (TensorRT 8.6 or 10.x); TensorRT 11 removed BuilderFlag.FP16/INT8 "
                             "(strongly typed networks only) and is not supported yet")


def gpu_object(factory: Callable, *args, what: str):
    """`factory(*args)` (trt.Builder, trt.Runtime): where CUDA cannot start, TensorRT's Python bindings
    log CUDA error 100/801/35 and the constructor raises a pybind TypeError; that becomes GpuUnavailable."""
    try:
        made = factory(*args)
    except (TypeError, RuntimeError) as exc:
        raise GpuUnavailable(f"TensorRT could not create its {what}: {exc}", hint=GPU_HINT) from exc
    if made is None:
        raise GpuUnavailable(f"TensorRT could not create its {what}", hint=GPU_HINT)
    return made


def _cudart():
    """cuda-python's CUDA runtime module: cuda.bindings.runtime (12.6.1 on), else the older cuda.cudart."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise ConfigError("cuda-python is not installed (TensorRT sessions use it for device memory)",
                              hint="pip install cuda-python, the version matching the device's CUDA") from None
    return cudart


def cuda_call(cudart, function: str, *args):
    """Call a cuda-python runtime function; its `(error, *values)` result is unpacked, and a
    CUDA error (or no driver at all: cuda-python cannot load libcuda) becomes a StepError."""
    try:
        error, *values = getattr(cudart, function)(*args)
    except RuntimeError as exc:
        raise GpuUnavailable(f"CUDA {function} failed: {exc}", hint=GPU_HINT) from exc
    if error != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(error)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        if name in NO_GPU_ERRORS:
            raise GpuUnavailable(f"CUDA {function} failed: {name} ({int(error)})", hint=GPU_HINT)
        raise StepError(f"CUDA {function} failed: {name}")
    return values[0] if len(values) == 1 else tuple(values) or None


class TensorRTSession(BaseSession):
    """A deserialized engine with one execution context and one CUDA stream.

    `dla_core` selects the DLA core an engine built for the DLA runs on (IRuntime.DLA_core).
    Device buffers are allocated on first use per tensor and grown when a shape grows.
    """

    runtime = "tensorrt"
    check_with = ("onnx", "tensorrt")  # an engine built from it first (convert.tensorrt)

    build_options = ("dla_core",)

    @classmethod
    def tools(cls) -> dict[str, str]:
        binary = trtexec.trtexec_binary()
        return {"trtexec": str(binary) if binary else "absent: benchmarks will have no trtexec figures"}

    @classmethod
    def second_opinions(cls, model: Path, session: Session, timing: Timing) -> dict[str, Callable[[], dict]]:
        binary = trtexec.trtexec_binary()
        if binary is None:
            return {"trtexec": trtexec.not_found}
        # no host<->device copies on either side: our timed call is enqueue + synchronize of inputs already on
        # the device, so trtexec runs with --noDataTransfers and its Latency (not GPU compute alone) is compared
        return {"trtexec": lambda: {**trtexec.trtexec_tool(model, binary=binary, iterations=timing.runs,
                                                           dla_core=getattr(session, "dla_core", None),
                                                           shapes=trtexec.shapes_arg(session), no_data_transfers=True),
                                    "compared_field": "p50_ms"}}

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 2,
        dla_core: int | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ):
        trt, self._cudart = import_tensorrt(), _cudart()
        check_version(trt.__version__)
        self.path = path
        self._trt_runtime = gpu_object(trt.Runtime, trt.Logger(trt.Logger.WARNING), what="runtime")
        if dla_core is not None:
            self._trt_runtime.DLA_core = dla_core
        self._engine = self._trt_runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise StepError(f"TensorRT could not deserialize {path.name}",
                            hint="an engine runs only with the TensorRT version and GPU that built it: rebuild it here")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        declared = [self._info(trt, n) for n in input_names]
        self.dynamic = any(-1 in info.shape for info in declared)  # trtexec then needs --shapes
        inputs = with_shapes(declared, input_shapes, path)
        for info in inputs:
            if -1 not in info.shape:
                self._set_input_shape(info.name, info.shape)
        outputs = [self._info(trt, n) for n in names if n not in input_names]
        if not any(-1 in info.shape for info in inputs):
            for info in outputs:
                self._output_shape(info.name)  # a data-dependent output is refused before anything runs
        super().__init__(path, inputs, outputs, threads)
        self.dla_core = dla_core
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        self._stream = self._cuda("cudaStreamCreate")

    def _set_input_shape(self, name: str, shape) -> None:
        """TensorRT returns False (and logs) for a shape outside the engine's optimization profile."""
        if not self._context.set_input_shape(name, tuple(shape)):
            raise StepError(f"{self.path.name}: TensorRT refused the shape {tuple(shape)} for input {name!r}",
                            hint="the shape must lie within the engine's optimization profile: set input.shape "
                                 "in the recipe to the shape the engine was built for")

    def _output_shape(self, name: str) -> tuple[int, ...]:
        shape = tuple(self._context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise StepError(f"{self.path.name}: output {name!r} has a data-dependent shape {shape} (NonZero, NMS, "
                            "...): its size is known only after the run, which this runtime does not support",
                            hint="export the model with fixed-size outputs (e.g. padded detections) or cut the "
                                 "data-dependent part off the ONNX model")
        return shape

    def _info(self, trt, name: str) -> TensorInfo:
        trt_dtype = self._engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(trt_dtype)).name
        except TypeError:  # bf16, fp8, int4: no numpy type
            raise StepError(f"{self.path.name}: tensor {name!r} has I/O type {trt_dtype}, which numpy cannot hold",
                            hint="build the engine with float32/float16 I/O") from None
        return TensorInfo(name=name, shape=tuple(self._engine.get_tensor_shape(name)), dtype=dtype)

    def _cuda(self, function: str, *args):
        return cuda_call(self._cudart, function, *args)

    def _device(self, name: str, nbytes: int) -> int:
        """A device buffer of at least `nbytes` for tensor `name` (reused across runs)."""
        pointer, size = self._buffers.get(name, (0, -1))
        if size < nbytes:
            if pointer:
                self._cuda("cudaFree", pointer)
            pointer = int(self._cuda("cudaMalloc", max(nbytes, 1)))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def run_raw(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        to_host = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        outputs = [(np.empty(shape, dtype=info.dtype), pointer) for info, (shape, pointer) in
                   zip(self.outputs, self._bind(inputs), strict=True)]
        self._enqueue()
        for host, pointer in outputs:
            self._cuda("cudaMemcpyAsync", host.ctypes.data, pointer, host.nbytes, to_host, self._stream)
        self._cuda("cudaStreamSynchronize", self._stream)
        return [host for host, _ in outputs]

    def prepared(self, inputs: list[np.ndarray]) -> Callable[[], object]:
        """Inputs copied to the device once; each call enqueues the engine and waits, outputs stay on the device."""
        self._bind(inputs)
        self._cuda("cudaStreamSynchronize", self._stream)

        def infer() -> None:
            self._enqueue()
            self._cuda("cudaStreamSynchronize", self._stream)

        return infer

    def _bind(self, inputs: list[np.ndarray]) -> list[tuple[tuple[int, ...], int]]:
        """Copy `inputs` to their device buffers (async, on the stream) and point the context at
        them and at output buffers; returns each output's (shape, device pointer)."""
        to_device = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for info, x in zip(self.inputs, inputs, strict=True):
            x = np.ascontiguousarray(x, dtype=info.dtype)
            if tuple(self._context.get_tensor_shape(info.name)) != x.shape:
                self._set_input_shape(info.name, x.shape)
            pointer = self._device(info.name, x.nbytes)
            self._cuda("cudaMemcpyAsync", pointer, x.ctypes.data, x.nbytes, to_device, self._stream)
            self._context.set_tensor_address(info.name, pointer)
        outputs = []
        for info in self.outputs:
            shape = self._output_shape(info.name)
            pointer = self._device(info.name, int(np.prod(shape)) * np.dtype(info.dtype).itemsize)
            self._context.set_tensor_address(info.name, pointer)
            outputs.append((shape, pointer))
        return outputs

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise StepError(f"TensorRT could not enqueue {self.path.name}", hint="see the TensorRT messages above")

    def close(self) -> None:
        """Free the device buffers and the stream (also done when the session is collected)."""
        for pointer, _ in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self):
        if hasattr(self, "_buffers"):
            with contextlib.suppress(Exception):  # at interpreter exit the CUDA bindings may be gone
                self.close()
