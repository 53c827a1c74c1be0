"""LiteRT (TFLite) sessions: ai_edge_litert, else tflite_runtime, else tensorflow.lite."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from builder import records
from builder.backends.litert import benchmark_model
from builder.errors import ConfigError, StepError
from builder.records import ExtraSection, Strict
from builder.stage.runtimes import BaseSession, Session, TensorInfo, Timing, with_shapes

log = logging.getLogger(__name__)


class LiteRTFigures(Strict):
    """How LiteRT ran a benchmarked model (`extra.litert` of a benchmark)."""

    xnnpack_applied: bool | None = Field(description="whether XNNPACK took part of the graph (None: the "
                                                     "interpreter cannot tell)")
    interpreter: str = Field(description="the module whose Interpreter ran it: ai_edge_litert, tflite_runtime or "
                                         "tensorflow.lite")


records.register_extra("benchmark", ExtraSection("litert", LiteRTFigures))


def interpreter_class() -> type:
    """The first importable Interpreter; tensorflow only as the last resort (it is huge)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            try:
                from tensorflow.lite import Interpreter
            except ImportError:
                raise ConfigError(
                    "no TFLite interpreter is installed",
                    hint="pip install ai-edge-litert (or tflite-runtime on older platforms)",
                ) from None
    return Interpreter


def _resolver_without_xnnpack(interpreter_cls: type):
    module = __import__(interpreter_cls.__module__, fromlist=["OpResolverType"])
    return module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _info(detail: dict) -> TensorInfo:
    scale, zero_point = detail["quantization"]
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return TensorInfo(
        name=detail["name"],
        shape=tuple(int(d) for d in shape),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale) if scale else None,
        zero_point=int(zero_point) if scale else None,
    )


class LiteRTSession(BaseSession):
    """A TFLite interpreter; XNNPACK (the default delegate) is on unless `xnnpack=False`.

    `xnnpack_applied` says whether a delegate node showed up in the execution
    plan after allocation (None when the interpreter cannot tell).
    """

    runtime = "litert"
    check_with = ("tflite", "litert")

    @classmethod
    def extra_figures(cls, model: Path, session: Session, timing: Timing) -> dict:
        return {"extra": {"litert": {"xnnpack_applied": session.xnnpack_applied,
                                     "interpreter": session.interpreter_module.removesuffix(".interpreter")}}}

    @classmethod
    def second_opinions(cls, model: Path, session: Session, timing: Timing) -> dict[str, Callable[[], dict]]:
        binary = benchmark_model.benchmark_model_binary()
        if binary is None:
            return {}
        return {"benchmark_model": lambda: benchmark_model.benchmark_model_tool(
            binary, model, threads=timing.threads, runs=timing.runs, warmup=timing.warmup)}

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 2,
        xnnpack: bool = True,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ):
        self.path = path
        cls = interpreter_class()
        kwargs = {} if xnnpack else {"experimental_op_resolver_type": _resolver_without_xnnpack(cls)}
        try:
            self._interp = cls(model_path=str(path), num_threads=threads, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise StepError(f"LiteRT could not load {path.name}: {exc}") from exc
        self._in = self._interp.get_input_details()
        infos = with_shapes([_info(d) for d in self._in], input_shapes, path)
        for detail, info in zip(self._in, infos, strict=True):
            if tuple(detail["shape"]) != info.shape and -1 not in info.shape:
                self._interp.resize_tensor_input(detail["index"], list(info.shape))
        self._allocate()
        outputs = [_info(d) for d in _output_details(self._interp)]
        super().__init__(path, infos, outputs, threads)
        self.xnnpack_applied = self._delegated() if xnnpack else False
        self.interpreter_module = cls.__module__

    def _allocate(self) -> None:
        try:
            self._interp.allocate_tensors()
        except RuntimeError as exc:
            raise StepError(f"LiteRT could not allocate tensors for {self.path.name}: {exc}") from exc
        self._in = self._interp.get_input_details()
        self._out = [d["index"] for d in _output_details(self._interp)]

    def _delegated(self) -> bool | None:
        try:
            return any(op["op_name"] == "DELEGATE" for op in self._interp._get_ops_details())
        except (AttributeError, KeyError):  # private API; absent in some builds
            return None

    def run_raw(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self._bind(inputs)
        self._interp.invoke()
        return [self._interp.get_tensor(i) for i in self._out]

    def prepared(self, inputs: list[np.ndarray]) -> Callable[[], object]:
        self._bind(inputs)
        return self._interp.invoke

    def _bind(self, inputs: list[np.ndarray]) -> None:
        """Copy `inputs` into the interpreter's input tensors, resizing them first if their shapes changed."""
        resized = False
        for detail, x in zip(self._in, inputs, strict=True):
            if tuple(detail["shape"]) != x.shape:
                self._interp.resize_tensor_input(detail["index"], list(x.shape))
                resized = True
        if resized:
            log.debug("resizing %s inputs to %s", self.path.name, [x.shape for x in inputs])
            self._allocate()
        for detail, x in zip(self._in, inputs, strict=True):
            self._interp.set_tensor(detail["index"], x)


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _output_details(interp) -> list[dict]:
    """Outputs in the order of the signature's output names (output_0, output_1, ...) when there is one signature.

    The flatbuffer's own order can differ between variants converted from one SavedModel, which would
    pair the wrong outputs when a variant is compared with its fp32 reference.
    """
    details = interp.get_output_details()
    signatures = interp.get_signature_list() if hasattr(interp, "get_signature_list") else {}
    if len(signatures) != 1:
        return details
    named = interp.get_signature_runner(next(iter(signatures))).get_output_details()
    by_index = {d["index"]: d for d in details}
    ordered = [by_index[named[name]["index"]] for name in sorted(named, key=_natural) if named[name]["index"] in by_index]
    return ordered if len(ordered) == len(details) else details
