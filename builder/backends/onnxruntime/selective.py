"""Selective int8 for ONNX Runtime QDQ models: which nodes lose most to quantization, found with ONNX
Runtime's own QDQ debugger (quantization.qdq_loss_debug), and the float16 fallback.

A node's error is the quantization noise of its output activation in the QDQ model: the activation
before its QuantizeLinear against after its DequantizeLinear, as noise-to-signal in dB (the debugger's
SQNR, negated, so that larger is worse like TFLite's rmse/scale). Excluding a node from quantization
(`nodes_to_exclude`) keeps it in float.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from builder.backends.onnxruntime.quantize import single_input
from builder.errors import ConversionError
from builder.util import atomic_copy

METRIC = "noise/signal dB"
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # where the weights, and most of the error, are


def _activations(model: Path, augmented: Path, samples: np.ndarray) -> dict[str, list[np.ndarray]]:
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    modify_model_output_intermediate_tensors(str(model), str(augmented))
    name = single_input(model)
    return collect_activations(str(augmented), [{name: sample[None]} for sample in samples])


def _quantized_ranges(graph) -> dict[str, tuple[float, float]]:
    """Tensor -> the float range its QuantizeLinear can hold: (qmin - zero point) to (qmax - zero point) times scale."""
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    ranges = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) == 3 and {*node.input[1:]} <= constants.keys():
            scale, zero = constants[node.input[1]], constants[node.input[2]]
            if scale.size == 1:
                info, zero = np.iinfo(zero.dtype), zero.astype(np.float64)
                ranges[node.input[0]] = (float((info.min - zero) * scale), float((info.max - zero) * scale))
    return ranges


def layer_errors(qdq_model: Path, samples: np.ndarray) -> list[tuple[str, float]]:
    """(node name, noise/signal dB of its output) for every node whose output the QDQ model quantizes,
    in the model's node order. The activation before quantization is first clipped to the range its
    QuantizeLinear holds: the quantizer removes a Relu or Clip in front of a QuantizeLinear, so what it
    clipped is not quantization noise."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio, create_activation_matching

    graph = onnx.load(str(qdq_model), load_external_data=False).graph
    ranges = _quantized_ranges(graph)
    try:
        with tempfile.TemporaryDirectory(prefix="qdq-debug-") as tmp:
            matching = create_activation_matching(_activations(qdq_model, Path(tmp) / "augmented.onnx", samples))
    except Exception as exc:  # the debugger raises whatever ONNX Runtime raises
        raise ConversionError(f"ONNX Runtime's QDQ debugger failed on {qdq_model.name}: {exc}",
                              cause="quantization-failed") from exc
    noise = {}
    for name, match in matching.items():
        if name in ranges and match["pre_qdq"] is not None and match["post_qdq"] is not None:
            before = [np.clip(t, *ranges[name]) for t in match["pre_qdq"]]
            noise[name] = -compute_signal_to_quantization_noice_ratio(before, match["post_qdq"])
    producers = [(node.name, output) for node in graph.node for output in node.output if node.op_type != "DequantizeLinear"]
    return [(name, noise[output]) for name, output in producers if output in noise and np.isfinite(noise[output])]


def output_nodes(model: Path) -> list[str]:
    """The compute nodes (Conv, Gemm, MatMul) nearest each graph output, walking back through the ops
    between (Softmax, Reshape, Flatten...)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    found = []
    for output in graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type not in COMPUTE_OPS:
            node = producer.get(node.input[0]) if node.input else None
        if node is not None and node.name not in found:
            found.append(node.name)
    return found


def to_fp16(src: Path, out: Path) -> dict:
    """Float16 weights and compute, float32 inputs and outputs (casts at the edges)."""
    import onnx
    import onnxruntime
    from onnxruntime.transformers.float16 import convert_float_to_float16

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="onnx-fp16-") as tmp:
        converted = Path(tmp) / "model.onnx"
        try:
            onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(converted))
        except Exception as exc:
            raise ConversionError(f"float16 conversion of {src.name} failed: {exc}", cause="conversion-failed") from exc
        atomic_copy(converted, out)
    return {"precision": "fp16", "converter": f"onnxruntime {onnxruntime.__version__} float16",
            "seconds": round(time.monotonic() - started, 2), "size": out.stat().st_size}
