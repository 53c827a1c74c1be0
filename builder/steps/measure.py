"""Device-stage steps: benchmark each artifact, validate it against the fp32 reference."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from builder import device_facts
from builder.errors import StepError
from builder.steps import vela
from builder.steps.base import Step, StepContext, StepParams
from builder.workdir import LABELS, VALIDATION

GATE_METRICS = {  # gate field -> (result field, passes(value, threshold))
    "min_top1_agreement": ("top1_agreement", lambda v, t: v >= t),
    "min_top5_agreement": ("top5_agreement", lambda v, t: v >= t),
    "min_accuracy": ("top1_accuracy", lambda v, t: v >= t),
    "min_cosine": ("cosine", lambda v, t: v >= t),
    "min_snr_db": ("snr_db", lambda v, t: v >= t),
    "max_abs_error": ("max_abs_error", lambda v, t: v <= t),
}


def model_size(path: Path) -> int:
    """Bytes on disk; an OpenVINO IR counts its .bin too."""
    files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    return sum(f.stat().st_size for f in files if f.exists())


class Benchmark(Step):
    kind = "benchmark"
    stage = "device"
    summary = "latency percentiles, throughput, init time, peak memory (and benchmark_model / benchmark_app if present)"

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        from builder import benchmark

        if vela.is_vela(ctx.input("model")):  # runs only on the NPU: report Vela's estimate instead
            return {"benchmark": vela.estimate_benchmark(ctx)}
        cfg = ctx.recipe.benchmark
        model = ctx.input("model")
        runs = cfg.emulated_runs if ctx.emulated else cfg.runs
        thermal_before = device_facts.thermal_state()
        session, init_ms = benchmark.measure_load(model, threads=cfg.threads)
        ctx.log.info("%s loaded in %.1f ms; timing %d runs", model.name, init_ms, runs)
        result = benchmark.measure(session, warmup=min(cfg.warmup, 1) if ctx.emulated else cfg.warmup, runs=runs,
                                   min_seconds=0.0 if ctx.emulated else cfg.min_seconds)
        result |= {"init_ms": init_ms, "emulated": ctx.emulated, "on_target": ctx.placement.on_target,
                   "size_bytes": model_size(model),
                   "device": {**ctx.placement.model_dump(), **device_facts.machine_facts(),
                              "thermal_before": thermal_before, "thermal_after": device_facts.thermal_state()}}
        tools: dict[str, Callable[[], dict]] = {}
        if session.runtime == "openvino" and cfg.throughput and not ctx.emulated:
            result["async"] = benchmark.openvino_throughput(model)
            if benchmark.benchmark_app_binary():
                tools["benchmark_app"] = lambda: benchmark.benchmark_app_tool(model, seconds=5, shape=_shapes(session))
        binary = os.environ.get("BENCHMARK_MODEL_BIN")
        if session.runtime == "litert" and binary:
            tools["benchmark_model"] = lambda: benchmark.benchmark_model_tool(
                Path(binary), model, threads=cfg.threads, runs=runs, warmup=cfg.warmup)
        if session.runtime == "tensorrt":
            from builder import trtexec

            if trtexec_binary := trtexec.trtexec_binary():
                tools["trtexec"] = lambda: trtexec.trtexec_tool(model, binary=trtexec_binary, iterations=runs)
        if tools:
            result["tools"] = {name: _second_opinion(ctx, name, run) for name, run in tools.items()}
        ctx.log.info("p50 %.3f ms, %.1f fps%s", result["p50_ms"], result["throughput_fps"],
                     " (EMULATED: not device timings)" if ctx.emulated else "")
        return {"benchmark": result}


def _shapes(session) -> str:
    """benchmark_app's -shape for the session's inputs, dynamic dims (the batch) as 1."""
    return ",".join(f"{t.name}[{','.join(str(d if d > 0 else 1) for d in t.shape)}]" for t in session.inputs)


def _second_opinion(ctx: StepContext, name: str, run: Callable[[], dict]) -> dict:
    """An external tool's figures; its failure is recorded beside ours, not a failed benchmark."""
    try:
        return run()
    except StepError as exc:
        ctx.log.warning("%s failed: %s", name, exc.message)
        return {"error": exc.message}


def _top1_hits(logits: np.ndarray, labels: list) -> float | None:
    """Accuracy over the labeled samples; a label may list several right classes."""
    predicted = logits.argmax(axis=1)
    hits = [p in (label if isinstance(label, list) else [label]) for p, label in zip(predicted, labels) if label is not None]
    return float(np.mean(hits)) if hits else None


class Validate(Step):
    kind = "validate"
    stage = "device"
    summary = "outputs vs the fp32 reference: top-1/top-5 agreement, accuracy, cosine, max abs error, SNR; gates"

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return ("validation",)

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        from builder import metrics
        from builder.runtimes import load

        samples_path = ctx.workdir / VALIDATION
        if not samples_path.exists():
            ctx.log.warning("no validation data in the recipe: nothing to validate")
            return {"validation": None}
        samples = np.load(samples_path)
        if ctx.emulated:  # about a second per inference under QEMU: validate on a prefix
            samples = samples[: ctx.recipe.benchmark.emulated_validation_samples]
        model = ctx.input("model")
        if vela.is_vela(model):  # an NPU command stream: validate the int8 TFLite Vela compiled
            model = vela.validation_stand_in(ctx)
            ctx.log.info("validating %s, the int8 TFLite that Vela compiled (the NPU keeps its int8 arithmetic)", model.name)
        ref_out = _reference_outputs(str(ctx.input("reference")), str(samples_path), len(samples))
        candidate = load(model)
        cand_out = [candidate.run([s]) for s in samples]
        result = {"reference": ctx.input("reference").name, "samples": int(len(samples)), "emulated": ctx.emulated}
        if model != ctx.input("model"):
            result["validated"] = model.name
        result |= metrics.compare([o for outs in ref_out for o in outs], [o for outs in cand_out for o in outs])
        if ctx.recipe.task == "classification":
            ref_logits = np.stack([o[0].reshape(-1) for o in ref_out])
            cand_logits = np.stack([o[0].reshape(-1) for o in cand_out])
            result["top1_agreement"] = metrics.topk_agreement(ref_logits, cand_logits, k=1)
            if ref_logits.shape[1] >= 5:  # a 2-class model has no top-5
                result["top5_agreement"] = metrics.topk_agreement(ref_logits, cand_logits, k=5)
            labels = json.loads((ctx.workdir / LABELS).read_text()) if (ctx.workdir / LABELS).exists() else None
            if labels:
                result["top1_accuracy"] = _top1_hits(cand_logits, labels)
        result["gates"] = check_gates(ctx.recipe.gates_of(ctx.call.variant).model_dump(exclude_none=True), result)
        for gate in result["gates"]:
            (ctx.log.info if gate["passed"] else ctx.log.error)(
                "gate %s %s: %s (threshold %s)", gate["gate"], "passed" if gate["passed"] else "MISSED",
                gate["value"], gate["threshold"])
        return {"validation": result}


@functools.lru_cache(maxsize=1)
def _reference_outputs(reference: str, samples: str, count: int) -> list[list[np.ndarray]]:
    """The fp32 reference's outputs, computed once per stage for all the variants validated against it."""
    from builder.runtimes import load

    session = load(Path(reference))
    return [session.run([s]) for s in np.load(samples)[:count]]


def check_gates(gates: dict, result: dict) -> list[dict]:
    out = []
    for gate, threshold in gates.items():
        field, passes = GATE_METRICS[gate]
        value = result.get(field)
        out.append({"gate": gate, "metric": field, "threshold": threshold, "value": value,
                    "passed": value is not None and passes(value, threshold)})
    return out
