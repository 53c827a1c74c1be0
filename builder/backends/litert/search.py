"""search.tflite (precision: auto): int8, then int8 with the quantization debugger's worst layers in float
(1, 2, 4, ... of them), then int16x8 and fp16."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from builder.backends.litert import tflite, tflite_selective
from builder.errors import BuilderError
from builder.stage.quant_search import Candidate, Ladder
from builder.stage.steps.base import StepContext
from builder.stage.steps.layout import samples_for
from builder.stage.steps.search import LAYER_SAMPLES, Probe, SearchParams, SearchStep, float_ladder, ranked_layers


class SearchTflite(SearchStep):
    kind = "search.tflite"
    consumes = ("saved_model",)
    produces = "tflite"
    summary = ("the fastest TFLite artifact within the gates: int8, then int8 with the quantization debugger's "
               "worst layers in float, then int16x8 and fp16")

    def candidates(self, ctx: StepContext, params: SearchParams, folder: Path,
                   found: dict, probe: Probe) -> tuple[Path, Ladder, list[Candidate]]:
        saved = ctx.input("model")
        representative = tflite.representative_from_array(samples_for(ctx.input("calibration"), params))
        fp32 = folder / "fp32.tflite"
        tflite.to_tflite(saved, fp32, source_format="saved_model")

        def convert(precision: str):
            return lambda path: tflite.to_tflite(saved, path, source_format="saved_model", precision=precision,
                                                 representative=representative, require_full_int8=False)

        fallbacks = [Candidate("int16x8", "int16 activations, int8 weights", convert("int16x8"), fallback=True),
                     Candidate("fp16", "fp16 weights, float compute", convert("fp16"), fallback=True)]
        return fp32, lambda tried: self._ladder(ctx, saved, representative, convert, found, probe,
                                                params.max_float_layers, folder), fallbacks

    @staticmethod
    def _ladder(ctx: StepContext, saved: Path, representative, convert, found: dict, probe: Probe,
                max_float: int, folder: Path) -> Iterator[Candidate]:
        """Full int8; then the output layer in float (its rounding flips near-tied classes: EfficientNet-Lite0's
        top-1 agreement 0.88 -> 0.94), then also the layers that help the output most in float, 1, 2, 4, ..."""
        yield Candidate("int8", "full int8, float32 inputs and outputs", convert("int8"))
        try:
            debugger = tflite_selective.Debugger(saved, representative, LAYER_SAMPLES)
            errors = debugger.layer_errors()
        except BuilderError as exc:
            ctx.log.warning("no per-layer errors, so no selective int8: %s", exc.message)
            return
        outputs = [errors[-1][0]]

        def build(names: list[str]) -> Callable[[Path], dict]:
            return lambda path: debugger.selective_int8(path, names)

        yield from float_ladder(outputs, lambda: probe.by_effect(
            ranked_layers(errors, tflite_selective.METRIC, found), outputs, build, folder / "probe.tflite", found, ctx.log),
            max_float, build)
