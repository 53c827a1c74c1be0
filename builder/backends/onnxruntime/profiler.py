"""ONNX Runtime's per-layer profile: its own profiler (SessionOptions.enable_profiling), whose JSON trace holds a
`Node` event per node and inference (`dur` in microseconds, the op type and the execution provider)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from builder.backends.onnxruntime.runtime import _info
from builder.errors import StepError
from builder.stage import profiling
from builder.stage.runtimes import random_inputs

_KERNEL = "_kernel_time"
_PRECISIONS = {"float": "fp32", "float16": "fp16", "int8": "int8", "uint8": "int8", "int32": "int32",
               "int64": "int64", "bfloat16": "bf16", "double": "fp64"}


def node_times(events: list[dict], warmup: int = 0) -> tuple[list[profiling.Layer], int]:
    """Each node's kernel time per inference, from the events of ONNX Runtime's profile, leaving out the first
    `warmup` inferences (`model_run` events); and the number of inferences they are averaged over."""
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    runs = len(model_runs) - warmup
    if runs < 1:
        raise StepError(f"ONNX Runtime's profile holds {len(model_runs)} inferences, {warmup} of them warm-up")
    after = model_runs[warmup - 1]["ts"] + model_runs[warmup - 1]["dur"] if warmup else float("-inf")
    total: dict[str, float] = defaultdict(float)
    facts: dict[str, dict] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(_KERNEL) or event["ts"] < after:
            continue
        node = name.removesuffix(_KERNEL)
        total[node] += event["dur"] / 1000.0
        facts[node] = event.get("args", {})
    return [profiling.Layer(name=node, node_id=node, op_type=facts[node].get("op_name", "?"), ms=ms / runs,
                            precision=_precision(facts[node]), unit=facts[node].get("provider"))
            for node, ms in total.items()], runs


def _precision(args: dict) -> str | None:
    """The element type of a node's first input, as its event gives it ([{"float": [1, 3, 224, 224]}])."""
    shapes = args.get("input_type_shape") or args.get("output_type_shape") or []
    first = next(iter(shapes[0]), None) if shapes and isinstance(shapes[0], dict) else None
    return _PRECISIONS.get(first, first)


def profile(model: Path, files: Mapping[str, Path], spec: profiling.ProfileSpec,
            log: logging.Logger) -> profiling.Measured:
    import onnxruntime as ort

    providers = list(spec.runtime_options.get("providers") or ["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = spec.threads, 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        try:
            session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own types
            raise StepError(f"onnxruntime could not load {model.name} to profile it: {exc}") from exc
        inputs = [_info(a) for a in session.get_inputs()]
        feed = dict(zip([i.name for i in inputs], random_inputs(inputs, origin=model.name), strict=True))
        warmup = max(spec.warmup, 1)
        for _ in range(warmup + spec.runs):
            session.run(None, feed)
        layers, runs = node_times(json.loads(Path(session.end_profiling()).read_text()), warmup)
    return profiling.Measured(profiler=f"ONNX Runtime profiler ({', '.join(session.get_providers())})",
                              layers=layers, runs=runs,
                              caveat="ONNX Runtime's profiler keeps memory and thread-pool statistics for every node it "
                                     "times, which inflates each node's time, the smallest most: read the shares, "
                                     "not the sum")


profiling.register("onnxruntime", profile)
