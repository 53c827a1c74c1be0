"""search.ort (precision: auto) for ONNX Runtime QDQ models: int8 with each calibration method, then the closest
of them with its output layer and noisiest nodes in float, then int16x8 and fp16; judged by the target's runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from builder.backends.onnxruntime import quantize, selective
from builder.backends.onnxruntime.steps import OrtStaticOptions
from builder.errors import BuilderError
from builder.records import SearchCandidate
from builder.stage.quant_search import Candidate, Ladder, built_at, closeness
from builder.stage.steps.base import PlanScope, StepContext
from builder.stage.steps.layout import samples_for
from builder.stage.steps.search import LAYER_SAMPLES, Probe, SearchParams, SearchStep, float_ladder, ranked_layers


class SearchOrt(SearchStep):
    kind = "search.ort"
    consumes = ("onnx",)
    produces = "onnx"
    summary = ("the fastest ONNX Runtime QDQ model within the gates: int8 with minmax, entropy and percentile "
               "calibration, then the output layer and the noisiest nodes in float, then int16x8 and fp16")

    class Params(OrtStaticOptions, SearchParams):
        fallbacks: list[Literal["int16x8", "fp16"]] = Field(
            ["int16x8", "fp16"], description="tried when no int8 candidate meets the gates (those the target runs)")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        return super().resolve_params(scope, params) | OrtStaticOptions.resolve(scope)

    def candidates(self, ctx: StepContext, params: Params, folder: Path,
                   found: dict, probe: Probe) -> tuple[Path, Ladder, list[Candidate]]:
        fp32 = ctx.input("model")
        calibration = samples_for(ctx.input("calibration"), params)

        def quantized(method: str, kept_float: Sequence[str] = (), activations: str | None = None) -> Callable[[Path], dict]:
            options = params.static() | {"method": method} | ({"activation_type": activations} if activations else {})
            return lambda path: quantize.ort_quantize_static(fp32, path, calibration, nodes_to_exclude=list(kept_float),
                                                               **options)

        fallbacks = {"int16x8": Candidate("int16x8", "int16 activations, int8 weights",
                                          quantized(params.calibration_method, activations="int16"), fallback=True),
                     "fp16": Candidate("fp16", "fp16 weights and compute, float32 inputs and outputs",
                                       lambda path: selective.to_fp16(fp32, path), fallback=True)}

        def ladder(tried: Sequence[SearchCandidate]) -> Iterator[Candidate]:
            methods = dict.fromkeys([params.calibration_method, "minmax", "entropy", "percentile"])
            names = {m: "int8" if m == params.calibration_method else f"int8-{m}" for m in methods}
            for method, name in names.items():
                yield Candidate(name, f"int8, {method} calibration", quantized(method))
            closest = max((c for c in tried if c.status == "ok" and c.name in names.values()), key=closeness, default=None)
            if closest is None:
                return
            method = next(m for m, n in names.items() if n == closest.name)
            try:
                errors = selective.layer_errors(built_at(folder, closest.name, ".onnx"), calibration[:LAYER_SAMPLES])
            except BuilderError as exc:
                ctx.log.warning("no per-node errors, so no selective int8: %s", exc.message)
                return
            outputs = selective.output_nodes(fp32)
            yield from float_ladder(outputs, lambda: probe.by_effect(
                ranked_layers(errors, selective.METRIC, found), outputs, lambda kept: quantized(method, kept),
                folder / "probe.onnx", found, ctx.log), params.max_float_layers, lambda kept: quantized(method, kept),
                f", {method} calibration")

        return fp32, ladder, [fallbacks[name] for name in params.fallbacks]
