"""OpenVINO's per-layer profile: its performance counters (PERF_COUNT), per executed node of the compiled model,
with the kernel that ran it (`exec_type`, e.g. jit_avx2_I8), which names its precision."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from builder.backends.openvino.runtime import compile_model
from builder.stage import profiling
from builder.stage.runtimes import random_inputs

_PRECISION = re.compile(r"_(FP32|F32|FP16|F16|BF16|I8|U8|I32|I64)$", re.IGNORECASE)
_NAMES = {"fp32": "fp32", "f32": "fp32", "fp16": "fp16", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8",
          "i32": "int32", "i64": "int64"}
SKIPPED = {"Parameter", "Result", "Constant"}  # a model's inputs and outputs take no time of their own


def precision_of(exec_type: str) -> str | None:
    """The precision an OpenVINO kernel's name ends with: jit_avx2_I8 -> int8, brgconv_avx512_f32 -> fp32."""
    found = _PRECISION.search(exec_type)
    return _NAMES[found.group(1).lower()] if found else None


def profile(model: Path, files: Mapping[str, Path], spec: profiling.ProfileSpec,
            log: logging.Logger) -> profiling.Measured:
    options = {k: v for k, v in spec.runtime_options.items() if k in ("device", "precision", "performance_hint")}
    compiled, inputs, _ = compile_model(model, threads=spec.threads, properties={"PERF_COUNT": True}, **options)
    request = compiled.create_infer_request()
    data = random_inputs(inputs, origin=model.name)
    for _ in range(max(spec.warmup, 1)):
        request.infer(data)
    total: dict[str, float] = defaultdict(float)
    kinds: dict[str, tuple[str, str]] = {}
    for _ in range(spec.runs):
        request.infer(data)
        for info in request.get_profiling_info():  # the counters of the last inference
            if info.status.name != "EXECUTED" or info.node_type in SKIPPED:
                continue
            total[info.node_name] += info.real_time.total_seconds() * 1000.0
            kinds[info.node_name] = (info.node_type, info.exec_type)
    layers = [profiling.Layer(name=name, node_id=name, op_type=kinds[name][0], ms=ms / spec.runs,
                              precision=precision_of(kinds[name][1]), unit=kinds[name][1])
              for name, ms in total.items()]
    device = options.get("device", "CPU")
    return profiling.Measured(profiler=f"OpenVINO performance counters ({device})", layers=layers, runs=spec.runs,
                              caveat="the counters time each executed node of the compiled graph (fused nodes "
                                     "count once); the time between nodes is not in them")


profiling.register("openvino", profile)
