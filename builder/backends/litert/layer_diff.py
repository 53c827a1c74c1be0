"""LiteRT's intermediate tensors for a layer diff: the interpreter keeps every tensor of an inference
(`experimental_preserve_all_tensors`) when no delegate fuses the graph, so the model runs on the builtin kernels,
without XNNPACK; integer tensors are dequantized with their scale and zero point (per channel where they have
several). Each op's output tensors are keyed by the op's index in the main subgraph, as Model Explorer draws it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from builder.backends.litert.profiler import _Model
from builder.backends.litert.runtime import _info, _resolver_without_xnnpack, interpreter_class
from builder.errors import StepError
from builder.stage import layer_diff
from builder.stage.runtimes import match_layout, quantize

READER = "LiteRT interpreter, every tensor kept (builtin kernels, no XNNPACK)"


def dequantized(value: np.ndarray, detail: dict) -> np.ndarray | None:
    """A tensor as float32: integers with a scale dequantized (per channel along its quantized dimension), floats
    as they are; None for an integer tensor without a scale (indices, shapes)."""
    if np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float32)
    q = detail.get("quantization_parameters") or {}
    scales, zeros = np.asarray(q.get("scales", [])), np.asarray(q.get("zero_points", []))
    if scales.size == 0:
        return None
    if scales.size > 1:  # per channel: along the quantized dimension
        shape = [1] * value.ndim
        shape[q.get("quantized_dimension", 0)] = scales.size
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return ((value.astype(np.float32) - zeros.astype(np.float32)) * scales.astype(np.float32)).astype(np.float32)


def _interpreter(model: Path):
    cls = interpreter_class()
    try:
        interp = cls(model_path=str(model), num_threads=1, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=_resolver_without_xnnpack(cls))
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise StepError(f"LiteRT could not load {model.name} to read its tensors: {exc}") from exc
    return interp


def read(model: Path, samples: list[np.ndarray], options: Mapping[str, object],
         log: logging.Logger) -> layer_diff.Tensors:
    interp = _interpreter(model)
    inputs = interp.get_input_details()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    ops = sorted(interp._get_ops_details(), key=lambda op: op["index"])  # no public API lists the ops
    computed = {i for op in ops for i in op["outputs"]} | {d["index"] for d in inputs}
    ops = [op for op in ops if any(i in computed for i in op["inputs"])]  # not the dequantizing of weights
    values: dict[int, list[np.ndarray]] = {}
    skipped: dict[int, str] = {}
    for sample in samples:
        for detail, x in zip(inputs, [sample], strict=True):
            native = quantize(match_layout(np.asarray(x), tuple(detail["shape"])), _info(detail))
            interp.set_tensor(detail["index"], native)
        interp.invoke()
        for op in ops:
            for index in op["outputs"]:
                if index in skipped:
                    continue
                value = dequantized(interp.get_tensor(index), details[index])
                if value is None:
                    skipped[index] = f"{details[index]['name']}: {details[index]['dtype'].__name__} without a scale"
                else:
                    values.setdefault(index, []).append(value)
    tensors = [layer_diff.Tensor(name=details[i]["name"], node_id=str(op["index"]), op_type=op["op_name"],
                                 values=values[i]) for op in ops for i in op["outputs"] if i in values]
    log.info("%s: %d tensors of %d ops read on %d samples", model.name, len(tensors), len(ops), len(samples))
    return layer_diff.Tensors(reader=READER, tensors=tensors, graph=_Model(model).graph_id,
                              skipped=list(skipped.values()))


layer_diff.register("litert", read)
