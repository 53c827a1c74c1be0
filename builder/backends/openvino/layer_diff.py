"""OpenVINO's intermediate tensors for a layer diff: an output added on every output of each computing node of the
model (not its weights' Constant -> Convert -> Multiply, nor NNCF's FakeQuantize nodes, the quantization's plumbing),
compiled in f32 on the CPU. Where a FakeQuantize follows a node, its output is read in the node's place: the
activation as the next layers see it, rounded. Each tensor is named by its node's friendly name, which NNCF keeps
from fp32's IR."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from builder.backends.openvino.runtime import _info, _ov
from builder.errors import StepError
from builder.stage import layer_diff
from builder.stage.runtimes import match_layout, quantize

READER = "OpenVINO CPU (f32), an output on every node"
PLUMBING = {"Parameter", "Result", "Constant", "FakeQuantize", "Convert"}


def _computing(model) -> list:
    """The nodes an inference computes from the inputs, in execution order (not the weights' own subgraphs)."""
    computed, found = set(), []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Parameter" or any(
                i.get_source_output().get_node().get_friendly_name() in computed for i in op.inputs()):
            computed.add(op.get_friendly_name())
            if op.get_type_name() not in PLUMBING:
                found.append(op)
    return found


def _as_consumed(port):
    """A node's output as the next nodes read it: through the FakeQuantize that follows it, where one does."""
    readers = [i.get_node() for i in port.get_target_inputs()]
    quantized = [n for n in readers if n.get_type_name() == "FakeQuantize"]
    return quantized[0].output(0) if len(readers) == 1 and quantized else port


def _key(port) -> tuple[str, int]:
    return port.get_node().get_friendly_name(), port.get_index()


def _name(op, index: int) -> str:
    return op.get_friendly_name() if op.get_output_size() == 1 else f"{op.get_friendly_name()}:{index}"


def read(model: Path, samples: list[np.ndarray], options: Mapping[str, object],
         log: logging.Logger) -> layer_diff.Tensors:
    ov = _ov()
    core = ov.Core()
    try:
        graph = core.read_model(str(model))
    except RuntimeError as exc:
        raise StepError(f"OpenVINO could not read {model.name}: {exc}") from exc
    nodes = _computing(graph)
    ports = [(op, i) for op in nodes for i in range(op.get_output_size())]
    read_at = [_as_consumed(op.output(i)) for op, i in ports]
    graph.add_outputs(read_at)  # none added twice: a model's own outputs are there already
    where = {_key(out.get_node().input_value(0)): j for j, out in enumerate(graph.outputs)}  # a Result's source
    indices = [where[_key(port)] for port in read_at]
    try:
        compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    except RuntimeError as exc:
        raise StepError(f"OpenVINO could not compile {model.name} with its intermediate outputs: "
                        f"{str(exc).strip().splitlines()[-1]}") from exc
    inputs = [_info(p, i, "input") for i, p in enumerate(compiled.inputs)]
    request = compiled.create_infer_request()
    values: dict[int, list[np.ndarray]] = {}
    skipped: dict[int, str] = {}
    for sample in samples:
        feed = [quantize(match_layout(np.asarray(x), info.shape), info) for info, x in zip(inputs, [sample], strict=True)]
        results = request.infer(feed)
        for k in range(len(ports)):
            value = np.asarray(results[indices[k]])
            if not np.issubdtype(value.dtype, np.floating):
                skipped[k] = f"{_name(*ports[k])}: {value.dtype} (not a float)"
            elif k not in skipped:
                values.setdefault(k, []).append(value.astype(np.float32))
    tensors = [layer_diff.Tensor(name=_name(op, i), node_id=op.get_friendly_name(), op_type=op.get_type_name(),
                                 values=values[k]) for k, (op, i) in enumerate(ports) if k in values and k not in skipped]
    log.info("%s: %d tensors of %d nodes read on %d samples", model.name, len(tensors), len(nodes), len(samples))
    return layer_diff.Tensors(reader=READER, tensors=tensors, graph=graph.get_friendly_name() or "main",
                              skipped=sorted(skipped.values()))


layer_diff.register("openvino", read)
