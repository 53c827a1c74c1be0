"""ONNX Runtime sessions."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from builder.errors import ConfigError, StepError
from builder.stage.runtimes import BaseSession, TensorInfo, with_shapes

_ORT_TYPES = {"float": "float32", "double": "float64"}


def _dtype(ort_type: str) -> str:
    """'tensor(float)' -> 'float32', 'tensor(int8)' -> 'int8'."""
    name = ort_type.removeprefix("tensor(").removesuffix(")")
    return _ORT_TYPES.get(name, name)


def _info(arg) -> TensorInfo:
    # symbolic ('batch') and unknown (None) dims are dynamic
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorInfo(name=arg.name, shape=shape, dtype=_dtype(arg.type))


class OnnxRuntimeSession(BaseSession):
    """An InferenceSession with `threads` intra-op threads (CPU provider unless `providers` says)."""

    runtime = "onnxruntime"
    check_with = ("onnx", "onnxruntime")

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 2,
        providers: Sequence[str] | None = None,
        graph_optimization_level: str = "ORT_ENABLE_ALL",
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("onnxruntime is not installed", hint="pip install onnxruntime") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, graph_optimization_level)
        except AttributeError:
            raise ConfigError(
                f"unknown graph_optimization_level {graph_optimization_level!r}",
                hint="use ORT_DISABLE_ALL, ORT_ENABLE_BASIC, ORT_ENABLE_EXTENDED or ORT_ENABLE_ALL",
            ) from None
        providers = list(providers or ["CPUExecutionProvider"])
        missing = set(providers) - set(ort.get_available_providers())
        if missing:
            raise ConfigError(
                f"onnxruntime providers {sorted(missing)} are not available here",
                hint=f"available: {ort.get_available_providers()}",
            )
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise StepError(f"onnxruntime could not load {path.name}: {exc}") from exc
        self.providers = self._session.get_providers()
        inputs = with_shapes([_info(a) for a in self._session.get_inputs()], input_shapes, path)
        super().__init__(path, inputs, [_info(a) for a in self._session.get_outputs()], threads)
        self._names = [i.name for i in inputs]

    def run_raw(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, dict(zip(self._names, inputs, strict=True)))

    def prepared(self, inputs: list[np.ndarray]) -> Callable[[], object]:
        """An IOBinding of ORT-owned copies of `inputs` and output buffers shaped by one untimed run."""
        from onnxruntime import OrtValue

        binding = self._session.io_binding()
        for name, x in zip(self._names, map(np.ascontiguousarray, inputs), strict=True):
            value = OrtValue.ortvalue_from_shape_and_type(x.shape, x.dtype.type)
            value.update_inplace(x)
            binding.bind_ortvalue_input(name, value)
        for info, y in zip(self.outputs, self.run_raw(inputs), strict=True):
            binding.bind_ortvalue_output(info.name, OrtValue.ortvalue_from_shape_and_type(y.shape, y.dtype.type))
        return functools.partial(self._session.run_with_iobinding, binding)
