"""Load a model file into a runtime session and run it on numpy arrays.

One registry: each runtime module defines one `BaseSession` subclass that
registers itself with its `runtime` name; a model format (`builder.formats`)
names the runtime that loads it. A runtime also says how the benchmark step
measures its models beyond timing them (`extra_figures`, `second_opinions`), or,
for an accelerator that cannot run here, what stands in (`estimate`, `stand_in`).
The runtime modules import their heavy library lazily, so importing this
package costs only numpy (device images are small, and arm64 ones run under QEMU).

A shape in `TensorInfo` uses -1 for a dynamic dimension; pass
`input_shapes={"name": (1, 3, 48, 192)}` to `load()` to fix them.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from builder import formats, plugins
from builder.errors import ConfigError, StepError


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the runtime sees it."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32", "int8", "uint8", ...
    scale: float | None = None  # set for quantized tensors
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None and np.issubdtype(np.dtype(self.dtype), np.integer)


class Session(Protocol):
    runtime: str
    threads: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...
    def run_raw(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...
    def prepared(self, inputs: list[np.ndarray]) -> Callable[[], object]: ...
    def example_inputs(self, seed: int = 0) -> list[np.ndarray]: ...


_REGISTRY: dict[str, type[BaseSession]] = {}


@dataclass(frozen=True)
class Timing:
    """How the benchmark step times a model: a runtime's own tools time it alike."""

    threads: int
    runs: int
    warmup: int
    throughput: bool  # also the runtime's asynchronous throughput, where it has one
    emulated: bool  # under QEMU: slow, and not the device's figures


class BaseSession:
    """Float conversions shared by every runtime; subclasses implement `run_raw`."""

    runtime: ClassVar[str]
    build_options: ClassVar[tuple[str, ...]] = ()
    """Params of the step that made a model which its sessions need too (the accelerator core an engine was
    built for): the plan gives them to the benchmark and validation that load it."""

    check_with: ClassVar[tuple[str, str] | None] = None
    """`builder devices --check`: the format of the tiny model it runs and the runtime that runs it (an NPU's
    image may check its CPU baseline's); None: only the image is checked."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.runtime] = cls

    @classmethod
    def estimate(cls, files: Mapping[str, Path]) -> dict | None:
        """A benchmark record this runtime reports instead of timing the model (an accelerator that is not
        here), from the benchmark step's declared input `files`; None: time it."""
        return None

    @classmethod
    def stand_in(cls, files: Mapping[str, Path]) -> Path | None:
        """A model validated in this one's place, when this runtime cannot run it here; None: itself."""
        return None

    @classmethod
    def extra_figures(cls, model: Path, session: Session, timing: Timing) -> dict:
        """Figures beside the latency, merged into the benchmark record: fields of `records.BenchmarkResult`
        (`async`, an asynchronous throughput), or the runtime's own under `extra`, in the section its backend
        declares (`records.register_extra`); the record refuses others."""
        return {}

    @classmethod
    def second_opinions(cls, model: Path, session: Session, timing: Timing) -> dict[str, Callable[[], dict]]:
        """The vendor's own benchmark tools that are installed, by name: each returns its parsed figures."""
        return {}

    @classmethod
    def tools(cls) -> dict[str, str]:
        """The vendor tools its benchmarks run beside our timing, and where they were found (or why not)."""
        return {}

    def __init__(self, path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo], threads: int):
        self.path = path
        self.inputs = inputs
        self.outputs = outputs
        self.threads = threads

    def run_raw(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def prepared(self, inputs: list[np.ndarray]) -> Callable[[], object]:
        """Bind native-dtype `inputs` (and output buffers where the runtime allows) once; the
        returned callable runs one inference on them and nothing else: it is what a benchmark times.
        Outputs stay in the runtime's buffers; the session must not be run otherwise meanwhile."""
        raise NotImplementedError

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Float32 in, float32 out: fix layout, quantize inputs, dequantize outputs."""
        if len(inputs) != len(self.inputs):
            raise StepError(f"{self.path.name} takes {len(self.inputs)} input(s), got {len(inputs)}")
        native = [
            quantize(match_layout(np.asarray(x), info.shape), info) for x, info in zip(inputs, self.inputs, strict=True)
        ]
        return [dequantize(y, info) for y, info in zip(self.run_raw(native), self.outputs, strict=True)]

    def example_inputs(self, seed: int = 0) -> list[np.ndarray]:
        """Random native-dtype inputs of the model's shapes (a dynamic batch becomes 1)."""
        return random_inputs(self.inputs, seed, origin=self.path.name)


def names() -> list[str]:
    """Every registered runtime (a plugin's too)."""
    plugins.load()
    return sorted(_REGISTRY)


def runtime_class(name: str) -> type[BaseSession]:
    """The registered runtime `name` (a plugin's too)."""
    if name not in names():
        raise ConfigError(f"unknown runtime {name!r}", hint=f"choose one of {', '.join(names())}")
    return _REGISTRY[name]


def load(path: Path, *, threads: int = 2, runtime: str | None = None, **options) -> Session:
    """Open `path` in `runtime`, or in the runtime of the format its file name says (`formats.of_file`).

    Options go to the runtime: `input_shapes` for all, the others are its session's own keyword arguments
    (an option it does not take is refused, naming those it does).
    """
    path = Path(path)
    if runtime is None:
        fmt = formats.of_file(path.name)
        if fmt is None or fmt.runtime is None:
            known = ", ".join(f.suffix for f in formats.all_formats().values() if f.runtime)
            raise ConfigError(f"no runtime for model file {path.name}", hint=f"use one of {known} or pass runtime=")
        runtime = fmt.runtime
    session_cls = runtime_class(runtime)
    accepted = set(inspect.signature(session_cls.__init__).parameters) - {"self", "path", "threads"}
    if set(options) - accepted:
        raise ConfigError(
            f"runtime {runtime} has no option(s) {sorted(set(options) - accepted)}",
            hint=f"its options are {sorted(accepted)}",
        )
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    return session_cls(path, threads=threads, **options)


CORE_PACKAGES = ("numpy", "psutil")  # what every session's measurement runs on


def versions() -> dict[str, str]:
    """The installed versions of the packages the runtimes run on: the core's and those each backend declares
    (`PACKAGES` in its __init__.py), read from metadata (no imports)."""
    found = {}
    for dist in dict.fromkeys([*CORE_PACKAGES, *(n for p in plugins.load() for n in getattr(p.module, "PACKAGES", ()))]):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def match_layout(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Fit `x` to a model's input `shape`: add a missing batch dim, and transpose
    NCHW<->NHWC when only the transposed layout fits (a converter may turn an NCHW
    source into an NHWC model, while datasets keep the source model's layout)."""
    if x.ndim == len(shape) - 1:
        x = x[np.newaxis]
    if x.ndim != 4 or len(shape) != 4 or _fits(x.shape, shape):
        return x
    for axes in ((0, 2, 3, 1), (0, 3, 1, 2)):  # NCHW->NHWC, NHWC->NCHW
        if _fits(tuple(x.shape[a] for a in axes), shape):
            return np.ascontiguousarray(x.transpose(axes))
    return x


def _fits(actual: Sequence[int], expected: Sequence[int]) -> bool:
    # the batch dim may differ: runtimes resize it
    return all(e in (-1, a) or i == 0 for i, (a, e) in enumerate(zip(actual, expected, strict=True)))


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float -> the tensor's dtype; int tensors with a scale get round(x/scale)+zp, clipped."""
    dtype = np.dtype(info.dtype)
    if info.quantized:
        limits = np.iinfo(dtype)
        q = np.round(x.astype(np.float32) / np.float32(info.scale)) + info.zero_point
        return np.clip(q, limits.min, limits.max).astype(dtype)
    return x.astype(dtype, copy=False)


def dequantize(y: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Native output -> float32; integer outputs without a scale (ids, counts) stay as they are."""
    if info.quantized:
        return (y.astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)
    if np.issubdtype(y.dtype, np.floating):
        return y.astype(np.float32, copy=False)
    return y


def with_shapes(infos: list[TensorInfo], shapes: Mapping[str, Sequence[int]] | None, path: Path) -> list[TensorInfo]:
    """Apply `input_shapes` overrides; the names must be the model's input names."""
    if not shapes:
        return infos
    unknown = set(shapes) - {i.name for i in infos}
    if unknown:
        raise ConfigError(
            f"input_shapes names {sorted(unknown)} are not inputs of {path.name}",
            hint=f"inputs are {[i.name for i in infos]}",
        )
    return [replace(i, shape=tuple(int(d) for d in shapes[i.name])) if i.name in shapes else i for i in infos]


def random_inputs(infos: Sequence[TensorInfo], seed: int = 0, *, origin: str = "model") -> list[np.ndarray]:
    """Random arrays in each tensor's dtype and shape; a dynamic batch dim becomes 1.

    Floats are uniform in [0, 1); 8-bit ints span their range; wider ints 0..100.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for info in infos:
        shape = tuple(1 if d == -1 and i == 0 else d for i, d in enumerate(info.shape))
        if any(d < 0 for d in shape):
            raise ConfigError(
                f"input {info.name!r} of {origin} has dynamic shape {info.shape}",
                hint="pass input_shapes={name: (...)} when loading the model",
            )
        dtype = np.dtype(info.dtype)
        if dtype == np.bool_:
            arrays.append(rng.random(shape) > 0.5)
        elif np.issubdtype(dtype, np.integer):
            low, high = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.itemsize == 1 else (0, 100)
            arrays.append(rng.integers(low, high, size=shape, endpoint=True).astype(dtype))
        else:
            arrays.append(rng.random(shape, dtype=np.float32).astype(dtype))
    return arrays

