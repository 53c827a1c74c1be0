"""Accuracy-aware variants (precision: auto): the step that searches a format's candidates with quant_search.

Each backend's search subclasses `SearchStep` and proposes its format's candidates (builder/backends/*/search.py);
this module holds what they share: the params, the probe of a layer's effect in float, the ladder of layers
kept in float.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from pydantic import Field

from builder import formats
from builder.config.common import Task
from builder.config.recipe import Benchmark, Search
from builder.errors import BuilderError, StepError
from builder.stage.quant_search import Budget, Candidate, Judge, Ladder, place, search
from builder.stage.steps.base import PlanScope, Step, StepContext
from builder.stage.steps.layout import LayoutParams, layout_params, samples_for
from builder.stage.steps.measure import LABEL_GATES, GateName, runtime_for

_BOUND = Search()
_BENCHMARK = Benchmark()


class SearchParams(LayoutParams):
    """Resolved by the plan from the variant (gates, search bound), the recipe and the target."""

    gates: dict[GateName, float] = Field({}, description="the variant's gates against fp32 (not those against the source "
                                                         "or labels): what a candidate must meet")
    task: Task = "generic"
    max_candidates: int = _BOUND.max_candidates
    max_minutes: float = _BOUND.max_minutes
    max_float_layers: int = _BOUND.max_float_layers
    runtime: str | None = Field(None, description="the runtime that measures the candidates (the target's)")
    threads: int = Field(_BENCHMARK.threads, description="the recipe's benchmark threads")


class SearchStep(Step):
    """One format's accuracy-aware search; subclasses propose the candidates."""

    Params = SearchParams

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        recipe, variant = scope.recipe, scope.variant_spec
        gates = recipe.gates_of(scope.variant).model_dump(exclude_none=True) if variant else {}
        # candidates are judged against fp32; the chosen artifact's own validation checks labels and the source
        return layout_params(scope) | {
            "gates": {g: t for g, t in gates.items() if g not in LABEL_GATES and not g.startswith("min_source_")},
            "task": recipe.task, "threads": recipe.benchmark.threads,
            "runtime": runtime_for(dataclasses.replace(scope, format=cls.produces)),
            **(variant.search.model_dump() if variant else {})}

    @classmethod
    def data_inputs(cls, params: dict) -> tuple[str, ...]:
        return "calibration", "validation", "photos"

    def candidates(self, ctx: StepContext, params: SearchParams, folder: Path,
                   found: dict, probe: Probe) -> tuple[Path, Ladder, list[Candidate]]:
        """The fp32 model to compare with, the int8 ladder (fastest expected first) and the fallbacks; what
        the search finds on the way (per-layer errors) goes into `found`, which joins the step's result;
        `probe` measures a model's effect on the output, to rank layers by."""
        raise NotImplementedError

    def run(self, ctx: StepContext, params: SearchParams) -> dict:
        from builder.stage.runtimes import load

        out = ctx.output("model")
        samples = samples_for(ctx.input("validation"), params)
        suffix = formats.suffix_of(self.produces)
        with tempfile.TemporaryDirectory(prefix=".search-", dir=out.parent) as tmp:
            found: dict = {}
            every = slice(None, None, max(1, len(samples) // PROBE_SAMPLES))
            probe = Probe(samples[every][:PROBE_SAMPLES], params.runtime, params.threads)
            fp32, ladder, fallbacks = self.candidates(ctx, params, Path(tmp), found, probe)
            reference = load(fp32, runtime=params.runtime, threads=params.threads)
            expected = [reference.run([s]) for s in samples]
            probe.reference = expected[every][:PROBE_SAMPLES]  # the ladder probes only once it runs, after this
            photos = len(set(json.loads(ctx.input("photos").read_text())))
            judge = Judge(samples, expected, params.gates, params.task, params.runtime, params.threads, photos)
            result, chosen = search(ladder, fallbacks, judge, Path(tmp), suffix,
                                    Budget(params.max_candidates, params.max_minutes), ctx.log)
            if chosen is None:
                raise StepError("no candidate of the search could be built: "
                                + "; ".join(f"{c.name}: {c.error}" for c in result.candidates),
                                hint="see the step log; the variant's int8, int16x8 and fp16 steps may say more")
            place(chosen, out)
        return {"search": result.model_dump(mode="json"), "io_dtype": "float32", **found}


LAYER_SAMPLES = 8  # calibration samples the per-layer error is measured on
PROBES = 6  # the noisiest layers whose effect on the output is measured one at a time
PROBE_SAMPLES = 32  # validation samples each probe is measured on


@dataclasses.dataclass
class Probe:
    """A model's effect on the output: SNR of its outputs against fp32's on a few validation samples."""

    samples: np.ndarray
    runtime: str | None
    threads: int
    reference: list[list[np.ndarray]] = dataclasses.field(default_factory=list)

    def snr_db(self, path: Path) -> float:
        from builder.stage.metrics import compare
        from builder.stage.runtimes import load

        session = load(path, runtime=self.runtime, threads=self.threads)
        outputs = [session.run([s]) for s in self.samples]
        return compare([o for outs in self.reference for o in outs], [o for outs in outputs for o in outs])["snr_db"]

    def by_effect(self, worst: list[str], outputs: list[str], build: Callable[[list[str]], Callable[[Path], dict]],
                  path: Path, found: dict, log) -> list[str]:
        """The noisiest layers re-ranked by what keeping each one alone in float (with the output layers) does to
        the output, as accuracy-control quantizers rank the layers they revert: local noise alone misjudges layers
        whose error the next layers absorb. The rest keep their order."""
        probed = [name for name in worst if name not in outputs][:PROBES]
        effects = {}
        for name in probed:
            try:
                build([*outputs, name])(path)
                effects[name] = self.snr_db(path)
            except BuilderError as exc:
                log.warning("probe %s in float: %s", name, exc.message)
        ranked = sorted(effects, key=lambda name: -effects[name])
        log.info("layers by their effect in float (output SNR dB): %s",
                 ", ".join(f"{name} {effects[name]:.1f}" for name in ranked))
        found["effect_in_float"] = {"metric": "output SNR dB with the layer in float",
                                    "layers": [{"name": n, "value": round(effects[n], 2)} for n in ranked]}
        return ranked + [name for name in worst if name not in ranked]


def ranked_layers(errors: list[tuple[str, float]], metric: str, found: dict) -> list[str]:
    """Layer names, worst first; the errors go into the step's result as its `layer_errors`."""
    ranked = sorted(errors, key=lambda e: -e[1])
    found["layer_errors"] = {"metric": metric, "layers": [{"name": n, "value": round(v, 4)} for n, v in ranked]}
    return [name for name, _ in ranked]


def float_ladder(outputs: list[str], rank: Callable[[], list[str]], max_float: int,
                  build: Callable[[list[str]], Callable[[Path], dict]], how: str = "") -> Iterator[Candidate]:
    """int8 with the output layers in float (their rounding flips near-tied classes: EfficientNet-Lite0's
    int8 top-1 agreement 0.88 -> 0.94), then also the worst other layers by `rank` (asked only once the
    output layers were not enough), 1, 2, 4, ... of them."""
    if len(outputs) > max_float:
        return
    yield Candidate(f"int8-float{len(outputs)}", f"int8 with the output layer in float{how}", build(outputs),
                    kept_float=outputs)
    worst = [name for name in rank() if name not in outputs]
    count = 1
    while count <= len(worst) and len(outputs) + count <= max_float:
        names = [*outputs, *worst[:count]]
        yield Candidate(f"int8-float{len(names)}", f"int8 with the output layer and the {count} worst in float{how}",
                        build(names), kept_float=names)
        count *= 2
