"""search.nncf (precision: auto) for OpenVINO: NNCF int8, then with full bias correction, then NNCF's
accuracy-control mode (it reverts the most harmful layers itself, ranked by their effect), then fp16 weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from builder.backends.openvino import convert
from builder.backends.openvino.options import Nncf
from builder.backends.openvino.steps import cosine_metric, top1_agreement_metric
from builder.stage.quant_search import Candidate, Ladder, built_at
from builder.stage.steps.base import PlanScope, StepContext
from builder.stage.steps.layout import samples_for
from builder.stage.steps.search import Probe, SearchParams, SearchStep


class SearchNncf(SearchStep):
    kind = "search.nncf"
    consumes = ("openvino",)
    produces = "openvino"
    summary = ("the fastest OpenVINO IR within the gates: NNCF int8, then with full bias correction, then NNCF "
               "accuracy control, then fp16 weights")

    class Params(SearchParams):
        nncf: Nncf = Field(Nncf(), description="the variant's nncf options")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        variant = scope.variant_spec
        nncf = {"nncf": variant.section("nncf").model_dump(mode="json")} if variant else {}
        return super().resolve_params(scope, params) | nncf

    def candidates(self, ctx: StepContext, params: Params, folder: Path,
                   found: dict, probe: Probe) -> tuple[Path, Ladder, list[Candidate]]:
        """NNCF's accuracy control ranks the layers to revert by their effect itself: `probe` is not needed."""
        xml = ctx.input("model")
        fp16 = Candidate("fp16", "fp16 weights, float compute", lambda path: convert.compress_fp16(xml, path),
                         fallback=True)
        return xml, lambda tried: self._ladder(ctx, params, folder), [fp16]

    @staticmethod
    def _ladder(ctx: StepContext, params: Params, folder: Path) -> Iterator[Candidate]:
        xml = ctx.input("model")
        calibration = samples_for(ctx.input("calibration"), params)
        options = params.nncf.ptq_options()
        full = built_at(folder, "int8", ".xml")
        yield Candidate("int8", "NNCF int8", lambda path: convert.nncf_quantize(xml, path, calibration, **options))
        stronger = options | {"fast_bias_correction": False, "preset": "mixed"}
        if stronger != options:  # PTQ's own remedies before any layer goes back to float
            yield Candidate("int8-bias-corrected", "NNCF int8 with full bias correction and asymmetric activations",
                            lambda path: convert.nncf_quantize(xml, path, calibration, **stronger))
        controlled = _controlled_metric(params.gates, params.task)
        if controlled:
            name, threshold, metric = controlled
            validation = samples_for(ctx.input("validation"), params)

            def build(path: Path) -> dict:
                report = convert.nncf_quantize_with_accuracy_control(
                    xml, path, calibration, validation, metric(validation, xml), max_drop=1 - threshold,
                    max_reverted=params.max_float_layers, **options)
                if full.exists():  # the layers NNCF reverted to float
                    report["kept_float"] = sorted(convert.quantized_ops(full) - convert.quantized_ops(path))
                return report

            yield Candidate("int8-accuracy-control", f"NNCF accuracy control on {name} (max drop {1 - threshold:g}, "
                            f"at most {params.max_float_layers} layers in float)", build)


def _controlled_metric(gates: dict[str, float], task: str):
    """(figure, threshold, metric factory) for NNCF's accuracy control: top-1 agreement for a classifier,
    else mean cosine; None when no gate bounds either."""
    if task == "classification" and "min_top1_agreement" in gates:
        return "top-1 agreement", gates["min_top1_agreement"], top1_agreement_metric
    if "min_cosine" in gates:
        return "cosine", gates["min_cosine"], cosine_metric
    return None

