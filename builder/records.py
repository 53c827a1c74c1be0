"""The records a run writes and reads, typed: a step's record (`work/records/<id>.json`), the benchmark and
validation results in it, and `results.json` (a VariantResult per variant, and the recommendation).

They are written and read here, through these models, and nowhere else. Every model whose producer is this
project forbids unknown keys; only a vendor tool's parsed figures and a converter's own report stay open
dicts. A model dumps only the fields its producer set, so the files keep the keys they always had.
`builder schema results` prints the JSON Schema of results.json.

A benchmark and the machine it ran on name no vendor: a backend's own figures go into their `extra`, one
section per backend, typed by the model it registers (`register_extra`); a section moves there the fields
older records held at their top level when one is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from builder import plugins
from builder.errors import BuilderError, StepError
from builder.placement import Placement
from builder.util import atomic_write_bytes

Interval = tuple[float, float]  # a rate's 95% interval (Wilson), written as a two-item list


class Strict(BaseModel):
    """Our own producer, fixed keys: an unknown one is an error, not a silent extra."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


# --- a backend's own figures -------------------------------------------------------------------------------

ExtraOf = Literal["benchmark", "device"]  # the records that hold an `extra`


@dataclass(frozen=True)
class ExtraSection:
    """A backend's own figures in a record's `extra`, under `name`, typed by `model`.

    `moved`: fields an older record held at its top level, moved into this section when it is read;
    `implied`: the top-level fields such an older record implies (e.g. which tool made an estimate)."""

    name: str
    model: type[BaseModel]
    moved: tuple[str, ...] = ()
    implied: Mapping[str, Any] = field(default_factory=dict)


_SECTIONS: dict[str, dict[str, ExtraSection]] = {"benchmark": {}, "device": {}}


def register_extra(record: ExtraOf, section: ExtraSection) -> None:
    """A backend declares its section of a benchmark's (`benchmark`) or a machine's (`device`) `extra`."""
    _SECTIONS[record][section.name] = section


def extra_sections(record: ExtraOf) -> dict[str, ExtraSection]:
    """Every section the installed backends declare for `record` (a plugin's too)."""
    plugins.load()
    return _SECTIONS[record]


def _move_older_fields(record: ExtraOf, data: Any) -> Any:
    """A record written before its backend's figures moved into `extra`: they move there now."""
    if not isinstance(data, dict):
        return data
    moved, implied = {}, {}
    for section in extra_sections(record).values():
        if found := {key: data[key] for key in section.moved if key in data}:
            moved[section.name] = found
            implied |= section.implied
    if not moved:
        return data
    kept = {key: value for key, value in data.items() if not any(key in found for found in moved.values())}
    return implied | kept | {"extra": moved | (data.get("extra") or {})}


def _typed_sections(record: ExtraOf, sections: dict | None) -> dict | None:
    """Each section read through the model its backend declares; a section of a backend not installed here
    (a plugin's, in a results.json from another machine) stays as its file holds it."""
    declared = extra_sections(record)
    return sections and {name: _section(declared[name].model, name, value) if name in declared else value
                         for name, value in sections.items()}


def _section(model: type[BaseModel], name: str, value: Any) -> BaseModel:
    """`value` as `model`; a problem names the section in its field path."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(exc.title, [
            {"type": e["type"], "loc": (name, *e["loc"]), "input": e["input"], **({"ctx": e["ctx"]} if "ctx" in e else {})}
            for e in exc.errors()]) from None


def _sections_schema(record: ExtraOf):
    """The JSON Schema of `extra`: each declared section's model, others open."""
    def fill(schema: dict) -> None:
        schema["anyOf"][0]["properties"] = {name: section.model.model_json_schema()
                                            for name, section in sorted(extra_sections(record).items())}
    return fill


def _extra_field(record: ExtraOf, what: str):
    return Field(None, description=f"{what}, one section per backend, typed by the model it declares",
                 json_schema_extra=_sections_schema(record))


class WithExtra(BaseModel):
    """A record with an `extra` of the backends' sections (`extra_of` names which registry types them)."""

    extra_of: ClassVar[ExtraOf]

    @model_validator(mode="before")
    @classmethod
    def _older_fields(cls, data: Any) -> Any:
        return _move_older_fields(cls.extra_of, data)

    @field_validator("extra", check_fields=False)
    @classmethod
    def _typed_extra(cls, value: dict | None) -> dict | None:
        return _typed_sections(cls.extra_of, value)


def undeclared_sections(record: ExtraOf, sections: dict | None) -> list[str]:
    """The sections of an `extra` that no installed backend declares."""
    return sorted(set(sections or {}) - set(extra_sections(record)))


# --- a benchmark ------------------------------------------------------------------------------------------

class Thermal(Strict):
    """Whether the machine was in a state to give good numbers (device_facts.thermal_state)."""

    cpu_governor: str | dict[str, str] | None = Field(None, description="one governor, or one per cpufreq policy")
    cpu_freq_mhz: dict[str, dict[str, int]] | None = Field(None, description="policy -> cur/min/max MHz")
    temperatures_c: dict[str, float] | None = None
    throttled: dict[str, str | bool] | None = Field(None, description="a Raspberry Pi's get_throttled bits")


class DeviceFacts(Placement, WithExtra):
    """Where a benchmark ran (its placement) and what that machine reported of itself (device_facts)."""

    extra_of = "device"

    cpu_model: str | None = None
    cpu_flags: list[str] | None = None
    logical_cores: int | None = None
    cpus_allowed: int | None = None
    cgroup_cpu_quota: float | None = None
    kernel: str | None = None
    arch: str | None = None
    memory_total_bytes: int | None = None
    cgroup_memory_limit_bytes: int | None = None
    os: str | None = None
    board_model: str | None = None
    thermal_before: Thermal | None = None
    thermal_after: Thermal | None = None
    extra: dict[str, Any] | None = _extra_field("device", "what a backend's probe found on the machine "
                                                           "(its accelerator's SDK and power mode)")


class AsyncThroughput(Strict):
    """A runtime's asynchronous throughput: as many infer requests as it finds best, kept busy."""

    mode: str
    device: str
    requests: int
    infers: int
    seconds: float
    throughput_fps: float


class ToolComparison(Strict):
    """Our p50 over a vendor tool's on the same artifact, and why they differ by more than 5%."""

    p50_ratio: float
    tool_field: str = Field(description="the tool's figure compared with our p50")
    within_5pct: bool
    why: str | None = None


class LoadGenSettings(Strict):
    """The settings a LoadGen run used, as its detail log gives them (its `effective_*` entries)."""

    min_query_count: int | None = None
    min_sample_count: int | None = None
    min_duration_ms: int | None = None
    samples_per_query: int | None = None
    target_qps: float | None = Field(None, description="the schedule LoadGen sized from the quick harness's fastest run")
    performance_sample_count: int | None = None
    target_latency_percentile: float | None = None


class LoadGenResult(Strict):
    """MLCommons LoadGen's figures for a scenario, read from its own log files (stage/loadgen.py); or, where
    LoadGen is not installed in the image (`available: false`), only that: the benchmark's other figures are
    the quick harness's either way."""

    scenario: Literal["single-stream", "offline"]
    available: bool = True
    note: str | None = Field(None, description="why LoadGen's figures are missing")
    valid: bool | None = Field(None, description="VALID by LoadGen's rules: enough queries, long enough, early stopping")
    validity: Literal["VALID", "INVALID"] | None = None
    min_duration_met: bool | None = None
    min_queries_met: bool | None = None
    early_stopping_met: bool | None = None
    invalid_reason: str | None = Field(None, description="LoadGen's own words on an INVALID run")
    query_count: int | None = Field(None, description="queries LoadGen issued (offline: one, holding every sample)")
    target_latency_percentile: float | None = None
    percentile_latency_ms: float | None = Field(None, description="single-stream: the latency at the target percentile")
    early_stopping_ms: float | None = Field(None, description="single-stream: LoadGen's early-stopping estimate of it")
    qps: float | None = Field(None, description="single-stream: queries per second, LoadGen's overhead left out")
    samples_per_second: float | None = Field(None, description="offline: LoadGen's result")
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    version: str | None = None
    settings: LoadGenSettings | None = None
    logs: list[str] | None = Field(None, description="LoadGen's summary and detail logs, in the run's folder")


class BenchmarkResult(Strict, WithExtra):
    """A variant's timings: measured by the benchmark step (the quick harness: our timer), or a tool's estimate
    for hardware that is not here (`estimate`); with a LoadGen scenario, LoadGen's own figures in `loadgen`."""

    extra_of = "benchmark"

    runtime: str
    threads: int | None = None
    warmup: int | None = None
    runs: int | None = None
    mean_ms: float
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    p50_ms: float
    p90_ms: float | None = None
    p99_ms: float | None = None
    throughput_fps: float | None = None
    peak_rss_mb: float | None = Field(None, description="this process's peak resident memory around the timed runs")
    process_peak_rss_mb: float | None = None
    other_cpu_load: float | None = Field(None, description="share of the CPUs other processes used meanwhile")
    init_ms: float | None = None
    emulated: bool = Field(False, description="timed under QEMU: not device timings")
    on_target: bool = Field(True, description="timed on a machine of the target's platform")
    throttled: list[str] | None = Field(None, description="throttling the device reported before or after the "
                                        "timed runs (a Raspberry Pi's get_throttled *_now bits): not its best figures")
    size_bytes: int | None = None
    device: DeviceFacts | None = None
    async_: AsyncThroughput | None = Field(None, alias="async")
    tools: dict[str, dict[str, Any]] | None = Field(
        None, description="a vendor tool's own figures (its benchmark tool's), as it reports them")
    vs_tools: dict[str, ToolComparison] | None = None
    estimate: bool = Field(False, description="an estimate, not a measurement (`estimated_by` made it)")
    estimated_by: str | None = Field(None, description="the tool that estimated the timings")
    estimated_for: str | None = Field(None, description="the hardware the estimate is for (not here)")
    extra: dict[str, Any] | None = _extra_field("benchmark", "the runtime's or the estimating tool's own figures")
    loadgen: LoadGenResult | None = Field(None, description="benchmark.scenario single-stream or offline: MLCommons "
                                          "LoadGen's figures; the fields above are the quick harness's")
    cached: bool = Field(False, description="reused from the step cache, measured when `measured` says")
    measured: str | None = None


# --- a validation -----------------------------------------------------------------------------------------

class Agreement(Strict):
    """A candidate's outputs against a reference's (metrics.compare); rates with their 95% interval."""

    photos: int | None = Field(None, description="distinct photos the samples were cut from: what intervals count")
    cosine: float | None = None
    cosine_min: float | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    snr_db: float | None = None
    top1_agreement: float | None = None
    top1_agreement_interval: Interval | None = None
    top5_agreement: float | None = None
    top5_agreement_interval: Interval | None = None
    detection_f1: float | None = Field(None, description="detection: F1 of the detections both outputs find")
    box_iou: float | None = Field(None, description="detection: mean IoU of the boxes of those detections")
    miou: float | None = Field(None, description="segmentation: mIoU of the class masks")
    psnr_db: float | None = Field(None, description="super_resolution: PSNR, the reference's range as peak")
    cer: float | None = Field(None, description="ocr: character error rate of the greedy CTC decodes")


class Gate(Strict):
    """One accuracy gate of the recipe and its outcome: undecided when the interval straddles the threshold."""

    gate: str
    metric: str
    threshold: float
    value: float | None
    outcome: Literal["pass", "fail", "undecided"]
    passed: bool
    interval: Interval | None = None
    photos_needed: int | None = Field(None, description="undecided: about how many distinct photos would decide it")


class ValidationResult(Agreement):
    """A variant against the fp32 artifact (the figures at the top) and against the source model (`source`)."""

    reference: str
    samples: int
    emulated: bool = False
    validated: str | None = Field(None, description="the model validated in the artifact's place (the model an "
                                                                   "accelerator's compiler compiled)")
    top1_accuracy: float | None = Field(None, description="against the labels, over the labeled photos")
    top1_accuracy_interval: Interval | None = None
    labeled_photos: int | None = None
    reference_accuracy: float | None = Field(None, description="the fp32 artifact's top-1 accuracy on the same photos")
    accuracy_lost: float | None = Field(None, description="share of labeled photos fp32 has right and this variant wrong")
    accuracy_gained: float | None = Field(None, description="share of labeled photos this variant has right, fp32 wrong")
    accuracy_ratio: float | None = Field(None, description="top-1 accuracy as a share of fp32's (MLPerf keeps 0.99)")
    accuracy_ratio_interval: Interval | None = None
    map50: float | None = Field(None, description="detection: mAP at IoU 0.5 against the validation boxes "
                                                  "(COCO's 101-point interpolation, averaged over their classes)")
    map: float | None = Field(None, description="detection: mAP averaged over IoU 0.50:0.95 too (COCO's mAP)")
    source: Agreement | None = None
    gates: list[Gate] = []
    cached: bool = False
    measured: str | None = None


# --- a per-layer profile ----------------------------------------------------------------------------------

class LayerTime(Strict):
    """One layer of a profile: where the time of an inference went."""

    name: str = Field(description="the layer as its runtime names it (an op's output tensor, a node's name)")
    node_id: str = Field(description="its node's id in Model Explorer's graph of the artifact (an op's index in its graph)")
    op_type: str
    ms: float = Field(description="time per inference")
    share: float = Field(description="its share of the sum of the layers' times")
    precision: str | None = Field(None, description="the precision it ran in (fp32, fp16, int8, ...) where the "
                                                    "runtime tells")
    unit: str | None = Field(None, description="what ran it (a delegate, a kernel, the NPU or the CPU) where the "
                                               "runtime tells")


class Profile(Strict):
    """A variant's per-layer profile, taken apart from its timed runs (the `profile` step): its layers, slowest
    first, and how their sum compares with the benchmark's p50."""

    profiler: str = Field(description="what took it (the runtime's own profiler, or how it was made)")
    runs: int = Field(description="inferences the layer times are averaged over (0: an estimate)")
    layers: list[LayerTime]
    total_ms: float = Field(description="the sum of the layers' times")
    estimate: bool = Field(False, description="a tool's estimate for hardware that is not here, not a measurement")
    partitions: int | None = Field(None, description="how many partitions the delegate split the graph into "
                                                     "(more than one: the graph goes back and forth to the CPU)")
    caveat: str | None = Field(None, description="how the profiler's times differ from a timed run's, as its "
                                                 "runtime takes them")
    vs_p50: float | None = Field(None, description="total_ms over the benchmark's p50 (set with the benchmark)")
    why: str | None = Field(None, description="why the layers' sum is not within 20% of the p50")
    node_data: str | None = Field(None, description="the Model Explorer node data file of the layers' times")
    node_data_for: str | None = Field(None, description="the model whose graph the node data's keys name, when it "
                                                        "is not the artifact (the model an NPU compiler compiled)")
    warnings: list[str] = []


# --- a layer-by-layer error -------------------------------------------------------------------------------

class LayerDiffEntry(Strict):
    """One intermediate tensor of a quantized variant against the fp32 tensor it was matched with."""

    name: str = Field(description="the tensor as the variant's runtime names it")
    node_id: str = Field(description="the node that writes it, as Model Explorer keys it (an op's index in its "
                                     "graph, a node's name)")
    op_type: str
    fp32_name: str = Field(description="the fp32 tensor it was compared with")
    matched_by: Literal["name", "position"] = Field(description="the same name, or the same shape in the same place "
                                                                "in execution order")
    snr_db: float = Field(description="10 log10 of fp32's energy over the difference's: lower is worse")
    cosine: float = Field(description="mean cosine similarity per sample")
    max_abs_error: float


class LayerDiff(Strict):
    """A quantized variant's intermediate tensors against fp32's on the same validation samples (the `layer_diff`
    step): every matched layer, worst (lowest SNR) first."""

    reader: str = Field(description="what read the variant's tensors")
    reference_reader: str = Field(description="what read fp32's")
    metric: str = Field(description="what ranks the layers (snr_db: the lowest first)")
    samples: int
    layers: list[LayerDiffEntry]
    worst: list[str] = Field(description="the worst layers' names, worst first")
    unmatched: int = Field(description="the variant's tensors that matched none of fp32's")
    skipped: list[str] = Field([], description="tensors the reader could not read as float, and why")
    node_data: str | None = Field(None, description="the Model Explorer node data file of each node's noise/signal dB")


# --- a step's record --------------------------------------------------------------------------------------

class OutputFile(Strict):
    path: str
    sha256: str = Field(description="a file's, or a folder's over its files' paths and hashes")
    size: int


class StepOutcome(Strict):
    """How a step ended, and why when it did not finish: what causes.classify reads."""

    status: Literal["ok", "failed", "skipped"]
    kind: str | None = None
    tool: str | None = Field(None, description="the vendor tool whose error failed the step (its step kind's)")
    error: str | None = None
    cause: str | None = None
    hint: str | None = None
    log_tail: list[str] = []


class StepRecord(StepOutcome):
    """`work/records/<id>.json`: one step of a run, as it ran or was taken from the step cache (`cached`,
    `finished` then the date it really ran)."""

    id: str
    kind: str
    stage: Literal["toolchain", "device"]
    variant: str | None = None
    outputs: dict[str, OutputFile] = {}
    seconds: float
    finished: str | None = None
    blocked_by: str | None = Field(None, description="the failed step a skipped one waited for")
    result: dict[str, Any] | None = Field(None, description="the step's own report, as its kind makes it")
    cached: bool = False


class BenchmarkOutput(Strict):
    benchmark: BenchmarkResult


class ProfileOutput(Strict):
    profile: Profile


class LayerDiffOutput(Strict):
    layer_diff: LayerDiff


class ValidationOutput(Strict):
    validation: ValidationResult | None = Field(description="None: the recipe has no validation data")


class BenchmarkRecord(StepRecord):
    result: BenchmarkOutput | None = None  # type: ignore[assignment]


class ValidateRecord(StepRecord):
    result: ValidationOutput | None = None  # type: ignore[assignment]


class ProfileRecord(StepRecord):
    result: ProfileOutput | None = None  # type: ignore[assignment]


class LayerDiffRecord(StepRecord):
    result: LayerDiffOutput | None = None  # type: ignore[assignment]


MEASURED = {"benchmark": BenchmarkOutput, "validate": ValidationOutput,
            "profile": ProfileOutput, "layer_diff": LayerDiffOutput}  # step kind -> its result's model


def _record_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in MEASURED else "other"


_STEP_RECORD = TypeAdapter(Annotated[
    Annotated[BenchmarkRecord, Tag("benchmark")] | Annotated[ValidateRecord, Tag("validate")]
    | Annotated[ProfileRecord, Tag("profile")] | Annotated[LayerDiffRecord, Tag("layer_diff")]
    | Annotated[StepRecord, Tag("other")], Discriminator(_record_kind)])


# --- results.json -----------------------------------------------------------------------------------------

class Failure(Strict):
    """The step whose failure kept a variant from being built, classified (causes.classify)."""

    step: str
    error: str | None
    cause: str
    hint: str | None


class LayerError(Strict):
    name: str
    value: float


class LayerErrors(Strict):
    metric: str
    layers: list[LayerError]


class SearchCandidate(Strict):
    """One artifact an accuracy-aware search built and measured (quant_search)."""

    name: str
    description: str
    fallback: bool = Field(description="tried after the int8 ladder: fastest passing one wins")
    kept_float: list[str] = Field([], description="layers left in float")
    status: Literal["ok", "failed"]
    error: str | None = None
    passed: bool = False
    p50_ms: float | None = Field(None, description="a short timing in the search's own stage, to order candidates")
    size_bytes: int | None = None
    agreement: Agreement | None = Field(None, description="against the fp32 model on the validation samples")
    gates: list[Gate] = []
    seconds: float


class SearchResult(Strict):
    """Every candidate an accuracy-aware variant tried, the one it kept, and why."""

    candidates: list[SearchCandidate]
    chosen: str | None
    why: str
    max_candidates: int
    max_minutes: float


class DataCount(Strict):
    """How much data a dataset gave: samples, and the distinct images they were cut from."""

    samples: int
    images: int
    labeled: bool = False


class VariantResult(Strict):
    """One variant of a run: its artifact, how it ended, its benchmark and validation."""

    name: str
    artifact: str
    format: str
    precision: str
    io_dtype: str = Field(description="the artifact's input/output dtype")
    status: Literal["ok", "failed", "skipped", "gate-failed", "gate-undecided", "not-validated"] = Field(
        description="ok: built, timed and within every gate; not-validated: built and timed, but the recipe has no "
                    "validation data, so no gate could pass")
    benchmark: BenchmarkResult | None = None
    validation: ValidationResult | None = None
    conversion: dict[str, Any] | None = Field(
        None, description="the report of the last step that made the artifact, as that converter gives it")
    failure: Failure | None = None
    layer_errors: LayerErrors | None = Field(None, description="per-layer quantization error, where a run has it")
    search: SearchResult | None = Field(None, description="an accuracy-aware variant's candidates")
    profile: Profile | None = Field(None, description="where the time of an inference goes, layer by layer "
                                                      "(builder run --profile)")
    layer_diff: LayerDiff | None = Field(None, description="its intermediate tensors against fp32's, worst layer "
                                                           "first (builder run --layer-diff)")
    calibrated_on: DataCount | None = Field(None, description="the calibration data its quantization saw")


class Recommendation(Strict):
    """The fastest variant within every gate, with its speed-up and size against the fp32 baseline;
    the other variants' flags (slower than fp32, a gate missed, not built)."""

    variant: str | None = None
    baseline: str | None = None
    flags: dict[str, list[str]] = {}
    p50_ms: float | None = None
    size_bytes: int | None = None
    gates_checked: int | None = None
    emulated: bool | None = None
    estimate: bool | None = None
    speedup_vs_fp32: float | None = None
    size_vs_fp32: float | None = None
    provisional: bool = Field(False, description="the variant fails no gate, but some are undecided")
    photos_needed: int | None = Field(None, description="provisional: distinct validation photos that would decide it")
    otherwise: str | None = Field(None, description="provisional: the fastest variant with every gate passed")


def fp32_baseline(results: list[VariantResult]) -> VariantResult | None:
    """The fp32 variant with a timing: what speed-ups and sizes are measured against."""
    timed = [r for r in results if r.precision == "fp32" and r.benchmark and r.benchmark.p50_ms]
    return next((r for r in timed if r.name == "fp32"), timed[0] if timed else None)


class Results(Strict):
    """results.json: a run of one recipe on one target."""

    model_config = ConfigDict(title="results.json")

    recipe: str
    target: str
    recommendation: Recommendation = Field(default_factory=Recommendation)
    variants: list[VariantResult]
    data: dict[Literal["calibration", "validation"], DataCount] = Field(
        {}, description="the calibration and validation sets: samples and the distinct images they came from")
    skipped: dict[str, str] = Field({}, description="variant -> why the plan does not build it")
    warnings: list[str] = []


# --- writing and reading ----------------------------------------------------------------------------------

def as_json(model: BaseModel) -> dict:
    """A model as its file holds it: the keys its producer set, `async` by its name."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _problems(exc: ValidationError, skip: int = 0) -> str:
    """Each problem as `field.path: message`, on one line."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'][skip:]) or '(top level)'}: {e['msg']}"
                     for e in exc.errors(include_url=False))


def _parse(path: Path, text: str | bytes, parse, skip: int = 0) -> Any:
    try:
        return parse(text)
    except ValidationError as exc:
        raise BuilderError(f"{path}: not a valid {path.name}: {_problems(exc, skip)}") from None


def check_result(kind: str, result: dict) -> None:
    """A measuring step's result against its model, as the record will hold it: a wrong figure fails the
    step that made it, not the report that reads it."""
    if kind in MEASURED:
        try:
            MEASURED[kind].model_validate_json(json.dumps(result, default=str))
        except ValidationError as exc:
            raise StepError(f"the {kind} result does not match its record: {_problems(exc)}",
                            hint="a bug in the step: report it with this message") from None
    if kind == "benchmark":  # a section read back from a file may be of a backend not installed; a new one may not
        bench = result.get("benchmark") or {}
        undeclared = [f"extra.{name}" for name in undeclared_sections("benchmark", bench.get("extra"))]
        undeclared += [f"device.extra.{name}" for name in undeclared_sections("device", (bench.get("device") or {})
                                                                              .get("extra"))]
        if undeclared:
            raise StepError(f"the benchmark result holds {', '.join(undeclared)}, which no backend declares",
                            hint="the backend declares the model of its section with records.register_extra")


def write_record(path: Path, record: dict) -> StepRecord:
    """Write a step's record (validated: a record that does not match its model is never written)."""
    text = json.dumps(record, indent=1, default=str)
    model = _parse(path, text, _STEP_RECORD.validate_json, skip=1)
    atomic_write_bytes(path, text.encode())
    return model


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BuilderError(f"{path}: cannot be read ({exc.strerror})") from None


def read_record(path: Path) -> StepRecord:
    return _parse(path, _read(path), _STEP_RECORD.validate_json, skip=1)  # loc[0]: the record's kind


def read_records(folder: Path) -> dict[str, StepRecord]:
    """Every step record in `folder`, by step id (its file name)."""
    return {p.stem: read_record(p) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def write_results(path: Path, results: Results) -> None:
    atomic_write_bytes(path, json.dumps(as_json(results), indent=2).encode())


def load_results(path: Path) -> Results:
    """A results.json, validated; a file that is not one raises BuilderError naming the field."""
    return _parse(path, _read(path), Results.model_validate_json)
