"""ExecuTorch programs (.pte) in ExecuTorch's own runtime (its Python bindings over the C++ runtime, which link
libtorch); XNNPACK runs the delegated parts on the runtime's thread pool."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from builder.errors import ConfigError, StepError
from builder.stage.runtimes import BaseSession, TensorInfo

# c10::ScalarType codes, as the runtime's tensor metadata gives a dtype
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
                 11: "bool"}


def _info(name: str, meta) -> TensorInfo:
    return TensorInfo(name=name, shape=tuple(meta.sizes()), dtype=_SCALAR_TYPES.get(meta.dtype(), f"scalar{meta.dtype()}"))


class ExecuTorchSession(BaseSession):
    """The program's `forward` method; `threads` sizes the runtime's one thread pool (it is process-wide)."""

    runtime = "executorch"

    def __init__(self, path: Path, *, threads: int = 2):
        try:
            import torch  # noqa: F401  (the bindings need libtorch loaded first)
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError:
            raise ConfigError("executorch is not installed here", hint="run it in the x86-executorch images") from None
        portable_lib._unsafe_reset_threadpool(threads)  # before any method loads: no method may be running
        try:
            self._method = Runtime.get().load_program(Path(path)).load_method("forward")
        except Exception as exc:  # the bindings raise RuntimeError with the runtime's error code
            raise StepError(f"ExecuTorch could not load {path.name}: {exc}") from exc
        meta = self._method.metadata
        inputs = [_info(f"input{i}", meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
        outputs = [_info(f"output{i}", meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]
        super().__init__(path, inputs, outputs, portable_lib._threadpool_get_thread_count())

    def _tensors(self, inputs: list[np.ndarray]) -> list:
        import torch

        return [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]

    def run_raw(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [y.numpy().copy() for y in self._method.execute(self._tensors(inputs))]

    def prepared(self, inputs: list[np.ndarray]) -> Callable[[], object]:
        tensors = self._tensors(inputs)
        return lambda: self._method.execute(tensors)
