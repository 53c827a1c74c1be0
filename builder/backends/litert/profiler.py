"""LiteRT's per-layer profile: benchmark_model's op profiler, else each op of the model timed on its own in LiteRT's
interpreter with XNNPACK as the benchmark runs it; and the partitions XNNPACK makes of the whole graph.

Where TFLite's benchmark_model binary is (BENCHMARK_MODEL_BIN or PATH), its op profiler (`--enable_op_profiling`) times
the ops inside a whole inference. The Python interpreter has no op profiler and the images have no such binary, so
there each op of the main subgraph is cut out into a one-op model with LiteRT's own flatbuffer schema
(with the dequantizing of its fp16 weights, which XNNPACK folds), fed the values it sees in a real inference (kept
by `experimental_preserve_all_tensors`), and timed back to back.
An op timed alone finds its weights in cache, so the layers' sum tends to be under the whole model's p50. Each op
is timed in one stretch: interleaving them would leave every other op's XNNPACK threads spinning beside it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from builder.backends.litert import benchmark_model
from builder.backends.litert.runtime import interpreter_class
from builder.errors import StepError
from builder.stage import profiling
from builder.stage.runtimes import TensorInfo, random_inputs

CAVEAT = "each op timed alone, back to back: its weights stay in cache, which a whole inference does not give them"
_PRECISIONS = {"FLOAT32": "fp32", "FLOAT16": "fp16", "INT8": "int8", "UINT8": "int8", "INT16": "int16",
               "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def _schema():
    from ai_edge_litert import schema_py_generated  # the flatbuffer schema LiteRT ships

    return schema_py_generated


def _names(enum) -> dict[int, str]:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


class _Model:
    """A .tflite file's object tree, and one-op models cut from its main subgraph."""

    def __init__(self, path: Path):
        fb = self.fb = _schema()
        self.model = fb.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
        self.graph = self.model.subgraphs[0]
        self.op_names, self.type_names = _names(fb.BuiltinOperator), _names(fb.TensorType)
        # weights stored in fp16 (or int8) and dequantized once: XNNPACK folds them into the op that reads them
        self.folded = {op.outputs[0]: i for i, op in enumerate(self.graph.operators)
                       if self.op_type(op) == "DEQUANTIZE" and all(self.constant(t) for t in op.inputs if t >= 0)}

    @property
    def graph_id(self) -> str:
        name = self.graph.name
        return (name.decode() if isinstance(name, bytes) else name) or "main"

    def op_type(self, op) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        return self.op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    def tensor_name(self, index: int) -> str:
        name = self.graph.tensors[index].name
        return name.decode() if isinstance(name, bytes) else name

    def constant(self, index: int) -> bool:
        buffer = self.model.buffers[self.graph.tensors[index].buffer]
        return buffer is not None and (buffer.data is not None and len(buffer.data) > 0 or bool(buffer.size))

    def fed(self, op) -> list[int]:
        """The op's inputs that an inference computes (not its weights, nor weights dequantized), once each."""
        return list(dict.fromkeys(t for t in op.inputs if t >= 0 and not self.constant(t) and t not in self.folded))

    def timed(self) -> list[int]:
        """The ops an inference runs: all but the dequantizing of weights."""
        return [i for i, op in enumerate(self.graph.operators) if op.outputs[0] not in self.folded]

    def precision(self, op) -> str | None:
        """The precision the op computes in: its activations', and its weights' where they differ (hybrid)."""
        kind = lambda t: _PRECISIONS.get(self.type_names.get(self.graph.tensors[t].type), None)  # noqa: E731
        activations = [kind(t) for t in self.fed(op)] or [kind(t) for t in op.outputs]
        weights = [kind(self._stored(t)) for t in op.inputs if t >= 0 and (self.constant(t) or t in self.folded)]
        act = activations[0] if activations else None
        if act == "fp32" and weights and weights[0] in ("int8", "fp16"):
            return f"fp32 ({weights[0]} weights)"
        return act

    def _stored(self, tensor: int) -> int:
        """The constant a dequantized weight comes from."""
        return self.graph.operators[self.folded[tensor]].inputs[0] if tensor in self.folded else tensor

    def one_op(self, index: int) -> bytes:
        """A model of the op alone (with the dequantizing of its weights): its inputs that an inference computes
        become the model's inputs."""
        import flatbuffers

        fb, op = self.fb, self.graph.operators[index]
        ops = [*(self.graph.operators[self.folded[t]] for t in dict.fromkeys(op.inputs) if t in self.folded), op]
        used = list(dict.fromkeys(t for each in ops for t in [*each.inputs, *each.outputs] if t >= 0))
        at = {t: i for i, t in enumerate(used)}
        model = fb.ModelT()
        model.version, model.operatorCodes, model.buffers = self.model.version, self.model.operatorCodes, [fb.BufferT()]
        tensors = []
        for t in used:
            tensor = fb.TensorT()
            vars(tensor).update(vars(self.graph.tensors[t]))
            tensor.buffer = 0
            if self.constant(t):
                model.buffers.append(self.model.buffers[self.graph.tensors[t].buffer])
                tensor.buffer = len(model.buffers) - 1
            tensors.append(tensor)
        operators = []
        for each in ops:
            alone = fb.OperatorT()
            vars(alone).update(vars(each))
            alone.inputs = [at[t] if t >= 0 else -1 for t in each.inputs]
            alone.outputs = [at[t] for t in each.outputs]
            alone.intermediates = []
            operators.append(alone)
        graph = fb.SubGraphT()
        graph.tensors, graph.operators, graph.name = tensors, operators, self.graph.name
        graph.inputs, graph.outputs = [at[t] for t in self.fed(op)], [at[t] for t in op.outputs]
        model.subgraphs = [graph]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _values(path: Path, threads: int) -> dict[int, np.ndarray]:
    """Every tensor's value in one inference on random inputs, without delegates (they keep no intermediates)."""
    cls = interpreter_class()
    module = __import__(cls.__module__, fromlist=["OpResolverType"])
    interp = cls(model_path=str(path), num_threads=threads, experimental_preserve_all_tensors=True,
                 experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    details = interp.get_input_details()
    infos = [TensorInfo(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name) for d in details]
    for detail, x in zip(details, random_inputs(infos, origin=path.name), strict=True):
        interp.set_tensor(detail["index"], x)
    interp.invoke()
    values = {}
    for detail in interp.get_tensor_details():
        try:
            values[detail["index"]] = interp.get_tensor(detail["index"])
        except ValueError:  # a tensor without data (an optional input)
            continue
    return values


def _delegates(interp) -> int | None:
    """How many delegate nodes (XNNPACK's partitions) the interpreter's execution plan holds."""
    try:
        return sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())
    except (AttributeError, KeyError):  # a private API, absent in some builds
        return None


def partitions(path: Path, threads: int) -> int | None:
    """The partitions XNNPACK makes of the whole model as the benchmark loads it."""
    interp = interpreter_class()(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    return _delegates(interp)


def _time_alone(content: bytes, fed: list[np.ndarray], spec: profiling.ProfileSpec) -> tuple[float, bool]:
    """The op's median time alone in ms, and whether XNNPACK ran it."""
    interp = interpreter_class()(model_content=content, num_threads=spec.threads)
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), fed, strict=True):
        interp.set_tensor(detail["index"], x.reshape(detail["shape"]))
    for _ in range(max(spec.warmup, 1)):
        interp.invoke()
    times = []
    for _ in range(spec.runs):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0, bool(_delegates(interp))


def profile(model: Path, files: Mapping[str, Path], spec: profiling.ProfileSpec,
            log: logging.Logger) -> profiling.Measured:
    """benchmark_model's op profiler where the binary is here (BENCHMARK_MODEL_BIN), else each op alone."""
    if binary := benchmark_model.benchmark_model_binary():
        return _by_benchmark_model(binary, model, spec)
    return _each_op_alone(model, spec, log)


def _partition_warnings(model: Path, parts: int | None) -> list[str]:
    if parts is not None and parts > 1:
        return [f"XNNPACK split {model.name} into {parts} partitions: the graph goes back and forth between "
                "XNNPACK and the CPU kernels (an op XNNPACK does not take, or an unfused activation)"]
    return []


def _by_benchmark_model(binary: Path, model: Path, spec: profiling.ProfileSpec) -> profiling.Measured:
    found = benchmark_model.op_profile_tool(binary, model, threads=spec.threads, runs=spec.runs,
                                             warmup=max(spec.warmup, 1))
    parts = partitions(model, spec.threads)
    return profiling.Measured(profiler="benchmark_model --enable_op_profiling", runs=spec.runs, graph=_Model(model).graph_id,
                              layers=[profiling.Layer(**x | {"unit": "XNNPACK" if x["unit"] == "Delegate" else x["unit"]})
                                      for x in found], partitions=parts,
                              warnings=_partition_warnings(model, parts),
                              caveat="XNNPACK's operators are its own, named by their kind: Model Explorer's graph "
                                     "shows only the ops it left to LiteRT's kernels")


def _each_op_alone(model: Path, spec: profiling.ProfileSpec, log: logging.Logger) -> profiling.Measured:
    tree = _Model(model)
    values = _values(model, spec.threads)
    layers, failed = [], []
    for index in tree.timed():
        op = tree.graph.operators[index]
        kind = tree.op_type(op)
        try:
            ms, delegated = _time_alone(tree.one_op(index), [values[t] for t in tree.fed(op)], spec)
        except (ValueError, RuntimeError, KeyError) as exc:  # an op that cannot run alone (control flow)
            log.warning("op %d (%s) could not be timed alone: %s", index, kind, exc)
            failed.append(f"{index} {kind}")
            continue
        layers.append(profiling.Layer(name=tree.tensor_name(op.outputs[0]), node_id=str(index), op_type=kind, ms=ms,
                                      precision=tree.precision(op), unit="XNNPACK" if delegated else "CPU kernel"))
    if not layers:
        raise StepError(f"no op of {model.name} could be timed alone", hint="see the step's log for each op's error")
    parts = partitions(model, spec.threads)
    warnings = _partition_warnings(model, parts)
    if failed:
        warnings.append(f"{len(failed)} op(s) could not be timed alone and are not in the profile: {', '.join(failed)}")
    return profiling.Measured(profiler="LiteRT interpreter, each op alone (XNNPACK)", layers=layers, runs=spec.runs,
                              graph=tree.graph_id, partitions=parts, caveat=CAVEAT, warnings=warnings)


profiling.register("litert", profile)
