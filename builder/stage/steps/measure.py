"""Device-stage steps: benchmark each artifact, validate it against the fp32 artifact and the source model."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from pydantic import Field

from builder import formats
from builder.config.common import Task
from builder.config.detection import Detection
from builder.config.recipe import Benchmark as Settings
from builder.errors import StepError
from builder.stage import device_facts
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams

GATE_METRICS = {  # gate field -> (result field, passes(value, threshold)); "source." fields compare with the source
    "min_top1_agreement": ("top1_agreement", lambda v, t: v >= t),
    "min_top5_agreement": ("top5_agreement", lambda v, t: v >= t),
    "min_accuracy": ("top1_accuracy", lambda v, t: v >= t),
    "min_accuracy_ratio": ("accuracy_ratio", lambda v, t: v >= t),
    "min_cosine": ("cosine", lambda v, t: v >= t),
    "min_snr_db": ("snr_db", lambda v, t: v >= t),
    "max_abs_error": ("max_abs_error", lambda v, t: v <= t),
    "min_source_cosine": ("source.cosine", lambda v, t: v >= t),
    "min_source_top1_agreement": ("source.top1_agreement", lambda v, t: v >= t),
    "min_detection_f1": ("detection_f1", lambda v, t: v >= t),
    "min_map50": ("map50", lambda v, t: v >= t),
    "min_miou": ("miou", lambda v, t: v >= t),
    "min_psnr_db": ("psnr_db", lambda v, t: v >= t),
    "max_cer": ("cer", lambda v, t: v <= t),
}
LABEL_GATES = ("min_accuracy", "min_accuracy_ratio", "min_map50")  # figures against the data's labels, not another model


GateName = Literal[tuple(GATE_METRICS)]  # type: ignore[valid-type]
_DEFAULTS = Settings()  # a recipe's benchmark settings when it sets none


def model_size(path: Path) -> int:
    """Bytes on disk, the model's companions (an IR's weights file) included."""
    fmt = formats.of_file(path.name)
    return sum(f.stat().st_size for f in (fmt.files(path) if fmt else [path]) if f.exists())


def runtime_for(scope: PlanScope) -> str:
    """The runtime that measures the scope's model on this target: the target's for its own format, else
    the format's."""
    fmt = scope.format
    if fmt == scope.target.format:
        return scope.target.runtime
    runtime = formats.get(fmt).runtime if fmt else None
    if runtime is None:
        raise StepError(f"no runtime runs {fmt} models", hint="measure a model in a format a runtime loads")
    return runtime


def _files(ctx: StepContext) -> dict[str, Path]:
    return {name: ctx.input(name) for name in ctx.call.inputs}


class Benchmark(Step):
    kind = "benchmark"
    measures = True
    stage = "device"
    summary = "latency percentiles, throughput, init time, peak memory (and the runtime vendor's own benchmark tool)"

    class Params(StepParams):
        """The recipe's benchmark settings; the run picks the emulated ones when its placement is emulated."""

        threads: int = _DEFAULTS.threads
        warmup: int = _DEFAULTS.warmup
        runs: int = _DEFAULTS.runs
        min_seconds: float = _DEFAULTS.min_seconds
        emulated_runs: int = _DEFAULTS.emulated_runs
        throughput: bool = _DEFAULTS.throughput
        scenario: Literal["quick", "single-stream", "offline"] = _DEFAULTS.scenario
        min_query_count: int = _DEFAULTS.min_query_count
        min_duration_ms: int = _DEFAULTS.min_duration_ms
        target_latency_percentile: float = _DEFAULTS.target_latency_percentile
        runtime: str = Field(description="the runtime that loads the model: the target's for its format, "
                                         "else the format's")
        runtime_options: dict[str, int | float | str | bool] = Field(
            {}, description="options its session needs from the step that made the model (an engine's "
                            "accelerator core), resolved by the plan")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        return (scope.recipe.benchmark.model_dump(include=set(cls.Params.model_fields))
                | {"runtime": runtime_for(scope)})

    @classmethod
    def own_outputs(cls, params: dict, inputs: dict[str, str]) -> dict[str, str]:
        """A LoadGen scenario's logs, in a folder beside the artifact (`<artifact stem>_loadgen/`)."""
        if params["scenario"] == "quick":
            return {}
        return {"loadgen": str(PurePosixPath(inputs["model"]).with_suffix("")) + "_loadgen"}

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.stage import timing
        from builder.stage.runtimes import Timing, runtime_class

        runtime = runtime_class(params.runtime)
        if (estimate := runtime.estimate(_files(ctx))) is not None:  # an accelerator that is not here
            if params.scenario != "quick":
                _loadgen_note(ctx, "an estimate for hardware that is not here: nothing ran for LoadGen to time")
            return {"benchmark": estimate}
        model = ctx.input("model")
        runs = params.emulated_runs if ctx.emulated else params.runs
        thermal_before = device_facts.thermal_state()
        session, init_ms = timing.measure_load(model, threads=params.threads, runtime=params.runtime,
                                                  **params.runtime_options)
        ctx.log.info("%s loaded in %.1f ms; timing %d runs", model.name, init_ms, runs)
        result = timing.measure(session, warmup=min(params.warmup, 1) if ctx.emulated else params.warmup, runs=runs,
                                   min_seconds=0.0 if ctx.emulated else params.min_seconds)
        if params.scenario != "quick":
            result["loadgen"] = _loadgen(ctx, params, session, expected_ms=result["min_ms"])
        thermal_after = device_facts.thermal_state()
        result |= {"init_ms": init_ms, "emulated": ctx.emulated, "on_target": ctx.placement.on_target,
                   "size_bytes": model_size(model),
                   "device": {**ctx.placement.model_dump(), **device_facts.recorded_facts(),
                              "thermal_before": thermal_before, "thermal_after": thermal_after}}
        if throttled := device_facts.throttled_during(thermal_before, thermal_after):
            result["throttled"] = throttled
            ctx.log.warning("the device reported %s around the timed runs: not its best figures", ", ".join(throttled))
        spec = Timing(threads=params.threads, runs=runs, warmup=params.warmup, throughput=params.throughput,
                        emulated=ctx.emulated)
        result |= runtime.extra_figures(model, session, spec)
        if tools := runtime.second_opinions(model, session, spec):
            result["tools"] = {name: _second_opinion(ctx, name, run) for name, run in tools.items()}
            result["vs_tools"] = {name: vs_tool(result, figures) for name, figures in result["tools"].items()
                                  if figures.get(figures.get("compared_field", "p50_ms"))}
        ctx.log.info("p50 %.3f ms, %.1f fps%s", result["p50_ms"], result["throughput_fps"],
                     " (EMULATED: not device timings)" if ctx.emulated else "")
        return {"benchmark": result}


def _loadgen(ctx: StepContext, params: Benchmark.Params, session, *, expected_ms: float) -> dict:
    """LoadGen's scenario on the session the quick harness timed, its logs kept in the step's `loadgen` folder;
    where LoadGen is not installed, a note there and in the record, and no figure."""
    from builder.stage import loadgen

    settings = loadgen.Settings(params.scenario, params.min_query_count, params.min_duration_ms,
                                params.target_latency_percentile)
    if not loadgen.available():
        ctx.log.warning("benchmark.scenario %s: %s", params.scenario, loadgen.UNAVAILABLE)
        _loadgen_note(ctx, loadgen.UNAVAILABLE)
        return loadgen.unavailable(settings)
    folder = ctx.output("loadgen")
    folder.mkdir(exist_ok=True)
    ctx.log.info("LoadGen %s: at least %d queries and %d ms", params.scenario, params.min_query_count,
                 params.min_duration_ms)
    figures = loadgen.run(session, settings, expected_ms=expected_ms, summary=folder / loadgen.SUMMARY,
                          detail=folder / loadgen.DETAIL)
    ctx.log.info("LoadGen %s: %s, %s queries", params.scenario, figures["validity"], figures["query_count"])
    rel = ctx.call.outputs["loadgen"]
    return figures | {"logs": [f"{rel}/{loadgen.SUMMARY}", f"{rel}/{loadgen.DETAIL}"]}


def _loadgen_note(ctx: StepContext, why: str) -> None:
    """Why the step's LoadGen folder holds no LoadGen log."""
    folder = ctx.output("loadgen")
    folder.mkdir(exist_ok=True)
    (folder / "loadgen-not-run.txt").write_text(f"{why}\n")


TOOL_TOLERANCE = 0.05  # our p50 within 5% of the vendor tool's


def vs_tool(ours: dict, theirs: dict) -> dict:
    """Our p50 over the tool's on the same artifact (its `compared_field` when its p50 times something else);
    when they differ by more than 5%, why, as far as we can tell."""
    key = theirs.get("compared_field", "p50_ms")
    ratio = ours["p50_ms"] / theirs[key]
    why = None
    if abs(ratio - 1) > TOOL_TOLERANCE:
        if ours.get("emulated"):
            why = "emulated: both timings are QEMU's, not the device's"
        elif ours.get("other_cpu_load", 0) >= TOOL_TOLERANCE:
            why = f"other processes used {ours['other_cpu_load']:.0%} of the CPUs while ours ran"
        elif ratio > 1 and theirs.get("timer"):  # the tool leaves out part of what ours times
            why = f"the tool times {theirs['timer']}; ours times the whole call"
        else:
            why = f"unexplained: other processes used only {ours.get('other_cpu_load', 0):.0%} of the CPUs"
    return {"p50_ratio": round(ratio, 3), "tool_field": key, "within_5pct": abs(ratio - 1) <= TOOL_TOLERANCE, "why": why}


def _second_opinion(ctx: StepContext, name: str, run: Callable[[], dict]) -> dict:
    """An external tool's figures; its failure is recorded beside ours, not a failed benchmark."""
    try:
        return run()
    except StepError as exc:
        ctx.log.warning("%s failed: %s", name, exc.message)
        return {"error": exc.message}


def _top1_hits(logits: np.ndarray, labels: list) -> np.ndarray:
    """Per labeled sample, whether its top-1 class is right; a label may list several right classes."""
    predicted = logits.argmax(axis=1)
    return np.array([p in (label if isinstance(label, list) else [label])
                     for p, label in zip(predicted, labels) if label is not None], dtype=bool)


def labeled_accuracy(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], labels: list,
                     photos: np.ndarray) -> dict:
    """Top-1 accuracy against the labels, and the share of the reference's accuracy kept (MLPerf's relative
    gate), over the labeled samples, counted by photo. The reference itself keeps all of it, exactly."""
    from builder.stage.metrics import KeptAccuracy, per_photo

    labeled = np.array([label is not None for label in labels])
    if not labeled.any():
        return {}
    first = lambda outputs: np.stack([o[0].reshape(-1) for o in outputs])  # noqa: E731
    ref_hits, cand_hits = _top1_hits(first(reference), labels), _top1_hits(first(candidate), labels)
    figures = {"top1_accuracy": float(per_photo(cand_hits, photos[labeled]).mean()),
               "labeled_photos": len(set(photos[labeled].tolist()))}
    if candidate is reference:
        return figures | {"reference_accuracy": figures["top1_accuracy"], "accuracy_ratio": 1.0}
    kept = KeptAccuracy.of(ref_hits, cand_hits, photos[labeled])
    return figures | {"reference_accuracy": kept.reference, "accuracy_lost": kept.lost, "accuracy_gained": kept.gained,
                      "accuracy_ratio": kept.ratio}


def _map_figures(boxes_file: Path, chosen: tuple[int, ...], outputs: list[list[np.ndarray]],
                 decoding: Detection | None) -> dict:
    """mAP of the outputs against the validation set's boxes, if it has a boxes file."""
    from builder.config.boxes import Box
    from builder.stage.detection_map import mean_average_precision
    from builder.stage.detections import detections

    truth = json.loads(boxes_file.read_text())
    if truth is None:
        return {}
    return mean_average_precision(detections(outputs, decoding), [[Box(*b) for b in truth[i]] for i in chosen])


class Validate(Step):
    kind = "validate"
    measures = True
    stage = "device"
    summary = "outputs vs the fp32 artifact and vs the source model: top-1/top-5 agreement, accuracy, cosine, SNR; gates"

    class Params(StepParams):
        gates: dict[GateName, float] = Field({}, description="gate -> threshold, resolved by the plan from the recipe")
        task: Task = Field("generic", description="the recipe's task: its own figures beside cosine and SNR "
                                                  "(top-k agreement and accuracy, mIoU, PSNR, CER)")
        emulated_samples: int = Field(_DEFAULTS.emulated_validation_samples,
                                      description="samples validated under emulation (benchmark.emulated_validation_samples)")
        runtime: str = Field(description="the runtime that loads the model")
        runtime_options: dict[str, int | float | str | bool] = Field(
            {}, description="options its session needs from the step that made the model (an engine's "
                            "accelerator core), resolved by the plan")
        reference_runtime: str = Field(description="the runtime that loads the reference (the fp32 artifact), "
                                                   "resolved by the plan from the reference's format")
        detection: Detection | None = Field(None, description="the recipe's decoding of raw per-anchor detections")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        detection = scope.recipe.detection
        return {"task": scope.recipe.task, "emulated_samples": scope.recipe.benchmark.emulated_validation_samples,
                "runtime": runtime_for(scope), "detection": detection.model_dump() if detection else None}

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        truth = {"classification": ("labels",), "detection": ("boxes",)}.get(params.get("task"), ())
        return ("validation", "photos", *truth)

    def run(self, ctx: StepContext, params: Params) -> dict:
        from builder.stage import metrics
        from builder.stage.runtimes import load, runtime_class

        if "validation" not in ctx.call.inputs:
            ctx.log.warning("no validation data in the recipe: nothing to validate")
            return {"validation": None}
        samples_path = ctx.input("validation")
        everything = np.load(samples_path)
        chosen = tuple(range(len(everything)))
        if ctx.emulated:  # about a second per inference under QEMU: validate on a subset spread over every image
            chosen = spread(len(everything), params.emulated_samples)
        samples = everything[list(chosen)]
        model, runtime = ctx.input("model"), params.runtime
        if stand_in := runtime_class(runtime).stand_in(_files(ctx)):  # a model only an accelerator runs
            model, runtime = stand_in, None
            ctx.log.info("validating %s in its place (%s runs only on its accelerator)",
                         model.name, ctx.input("model").name)
        ref_out = _reference_outputs(str(ctx.input("reference")), params.reference_runtime, str(samples_path), chosen)
        if model == ctx.input("reference"):  # fp32 is its own reference: its real figure is against the source
            cand_out = ref_out
        else:
            candidate = load(model, runtime=runtime, **(params.runtime_options if runtime else {}))
            cand_out = [candidate.run([s]) for s in samples]
        photos = np.array(json.loads(ctx.input("photos").read_text()))[list(chosen)]
        result = {"reference": ctx.input("reference").name, "samples": int(len(samples)),
                  "photos": len(set(photos.tolist())), "emulated": ctx.emulated}
        if model != ctx.input("model"):
            result["validated"] = model.name
        result |= agreement(params.task, ref_out, cand_out)
        if "source_outputs" in ctx.call.inputs:  # the source's own outputs: a wrong conversion shows here
            from builder.stage.steps.reference import load_source_outputs

            source_out = load_source_outputs(ctx.input("source_outputs"), chosen)
            pairs = metrics.align_outputs(source_out[0], cand_out[0])
            result["source"] = agreement(params.task, source_out, [metrics.aligned(c, pairs) for c in cand_out])
        if params.task == "classification":
            labels = json.loads(ctx.input("labels").read_text())
            if labels:
                result |= labeled_accuracy(ref_out, cand_out, [labels[i] for i in chosen], photos)
        if params.task == "detection" and "boxes" in ctx.call.inputs:
            result |= _map_figures(ctx.input("boxes"), chosen, cand_out, params.detection)
        check_finite(result)
        add_intervals(result)
        result["gates"] = check_gates(params.gates, result)
        for gate in result["gates"]:
            log = {"pass": ctx.log.info, "undecided": ctx.log.warning, "fail": ctx.log.error}[gate["outcome"]]
            log("gate %s %s: %s (threshold %s)", gate["gate"], gate["outcome"].upper(), gate["value"], gate["threshold"])
        return {"validation": result}


def agreement(task: str, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict:
    """Output agreement over every sample; top-1/top-5 of the first output for a classifier, the task's own
    figure of it for other tasks (task_metrics)."""
    from builder.stage import metrics
    from builder.stage.task_metrics import task_figures

    result = metrics.compare([o for outs in reference for o in outs], [o for outs in candidate for o in outs])
    result |= task_figures(task, reference, candidate)
    if task == "classification":
        ref_logits = np.stack([o[0].reshape(-1) for o in reference])
        cand_logits = np.stack([o[0].reshape(-1) for o in candidate])
        result["top1_agreement"] = metrics.topk_agreement(ref_logits, cand_logits, k=1)
        if ref_logits.shape[1] >= 5:  # a 2-class model has no top-5
            result["top5_agreement"] = metrics.topk_agreement(ref_logits, cand_logits, k=5)
    return result


@functools.lru_cache(maxsize=1)
def _reference_outputs(reference: str, runtime: str, samples: str, chosen: tuple[int, ...]) -> list[list[np.ndarray]]:
    """The fp32 reference's outputs, computed once per stage for all the variants validated against it."""
    from builder.stage.runtimes import load

    session = load(Path(reference), runtime=runtime)
    return [session.run([s]) for s in np.load(samples)[list(chosen)]]


def spread(total: int, count: int) -> tuple[int, ...]:
    """`count` sample indices evenly over all `total` (samples come image by image, crops of one image together)."""
    if count >= total:
        return tuple(range(total))
    return tuple(int(i) for i in np.unique(np.linspace(0, total - 1, count).round()))


RATES = ("top1_agreement", "top5_agreement")  # proportions of samples against another model: they carry an interval
LABELED_FIGURES = ("top1_accuracy", "accuracy_ratio")  # against labels: their interval counts the labeled photos


def _figure(result: dict, field: str):
    value = result
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _bounds_at(result: dict, field: str) -> Callable[[int], tuple[float, float]] | None:
    """The 95% interval of a figure as a function of the number of distinct photos, or None (no interval)."""
    from builder.stage.metrics import KeptAccuracy, rate_interval

    figures, _, name = field.rpartition(".")
    value, owner = _figure(result, field), _figure(result, figures) if figures else result
    if value is None:
        return None
    if name in (*RATES, "top1_accuracy"):
        return lambda photos: rate_interval(value, photos)
    if name == "accuracy_ratio" and "accuracy_lost" in owner:  # the reference's own is exact
        return KeptAccuracy(owner["reference_accuracy"], owner["accuracy_lost"], owner["accuracy_gained"]).interval
    return None


def _photos_of(result: dict, field: str) -> int:
    """The distinct photos a figure was measured on."""
    return result["labeled_photos"] if field in LABELED_FIGURES else result["photos"]


def add_intervals(result: dict) -> None:
    """A 95% interval beside every rate and kept accuracy (also the source's), from the number of distinct photos
    it was measured on."""
    for prefix, figures in (("", result), ("source.", result.get("source") or {})):
        for name in (*RATES, *LABELED_FIGURES):
            if (bounds := _bounds_at(result, prefix + name)) is not None:
                figures[f"{name}_interval"] = list(bounds(_photos_of(result, name)))


def check_finite(result: dict) -> None:
    """A NaN or inf figure means nothing (e.g. outputs that overflow): it fails the variant."""
    bad = [f"{prefix}{k}={v}" for prefix, figures in (("", result), ("source.", result.get("source") or {}))
           for k, v in figures.items() if isinstance(v, float) and not np.isfinite(v)]
    if bad:
        raise StepError(f"validation figures are not numbers: {', '.join(bad)}",
                        hint="the model's outputs hold NaN or inf on the validation samples; check the input "
                             "normalisation (mean/std) and the conversion")


def check_gates(gates: dict, result: dict) -> list[dict]:
    """Each gate's outcome: pass, fail, or undecided when the figure's interval straddles the threshold
    (with about how many distinct photos would decide it)."""
    from builder.stage.metrics import photos_to_decide

    out = []
    for gate, threshold in gates.items():
        field, passes = GATE_METRICS[gate]
        value = _figure(result, field)
        interval = _figure(result, f"{field}_interval")
        entry = {"gate": gate, "metric": field, "threshold": threshold, "value": value}
        if value is None:
            entry["outcome"] = "fail"
        elif interval is not None and passes(interval[0], threshold) != passes(interval[1], threshold):
            entry |= {"outcome": "undecided", "interval": interval, "photos_needed": photos_to_decide(
                _bounds_at(result, field), threshold, _photos_of(result, field.rpartition(".")[2]))}
        else:
            entry["outcome"] = "pass" if passes(value, threshold) else "fail"
        out.append(entry | {"passed": entry["outcome"] == "pass"})
    return out
