"""ONNX Runtime's intermediate tensors for a layer diff: every node's float outputs made graph outputs of a copy of
the model, as polygraphy and ONNX Runtime's QDQ debugger do. A QDQ model's Quantize/DequantizeLinear nodes are the
quantization's plumbing, not layers: where a layer's output goes through a QuantizeLinear -> DequantizeLinear pair,
the pair's output is read under the layer's output's name (the activation as the next layers see it, rounded and
clipped), so each layer keeps its fp32 name."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from builder.backends.onnxruntime.runtime import _info
from builder.errors import StepError
from builder.stage import layer_diff
from builder.stage.runtimes import match_layout, quantize

READER = "ONNX Runtime, every node's output a graph output"
PLUMBING = {"QuantizeLinear", "DequantizeLinear", "Constant"}


def _as_consumed(graph) -> dict[str, str]:
    """Tensor -> the output of the QuantizeLinear -> DequantizeLinear pair that it alone goes through, where it does."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    found = {}
    for name, nodes in readers.items():
        if len(nodes) == 1 and nodes[0].op_type == "QuantizeLinear":
            after = readers.get(nodes[0].output[0], [])
            if len(after) == 1 and after[0].op_type == "DequantizeLinear":
                found[name] = after[0].output[0]
    return found


def read(model: Path, samples: list[np.ndarray], options: Mapping[str, object],
         log: logging.Logger) -> layer_diff.Tensors:
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(model))
    graph = proto.graph
    constants = {i.name for i in graph.initializer}
    nodes = [n for n in graph.node if n.op_type not in PLUMBING]
    produced = [(node, name) for node in nodes for name in node.output if name and name not in constants]
    read_at = _as_consumed(graph)
    names = [read_at.get(name, name) for _, name in produced]
    present = {o.name for o in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=name) for name in dict.fromkeys(names) if name not in present)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads, session_options.inter_op_num_threads = 1, 1
    providers = list(options.get("providers") or ["CPUExecutionProvider"])
    try:
        session = ort.InferenceSession(proto.SerializeToString(), sess_options=session_options, providers=providers)
    except Exception as exc:  # ORT raises its own types
        raise StepError(f"onnxruntime could not load {model.name} with its intermediate outputs: {exc}") from exc
    inputs = [_info(a) for a in session.get_inputs()]
    values: dict[str, list[np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for sample in samples:
        feed = {info.name: quantize(match_layout(np.asarray(x), info.shape), info)
                for info, x in zip(inputs, [sample], strict=True)}
        for (_, name), value in zip(produced, session.run(names, feed), strict=True):
            if not np.issubdtype(np.asarray(value).dtype, np.floating):
                skipped[name] = f"{name}: {np.asarray(value).dtype} (not a float)"
            elif name not in skipped:
                values.setdefault(name, []).append(np.asarray(value, dtype=np.float32))
    tensors = [layer_diff.Tensor(name=name, node_id=node.name or name, op_type=node.op_type, values=values[name])
               for node, name in produced if name in values and name not in skipped]
    log.info("%s: %d tensors of %d nodes read on %d samples", model.name, len(tensors), len(nodes), len(samples))
    return layer_diff.Tensors(reader=READER, tensors=tensors, graph=graph.name or "main",
                              skipped=sorted(skipped.values()))


layer_diff.register("onnxruntime", read)
