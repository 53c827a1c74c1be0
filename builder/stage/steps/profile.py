"""The `profile` step: where an artifact's inference time goes, layer by layer, taken by its runtime's profiler
after the timed benchmark and apart from it (a profiler slows what it watches). `builder run --profile` or the
recipe's `benchmark: {profile: true}` adds it to the plan."""

from __future__ import annotations

from pydantic import Field

from builder.config.recipe import Benchmark as Settings
from builder.stage import model_explorer, profiling
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.stage.steps.measure import runtime_for
from builder.util import atomic_write_bytes

_DEFAULTS = Settings()
PROFILE_RUNS = 30  # inferences a layer's time is the median or mean of
TABLE = "profile_{variant}.csv"
NODE_DATA = "{stem}.time.node_data.json"


class Profile(Step):
    kind = "profile"
    measures = True
    stage = "device"
    summary = "per-layer times by the runtime's own profiler (op type, share, precision, unit), apart from the timed runs"

    class Params(StepParams):
        threads: int = _DEFAULTS.threads
        runs: int = Field(PROFILE_RUNS, description="profiled inferences")
        warmup: int = _DEFAULTS.warmup
        emulated_runs: int = _DEFAULTS.emulated_runs
        runtime: str = Field(description="the runtime that loads the model, as the benchmark's")
        runtime_options: dict[str, int | float | str | bool] = Field(
            {}, description="options its session needs from the step that made the model, as the benchmark's")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        bench = scope.recipe.benchmark
        return {"threads": bench.threads, "warmup": bench.warmup, "emulated_runs": bench.emulated_runs,
                "runtime": runtime_for(scope)}

    @staticmethod
    def outputs_for(variant: str, artifact: str) -> dict[str, str]:
        """Where the profile of `variant` lands: its table and its Model Explorer node data, beside the artifact."""
        return model_explorer.outputs_beside(artifact, variant, TABLE, NODE_DATA)

    def run(self, ctx: StepContext, params: Params) -> dict:
        model = ctx.input("model")
        spec = profiling.ProfileSpec(threads=params.threads, runs=params.emulated_runs if ctx.emulated else params.runs,
                                     warmup=min(params.warmup, 1) if ctx.emulated else params.warmup,
                                     runtime_options=params.runtime_options)
        files = {name: ctx.input(name) for name in ctx.call.inputs}
        measured = profiling.profiler_of(params.runtime)(model, files, spec, ctx.log)
        profile = profiling.record(measured)
        for warning in measured.warnings:
            ctx.log.warning("%s", warning)
        atomic_write_bytes(ctx.output("table"), profiling.table_csv(profile))
        node_data = model_explorer.write(ctx.output("node_data"), model_explorer.NodeValues(
            name="time ms", graph=measured.graph, values={x["node_id"]: x["ms"] for x in profile["layers"]}))
        profile["node_data"] = node_data.name
        if measured.shown_on is not None:
            profile["node_data_for"] = str(measured.shown_on.relative_to(ctx.workdir))
        top = profile["layers"][:3]
        ctx.log.info("%d layers, %.3f ms in all; slowest: %s", len(profile["layers"]), profile["total_ms"],
                     ", ".join(f"{x['op_type']} {x['ms']:.3f} ms" for x in top))
        return {"profile": profile}
