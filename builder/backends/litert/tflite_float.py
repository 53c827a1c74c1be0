"""A downloaded float .tflite made ready for quantizers: dense fp32 constants and a signature.

Real-world files (mediapipe, TF Hub's 2018 models) store weights as fp16 behind
DEQUANTIZE ops, some as sparse tensors behind DENSIFY, and carry no signature
defs. ai-edge-quantizer calibrates through a signature and quantizes float32
constants only, so those constant-only ops are folded into fp32 constants and a
signature over subgraph 0's inputs and outputs is added: a flatbuffer edit,
reported so that the manifest records it. Standalone RELUs are fused into their producers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from builder.errors import ConversionError
from builder.util import atomic_write_bytes

SIGNATURE_KEY = "serving_default"
_FOLDED_OPS = ("DEQUANTIZE", "DENSIFY")


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_name(schema, fb, op) -> str:
    code = fb.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return code.customCode.decode()
    return next(k for k, v in vars(schema.BuiltinOperator).items() if v == builtin)


def _has_data(fb, tensor) -> bool:
    buffer = fb.buffers[tensor.buffer] if tensor.buffer else None
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def describe(model: Path | bytes) -> dict[str, Any]:
    """What a float .tflite stores: signatures, fp16 constants behind DEQUANTIZE, sparse tensors."""
    schema = _schema()
    blob = model if isinstance(model, bytes) else Path(model).read_bytes()
    fb = schema.ModelT.InitFromPackedBuf(blob, 0)
    graph = fb.subgraphs[0]
    fp16 = 0
    for op in graph.operators or []:
        if _op_name(schema, fb, op) == "DEQUANTIZE":
            src = graph.tensors[int(op.inputs[0])]
            fp16 += src.type == schema.TensorType.FLOAT16 and _has_data(fb, src)
    return {
        "signatures": len(fb.signatureDefs or []),
        "fp16_weights": int(fp16),
        "sparse_tensors": [_name(t) for g in fb.subgraphs for t in g.tensors or [] if t.sparsity is not None],
    }


def _foldable(schema, fb) -> list[int]:
    """Indices of DEQUANTIZE/DENSIFY ops of subgraph 0 fed only by constants (or by other such ops)."""
    graph = fb.subgraphs[0]
    folded: set[int] = set()
    ops = []
    for i, op in enumerate(graph.operators or []):
        if _op_name(schema, fb, op) not in _FOLDED_OPS:
            continue
        inputs = [int(t) for t in op.inputs if t >= 0]
        if all(_has_data(fb, graph.tensors[t]) or t in folded for t in inputs):
            ops.append(i)
            folded.update(int(t) for t in op.outputs)
    return ops


def _values_from_interpreter(blob: bytes, tensors: list[int], sparse: list[str]) -> dict[int, np.ndarray]:
    """Let LiteRT's own kernels densify (and dequantize) constants: run once, read the tensors back."""
    from ai_edge_litert import interpreter as litert

    try:
        interp = litert.Interpreter(
            model_content=blob, experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
        for detail in interp.get_input_details():
            interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interp.invoke()
        return {t: np.array(interp.get_tensor(t), dtype=np.float32) for t in tensors}
    except (RuntimeError, ValueError) as exc:
        raise ConversionError(
            f"sparse weights could not be densified ({exc}): {', '.join(sparse[:8])}"
            + (f" and {len(sparse) - 8} more" if len(sparse) > 8 else ""),
            cause="sparse-weights",
            hint="the model needs a runtime op (e.g. a custom op) to run; give a dense export of the model",
        ) from exc


def _fold(schema, fb, blob: bytes, ops: list[int]) -> dict[int, np.ndarray]:
    graph = fb.subgraphs[0]
    outputs = [int(graph.operators[i].outputs[0]) for i in ops]
    names = [_op_name(schema, fb, graph.operators[i]) for i in ops]
    if "DENSIFY" in names:
        sparse = [_name(t) for t in graph.tensors if t.sparsity is not None]
        return _values_from_interpreter(blob, outputs, sparse)
    values = {}
    for i, out in zip(ops, outputs):
        src = graph.tensors[int(graph.operators[i].inputs[0])]
        if src.type != schema.TensorType.FLOAT16:  # an int8 DEQUANTIZE: the model is not a float model
            raise ConversionError(f"{_name(src)} is a quantized constant: the source is not a float model",
                                  cause="not-a-float-model", hint="give the float .tflite as the source")
        data = np.frombuffer(bytes(fb.buffers[src.buffer].data), np.float16)
        values[out] = data.reshape([int(d) for d in src.shape]).astype(np.float32)
    return values


_FUSES_RELU = {"ADD": "AddOptionsT", "CONV_2D": "Conv2DOptionsT", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptionsT"}


def _fuse_relus(schema, fb) -> int:
    """Fold standalone RELU ops into the ADD/CONV that feeds them (as the TF converter does).

    Quantized, a standalone RELU is an op XNNPACK does not take, which splits the graph into
    many delegate partitions (mediapipe's face detector: 18, and 6x slower int8).
    """
    graph = fb.subgraphs[0]
    readers: dict[int, int] = {}
    for op in graph.operators:
        for t in op.inputs:
            readers[int(t)] = readers.get(int(t), 0) + 1
    producer = {int(t): op for op in graph.operators for t in op.outputs}
    outputs = {int(t) for t in graph.outputs}
    fused = []
    for op in graph.operators:
        if _op_name(schema, fb, op) != "RELU":
            continue
        src = int(op.inputs[0])
        prev = producer.get(src)
        options = getattr(prev, "builtinOptions", None)
        if (prev is None or readers.get(src) != 1 or src in outputs
                or type(options).__name__ != _FUSES_RELU.get(_op_name(schema, fb, prev))
                or options.fusedActivationFunction != schema.ActivationFunctionType.NONE):
            continue
        options.fusedActivationFunction = schema.ActivationFunctionType.RELU
        prev.outputs = np.array([int(op.outputs[0])], np.int32)
        fused.append(op)
    graph.operators = [op for op in graph.operators if all(op is not f for f in fused)]
    return len(fused)


def _drop_unused_tensors(fb) -> None:
    """Remove tensors no op reads or writes (the fp16/sparse originals): calibrators read every tensor."""
    graph = fb.subgraphs[0]
    used = {int(t) for op in graph.operators for t in list(op.inputs) + list(op.outputs) if t >= 0}
    used |= {int(t) for t in list(graph.inputs) + list(graph.outputs)}
    keep = sorted(used)
    new_index = {old: new for new, old in enumerate(keep)}
    for i, tensor in enumerate(graph.tensors):
        if i not in used and tensor.buffer:
            fb.buffers[tensor.buffer].data = None
    graph.tensors = [graph.tensors[i] for i in keep]

    def remap(ids):
        return np.array([new_index[int(t)] if t >= 0 else -1 for t in ids], np.int32)

    for op in graph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    graph.inputs, graph.outputs = remap(graph.inputs), remap(graph.outputs)
    for sig in fb.signatureDefs or []:
        for entry in (sig.inputs or []) + (sig.outputs or []) if sig.subgraphIndex == 0 else []:
            entry.tensorIndex = new_index[entry.tensorIndex]


def _signature(schema, graph) -> Any:
    """Inputs keep their tensor names; outputs are output_0, output_1, ... in the subgraph's order, as
    the TF converter names them (runtimes order a signature's outputs by name)."""
    def tensor_map(index: int, name: str):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, index
        return entry

    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = SIGNATURE_KEY, 0
    sig.inputs = [tensor_map(int(i), _name(graph.tensors[int(i)])) for i in graph.inputs]
    sig.outputs = [tensor_map(int(i), f"output_{n}") for n, i in enumerate(graph.outputs)]
    return sig


def float_model(src: Path, out: Path) -> dict[str, Any]:
    """Write `src` with folded fp16/sparse constants and a signature to `out`; report what changed."""
    import flatbuffers

    schema = _schema()
    blob = Path(src).read_bytes()
    fb = schema.ModelT.InitFromPackedBuf(blob, 0)
    graph = fb.subgraphs[0]
    before = describe(blob)
    for code in fb.operatorCodes:  # files older than schema v3a set only the deprecated field
        code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode)
    ops = _foldable(schema, fb)
    values = _fold(schema, fb, blob, ops) if ops else {}
    for index, value in values.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(value, np.float32).tobytes(), np.uint8)
        fb.buffers.append(buffer)
        tensor = graph.tensors[index]
        tensor.buffer, tensor.type, tensor.sparsity = len(fb.buffers) - 1, schema.TensorType.FLOAT32, None
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in set(ops)]
    fused_relus = _fuse_relus(schema, fb)
    _drop_unused_tensors(fb)
    signature_added = not fb.signatureDefs
    if signature_added:
        fb.signatureDefs = [_signature(schema, graph)]
    builder = flatbuffers.Builder(len(blob) * 2 + 1024)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    atomic_write_bytes(Path(out), bytes(builder.Output()))
    return {
        "signature_added": SIGNATURE_KEY if signature_added else None,
        "fp16_weights_dequantized": before["fp16_weights"],
        "sparse_tensors_densified": before["sparse_tensors"],
        "folded_ops": len(ops),
        "fused_relus": fused_relus,
    }


def signature_inputs(model: Path) -> tuple[str, list[str]]:
    """(signature key, input names) of the first signature, as calibration data is keyed."""
    schema = _schema()
    fb = schema.ModelT.InitFromPackedBuf(Path(model).read_bytes(), 0)
    sig = fb.signatureDefs[0]
    key = sig.signatureKey.decode() if isinstance(sig.signatureKey, bytes) else sig.signatureKey
    return key, [e.name.decode() if isinstance(e.name, bytes) else e.name for e in sig.inputs]
