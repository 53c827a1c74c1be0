"""Recipe x target -> an ordered list of step calls, without running anything.

Conversion paths are found in the graph that the registered steps declare
(`consumes` -> `produces`), so adding a converter adds its edges everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from builder import code_trust, formats
from builder.config.recipe import Recipe, Source
from builder.config.target import ChainStep, Target
from builder.errors import ConfigError
from builder.host import locks
from builder.plan import Plan, StepCall
from builder.stage import layer_diff, loadgen, profiling
from builder.stage.convert import source_run
from builder.stage.source_precision import SourcePrecision
from builder.stage.steps import registry
from builder.stage.steps.base import PlanScope
from builder.stage.steps.layer_diff import LayerDiff as LayerDiffStep
from builder.stage.steps.measure import runtime_for
from builder.stage.steps.profile import Profile as ProfileStep
from builder.workdir import BOXES, CALIBRATION, LABELS, PHOTOS, SOURCE_DIR, SOURCE_OUTPUTS, VALIDATION

DATA_FILES = {"calibration": CALIBRATION, "validation": VALIDATION, "labels": LABELS, "boxes": BOXES,
              "photos": PHOTOS}


@dataclass(frozen=True)
class ExtraMeasures:
    """What a run measures beyond its benchmarks and validations, asked for on the command line (`--profile`,
    `--layer-diff`); the recipe's `benchmark` section may ask for each too."""

    profile: bool = False  # each variant layer by layer, after every timed run
    layer_diff: bool = False  # each other variant's intermediate tensors against fp32's

    def asked_by(self, recipe: Recipe) -> ExtraMeasures:
        """These, and what the recipe asks for."""
        return ExtraMeasures(profile=self.profile or recipe.benchmark.profile,
                             layer_diff=self.layer_diff or recipe.benchmark.layer_diff)


def companions(name: str, path: str) -> dict[str, str]:
    """Files that are part of the model at `path`, declared beside it (an IR's weights file)."""
    fmt = formats.of_file(path)
    return fmt.companion_paths(name, path) if fmt else {}


def source_path(source: Source) -> str:
    return f"{SOURCE_DIR}/{source.name.replace(':', '_')}"


def recipe_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Builder:
    """Accumulates step calls with fully resolved params, sharing identical model-to-model steps."""

    def __init__(self, plan: Plan, model: str, fmt: str):
        self.plan = plan
        self.seen: dict[str, str] = {}
        self.models: dict[str, tuple[str | None, str | None]] = {model: (fmt, plan.recipe.input.layout)}
        self.made_by: dict[str, StepCall] = {}

    def _scope(self, variant: str | None, model: str | None) -> PlanScope:
        fmt, layout = self.models.get(model, (None, None)) if model else (None, None)
        return PlanScope(recipe=self.plan.recipe, target=self.plan.target, source=self.plan.source,
                         variant=variant, format=fmt, layout=layout, trust_remote_code=self.plan.trust_remote_code)

    def _params(self, kind: str, params: dict | None, variant: str | None, model: str | None) -> dict:
        """The call's own params over what its step resolves from the recipe, target and variant; every field."""
        given = params or {}
        resolved = {**registry.get(kind).resolve_params(self._scope(variant, model), given), **given}
        return registry.params_of(kind, resolved).model_dump(mode="json")

    def runtime_options(self, model: str, variant: str) -> dict:
        """What the session of `model` needs from the step that made it: its runtime's build_options."""
        from builder.stage.runtimes import runtime_class

        made = self.made_by.get(model)
        wanted = runtime_class(runtime_for(self._scope(variant, model))).build_options
        return {k: made.params[k] for k in wanted if made and made.params.get(k) is not None}

    def add(self, kind: str, *, params: dict | None = None, inputs: dict | None = None, outputs: dict | None = None,
            variant: str | None = None) -> StepCall:
        step = registry.get(kind)
        stage = "device" if kind in self.plan.target.device_only else step.stage
        recipe = self.plan.recipe
        model = (inputs or {}).get("model")
        params = self._params(kind, params, variant, model)
        needs = step.data_inputs(params)
        if "calibration" in needs and recipe.calibration is None:
            raise ConfigError(f"recipe {recipe.name}: variant {variant} needs calibration data for {kind}",
                              hint="add `calibration:` (files, folder or npy; synthetic: N for smoke tests only)")
        has_data = recipe.calibration is not None or recipe.validation is not None
        inputs = {**{name: DATA_FILES[name] for name in needs if has_data}, **step.file_inputs(params), **(inputs or {})}
        inputs |= {k: v for name in ("model", "reference") if name in inputs for k, v in companions(name, inputs[name]).items()}
        outputs = step.own_outputs(params, inputs) | (outputs or {})
        if "model" in outputs:
            outputs |= step.side_outputs(outputs["model"]) | companions("model", outputs["model"])
        suffix = f"-{variant}" if variant else ""
        call = StepCall(id=f"{len(self.plan.steps) + 1:02d}-{kind}{suffix}", kind=kind, stage=stage, variant=variant,
                        inputs=inputs, outputs=outputs, params=params)
        self.plan.steps.append(call)
        if "model" in outputs:
            scope = self._scope(variant, model)
            self.models[outputs["model"]] = (step.produces or scope.format, step.output_layout(params, scope))
            self.made_by[outputs["model"]] = call
        return call

    def convert(self, kind: str, model: str, out: str, params: dict | None = None, variant: str | None = None) -> str:
        """Add a model-to-model step once per identical (kind, input, resolved params): the params hold all
        that a variant changes, so variants share a step they would run alike (the first one names it)."""
        key = json.dumps([kind, model, self._params(kind, params, variant, model)], sort_keys=True)
        if key not in self.seen:
            self.add(kind, params=params, inputs={"model": model}, outputs={"model": out}, variant=variant)
            self.seen[key] = out
        return self.seen[key]

    def artifact(self, kind: str, model: str, out: str, params: dict | None, variant: str) -> str:
        """The variant's artifact at `out`: made by its last step, or copied from what an identical step made."""
        made = self.convert(kind, model, out, params, variant)
        if made != out:
            self.add("artifact.copy", inputs={"model": made}, outputs={"model": out}, variant=variant)
        return out

    def measure_inputs(self, artifact: str) -> dict[str, str]:
        """What measuring `artifact` reads besides it (e.g. an NPU compiler's estimate), from the step that made it."""
        call = self.made_by.get(artifact)
        while call is not None and call.kind == "artifact.copy":
            call = self.made_by.get(call.inputs["model"])
        return registry.get(call.kind).measure_inputs(call) if call else {}


def _edges() -> list[tuple[str, str, str]]:
    """(from_format, to_format, step kind) for every converter step."""
    return [(fmt, step.produces, kind) for kind, step in registry.all_steps().items()
            if step.produces for fmt in step.consumes if fmt != step.produces]


def find_path(start: str, goals: tuple[str, ...]) -> list[tuple[str, str]] | None:
    """Shortest list of (step kind, produced format) from `start` to any goal format."""
    if start in goals:
        return []
    edges = _edges()
    queue = deque([(start, [])])
    visited = {start}
    while queue:
        fmt, path = queue.popleft()
        for src, dst, kind in edges:
            if src == fmt and dst not in visited:
                new = path + [(kind, dst)]
                if dst in goals:
                    return new
                visited.add(dst)
                queue.append((dst, new))
    return None


def reads(target: Target, source_fmt: str) -> bool:
    """Whether every variant `target` builds has a conversion path from a source in `source_fmt`."""
    return all(find_path(source_fmt, registry.get(chain[0].step).consumes) is not None
               for chain in target.variants.values())


def _hygiene_steps(fmt: str) -> list[str]:
    """Steps that check and clean a source in its own format (e.g. ONNX simplification): every source gets them."""
    return [kind for kind, step in registry.all_steps().items() if step.cleans_source and fmt in step.consumes]


def _produced_format(chain: list[ChainStep], target: Target) -> str:
    return registry.get(chain[-1].step).produces or target.format


def _intermediate(fmt: str) -> str:
    suffix = formats.suffix_of(fmt)
    return f"work/{fmt}/model{suffix}" if suffix else f"work/{fmt}/model"


def _artifact(recipe: Recipe, variant: str, fmt: str) -> str:
    return f"{recipe.name}_{variant}{formats.suffix_of(fmt)}"


def _chain(b: _Builder, source_fmt: str, source_model: str, chain: list[ChainStep], variant: str) -> str:
    """Plan one variant's chain; return its artifact path."""
    plan = b.plan
    first = registry.get(chain[0].step)
    path = find_path(source_fmt, first.consumes)
    if path is None:
        raise ConfigError(
            f"no conversion path from {source_fmt} to {chain[0].step} (which reads {', '.join(first.consumes)})",
            hint="use a source in another format, or an explicit `steps:` list",
        )
    model = source_model
    for kind, fmt in path:
        model = b.convert(kind, model, _intermediate(fmt))
    for i, link in enumerate(chain):
        fmt = registry.get(link.step).produces or plan.target.format
        last = i == len(chain) - 1
        if last:
            return b.artifact(link.step, model, _artifact(plan.recipe, variant, fmt), link.params, variant)
        model = b.convert(link.step, model, f"work/{variant}/{link.step}{formats.suffix_of(fmt)}",
                          params=link.params, variant=variant)
    return model


def make_plan(recipe: Recipe, target: Target, *, variants: list[str] | None = None, source: Source | None = None,
              quantized: SourcePrecision | None = None, trust_remote_code: bool = False,
              extra: ExtraMeasures = ExtraMeasures()) -> Plan:
    """`source` is the fetched source (default: the recipe's); `quantized` what inspecting its file found;
    `trust_remote_code` lets the recipe's own code run (see code_trust); `extra`: the profiles and layer diffs
    asked for beside the recipe's own."""
    extra = extra.asked_by(recipe)
    source = source or recipe.source
    wanted = variants or list(recipe.variants)
    unknown = [v for v in wanted if v not in recipe.variants]
    if unknown:
        raise ConfigError(f"recipe {recipe.name} has no variant {unknown[0]!r}", hint=f"variants: {', '.join(recipe.variants)}")
    plan = Plan(recipe=recipe, target=target, source=source, variants=[], trust_remote_code=trust_remote_code)
    _code_it_runs(plan, [s for s in (source, recipe.fallback) if s is not None])
    if quantized:
        plan.notes.append(f"{quantized.describe()}: fp32 is the source's own precision"
                          + (", and it is quantized again (source.requantize)" if source.requantize else ""))
    for v in wanted:
        precision = recipe.precision_of(v)
        if quantized and precision != "fp32" and not source.requantize:
            plan.skipped[v] = (f"{quantized.describe()}: quantizing it again is refused "
                               "(set source.requantize: true to do it anyway)")
        elif precision in target.variants:
            plan.variants.append(v)
        else:
            plan.skipped[v] = f"target {target.id} does not produce {precision} (it has {', '.join(target.precisions)})"
    fp32 = next(v for v in recipe.variants if recipe.precision_of(v) == "fp32")
    if plan.variants and fp32 not in plan.variants:
        plan.variants.insert(0, fp32)
        plan.notes.append(f"{fp32} is built too: it is the reference every variant is validated against")
    if note := _loadgen_missing(recipe, target):
        plan.notes.append(note)
    if not plan.variants:
        raise ConfigError(f"nothing to build for {recipe.name} on {target.id}: " + "; ".join(plan.skipped.values()))

    source_fmt = source.resolved_format
    model = source_path(source)
    b = _Builder(plan, model, source_fmt)
    if recipe.calibration:
        b.add("data.prepare", params={"dataset": "calibration"}, outputs={"calibration": CALIBRATION})
    if recipe.calibration or recipe.validation:
        b.add("data.prepare", params={"dataset": "validation"},
              outputs={"validation": VALIDATION, "labels": LABELS, "boxes": BOXES, "photos": PHOTOS})
    source_outputs = _source_reference(b, model, source_fmt)
    for kind in _hygiene_steps(source_fmt):
        model = b.convert(kind, model, _intermediate(source_fmt))

    if recipe.steps:
        _custom_steps(b, model, source_fmt)
    else:
        for v in sorted(plan.variants, key=lambda v: v != fp32):  # fp32 first: the variants sharing its steps
            precision = recipe.precision_of(v)
            chain = target.variants[precision]
            # a source already in the target's format is its own fp32, unless the chain reads that format
            # (a file that stores fp16 or sparse weights is made dense fp32 by the chain's converter)
            if (precision == "fp32" and source_fmt == _produced_format(chain, target)
                    and source_fmt not in registry.get(chain[0].step).consumes):
                plan.artifacts[v] = b.artifact("artifact.copy", model, _artifact(recipe, v, source_fmt), None, v)
            else:
                plan.artifacts[v] = _chain(b, source_fmt, model, chain, v)

    for v in plan.variants:
        b.add("benchmark", inputs={"model": plan.artifacts[v]} | b.measure_inputs(plan.artifacts[v]),
              params={"runtime_options": b.runtime_options(plan.artifacts[v], v)}, variant=v)
    if extra.profile:  # after every timed run: a profiler slows what it watches
        for v in plan.variants:
            runtime = runtime_for(b._scope(v, plan.artifacts[v]))
            if not profiling.has_profiler(runtime):
                plan.notes.append(f"{v} is not profiled: the {runtime} runtime has no per-layer profiler")
                continue
            b.add("profile", inputs={"model": plan.artifacts[v]} | b.measure_inputs(plan.artifacts[v]),
                  outputs=ProfileStep.outputs_for(v, plan.artifacts[v]),
                  params={"runtime_options": b.runtime_options(plan.artifacts[v], v)}, variant=v)
    reference_runtime = runtime_for(b._scope(fp32, plan.artifacts[fp32]))  # of the fp32 artifact, whatever made it
    for v in plan.variants:
        reference = {"model": plan.artifacts[v], "reference": plan.artifacts[fp32]} | b.measure_inputs(plan.artifacts[v])
        b.add("validate", inputs=reference | ({"source_outputs": source_outputs} if source_outputs else {}),
              params={"gates": _gates(recipe, v, quantized, compared_with_source=bool(source_outputs)),
                      "reference_runtime": reference_runtime,
                      "runtime_options": b.runtime_options(plan.artifacts[v], v)}, variant=v)
    if extra.layer_diff:
        _layer_diffs(b, fp32, reference_runtime)
    return plan


def _layer_diffs(b: _Builder, fp32: str, reference_runtime: str) -> None:
    """A layer diff of each variant but fp32 against fp32, where both runtimes can read their tensors."""
    plan = b.plan
    for v in plan.variants:
        if v == fp32:
            continue
        runtime = runtime_for(b._scope(v, plan.artifacts[v]))
        lacking = [r for r in dict.fromkeys((runtime, reference_runtime)) if not layer_diff.has_reader(r)]
        if lacking:
            plan.notes.append(f"{v} has no layer diff: the {lacking[0]} runtime has no intermediate-tensor reader")
            continue
        b.add("layer_diff", inputs={"model": plan.artifacts[v], "reference": plan.artifacts[fp32]},
              outputs=LayerDiffStep.outputs_for(v, plan.artifacts[v]),
              params={"reference_runtime": reference_runtime,
                      "runtime_options": b.runtime_options(plan.artifacts[v], v)}, variant=v)


def _loadgen_missing(recipe: Recipe, target: Target) -> str | None:
    """A LoadGen scenario on a target whose device image does not install LoadGen: said before it runs."""
    scenario, lock = recipe.benchmark.scenario, target.images.device.lock
    if scenario == "quick" or locks.holds(lock, loadgen.DISTRIBUTION):
        return None
    return (f"benchmark.scenario {scenario}: LoadGen is not in {target.id}'s device image (lock {lock}; MLCommons "
            f"publishes x86-64 wheels only): {loadgen.UNAVAILABLE}")


def _code_it_runs(plan: Plan, sources: list[Source]) -> None:
    """Refuse a source that would run its author's code unless the user trusts it; say so when it runs."""
    for source in sources:
        where = "fallback" if source is plan.recipe.fallback else "source"
        if problem := code_trust.code_problem(source, plan.trust_remote_code):
            raise ConfigError(f"recipe {plan.recipe.name}: {where}: {problem}",
                              hint=f"pass {code_trust.FLAG} if you trust whoever made it, or convert it yourself")
        if why := code_trust.RUNS_CODE.get(source.resolved_format):
            plan.notes.append(f"{where} {source.name} runs its own code: {why}" +
                              (f" ({code_trust.FLAG})" if code_trust.remote(source) else " (your own file)"))
        factory = source.torch.factory if source.torch else None
        if factory and not plan.trust_remote_code and code_trust.factory_in_current_folder(factory):
            raise ConfigError(f"recipe {plan.recipe.name}: {where}.torch.factory: {factory.partition(':')[0]} is in "
                              "the current folder, not an installed package: a recipe runs no code of its own",
                              hint=f"install it (pip install -e ...), or pass {code_trust.FLAG} if you trust it")
        if factory and plan.trust_remote_code:
            plan.notes.append(f"{where}.torch.factory {factory} may come from outside installed packages "
                              f"({code_trust.FLAG})")


def _gates(recipe: Recipe, variant: str, quantized: SourcePrecision | None, *, compared_with_source: bool) -> dict:
    """The gates a variant's validation applies (shown by the plan); no source figures, no source gates."""
    gates = recipe.gates_of(variant, quantized_source=quantized is not None).model_dump(exclude_none=True)
    return {g: t for g, t in gates.items() if compared_with_source or not g.startswith("min_source_")}


def _source_reference(b: _Builder, model: str, fmt: str) -> str | None:
    """Plan the source's own run on the validation set; None (with a note) where that cannot be done."""
    plan = b.plan
    if plan.recipe.calibration is None and plan.recipe.validation is None:
        return None
    if saved := source_run.saved_as(fmt):  # e.g. a Keras model runs as the SavedModel it is saved to
        kind, fmt = saved
        model = b.convert(kind, model, _intermediate(fmt))
    if not source_run.runnable(fmt):
        plan.notes.append(f"a {fmt} source is not run here: variants are compared with the fp32 artifact only")
        return None
    b.add("reference.source", params={"format": fmt}, inputs={"model": model},
          outputs={"outputs": SOURCE_OUTPUTS})
    return SOURCE_OUTPUTS


def _custom_steps(b: _Builder, model: str, fmt: str) -> None:
    """An explicit `steps:` list: each step reads the previous model; a variant's last step makes its artifact."""
    plan = b.plan
    last_of = {s.variant: i for i, s in enumerate(plan.recipe.steps) if s.variant}
    for i, spec in enumerate(plan.recipe.steps):
        step = registry.get(spec.kind)
        if step.consumes and fmt not in step.consumes:
            raise ConfigError(f"recipe {plan.recipe.name}: steps[{i}]: {spec.kind} reads {', '.join(step.consumes)}, "
                              f"but the model is {fmt} there", hint="put a step that converts it before this one")
        fmt = step.produces or fmt
        if spec.variant and last_of[spec.variant] == i:
            model = b.artifact(spec.kind, model, _artifact(plan.recipe, spec.variant, fmt), spec.params, spec.variant)
            plan.artifacts[spec.variant] = model
        else:
            model = b.convert(spec.kind, model, f"work/custom/{i:02d}-{spec.kind}{formats.suffix_of(fmt)}",
                              params=spec.params, variant=spec.variant)
    missing = [v for v in plan.variants if v not in plan.artifacts]
    if missing:
        raise ConfigError(f"recipe {plan.recipe.name}: steps: no step makes variant {missing[0]!r}",
                          hint="give the last step of each variant `variant: <name>`")
