"""`builder import`: a mirrors TSV in seed 000's format -> one recipe per model.

Columns: family, model, filename, sha256, url1..urlN (tab-separated); `#` lines and blank
lines are comments. Each model's input spec is read from its file (fetched into the
download cache, which the runs then reuse); where the file cannot be fetched, the recipe
gets a default spec and says so. A model file's format is read by its backend's reader (`register_reader`):
the formats with one are those a mirror list may name.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from builder import formats, plugins
from builder.config.loader import load_model
from builder.config.paths import ALLOW_ENV, extra_roots
from builder.config.recipe import NAME_RE, Download, Recipe
from builder.errors import BuilderError, ConfigError
from builder.host.fetch import Fetcher
from builder.host.inputs import cache_dir
from builder.util import atomic_write_bytes, is_within

MAX_TSV_BYTES = 1 << 22
COLUMNS = "family, model, filename, sha256, url1..urlN"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.xz")
TASKS = ("classification", "detection", "segmentation")  # families that are a recipe task; others are generic
SYNTHETIC_SAMPLES = 32
DEFAULT_SHAPE = [1, 224, 224, 3]
FLOAT_MEAN_STD = 127.5  # float image models of TF and MediaPipe mostly take [-1, 1]

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Row:
    file: Path
    line: int
    family: str
    name: str
    format: str
    download: Download
    dropped: list[str]  # archive URLs: the file inside is not named in the TSV

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Spec:
    """What the recipe's `input:` says, and how it was found (for the recipe's comment)."""

    fields: dict
    how: str


def read_tsv(path: Path, warn: Warn) -> list[Row]:
    """The rows of a mirrors TSV; ConfigError (file:line, what to fix) on the first bad one."""
    try:
        data = path.read_bytes()[: MAX_TSV_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}", hint="give the path of a mirrors TSV") from None
    if len(data) > MAX_TSV_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_TSV_BYTES >> 20} MiB", hint="a mirrors list is a few KiB")
    rows: list[Row] = []
    seen: dict[str, str] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not valid UTF-8", hint="save the TSV as UTF-8") from None
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = _row(path, number, line.split("\t"), warn)
        if row.name in seen:
            raise ConfigError(f"{where}: model {row.name!r} is already on {seen[row.name]}",
                              hint="one row per model: give one of them another model name, or merge their URLs")
        seen[row.name] = where
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: no model rows", hint=f"one tab-separated row per model: {COLUMNS}")
    return rows


def _row(path: Path, number: int, fields: list[str], warn: Warn) -> Row:
    where = f"{path}:{number}"
    fields = [f.strip() for f in fields]
    if len(fields) < 5 or not any(fields[4:]):
        raise ConfigError(f"{where}: {len(fields)} column(s) and no URL",
                          hint=f"separate the columns with tabs (not spaces): {COLUMNS}")
    family, model, filename, sha256, *urls = fields
    for column, value in (("family", family), ("model", model), ("filename", filename)):
        if not value:
            raise ConfigError(f"{where}: the {column} column is empty", hint=f"fill it in ({COLUMNS})")
    name = model.lower()
    if not re.match(NAME_RE, name):
        raise ConfigError(f"{where}: model {model!r} cannot name a recipe",
                          hint="use letters, digits, . _ - only, starting with a letter or digit")
    fmt = formats.of_file(filename)
    if fmt is None or fmt.name not in readers():
        known = [formats.get(name) for name in readers()]
        raise ConfigError(f"{where}: filename {filename!r} is not a {' or '.join(f.suffix for f in known)} file",
                          hint=f"this import reads mirror lists of {', '.join(f.name for f in known)} models: write a "
                               "recipe by hand for other formats")
    urls = [u for u in urls if u]
    dropped = [u for u in urls if u.split("?")[0].lower().endswith(ARCHIVE_SUFFIXES)]
    kept = [u for u in urls if u not in dropped]
    for url in dropped:
        warn(f"{where}: mirror {url} is an archive that does not name the {fmt.suffix} inside it: left out "
             "(add it by hand as a download with `member:`)")
    if not kept:
        raise ConfigError(f"{where}: every mirror of {filename} is an archive",
                          hint=f"add a URL of the {fmt.suffix} itself, or write the recipe by hand with download.member")
    if not sha256:
        warn(f"{where}: {model} has no sha256: its download will not be verified (fill in the sha256 column)")
    try:
        download = Download(urls=kept, sha256=sha256.lower().removeprefix("sha256:") or None, filename=filename)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ConfigError(f"{where}: {problems}",
                          hint="sha256 is 64 hex digits (sha256sum FILE) or empty; URLs are http(s):// or file://") from None
    return Row(path, number, family, name, fmt.name, download, dropped)


@dataclass(frozen=True)
class InputTensor:
    """A model's one input as its file declares it (what a format's reader finds)."""

    name: str
    shape: list[int]
    sizes: list[int]  # the shape with -1 where a size is dynamic
    dtype: str  # numpy's name: float32, uint8, int8, ...
    scale: float | None = None
    zero_point: int = 0


_READERS: dict[str, Callable[[bytes], InputTensor]] = {}


def register_reader(fmt: str, read: Callable[[bytes], InputTensor]) -> None:
    """A backend's reader of its format's model input (ValueError when the bytes are not such a model)."""
    _READERS[fmt] = read


def readers() -> dict[str, Callable[[bytes], InputTensor]]:
    plugins.load(host=True)
    return dict(_READERS)


def input_spec(model: bytes, fmt: str) -> Spec:
    """The input spec of an image model in format `fmt`; ValueError if it has no input we can use."""
    return image_spec(readers()[fmt](model))


def image_spec(tensor: InputTensor) -> Spec:
    """The recipe's `input:` for a model whose one input is an image; ValueError if it is not one."""
    shape, dtype, scale, zero = tensor.shape, tensor.dtype, tensor.scale, tensor.zero_point
    if len(shape) != 4 or not (shape[-1] in (1, 3) or shape[1] in (1, 3)):
        raise ValueError(f"input {shape} ({dtype}) is not one image in NHWC or NCHW")
    if min(tensor.sizes[1:]) < 1:
        raise ValueError(f"input {tensor.sizes} has a dynamic size: the recipe needs a fixed one")
    layout = "NHWC" if shape[-1] in (1, 3) else "NCHW"
    channels = shape[-1] if layout == "NHWC" else shape[1]
    fields = {"name": tensor.name, "shape": [1, *shape[1:]], "layout": layout}
    if channels == 1:
        fields["color"] = "GRAY"
    if dtype in ("uint8", "int8") and scale:
        # pixels map onto the integers the model takes: (p - mean) / std, quantized, is p (uint8) or p - 128 (int8)
        mean = zero + (128 if dtype == "int8" else 0)
        how = f"{dtype}, scale {scale:g}, zero point {zero}; mean/std map pixels onto its integers"
        return Spec(fields | {"mean": mean, "std": round(1 / scale, 4)}, how)  # 4 places: float32 scales
    how = (f"{dtype}; mean/std {FLOAT_MEAN_STD} assume pixels scaled to [-1, 1], the usual for TF and "
           "MediaPipe float models: check the model card")
    return Spec(fields | {"mean": FLOAT_MEAN_STD, "std": FLOAT_MEAN_STD}, how)


def _spec_of(row: Row, fetcher: Fetcher, warn: Warn) -> Spec:
    d = row.download
    try:
        spec = input_spec(fetcher.fetch(d.urls, sha256=d.sha256, filename=d.filename).path.read_bytes(), row.format)
        return Spec(spec.fields, f"shape and layout read from the model's input tensor {spec.fields['name']!r} ({spec.how})")
    except (BuilderError, ValueError) as exc:
        reason = " ".join((exc.message if isinstance(exc, BuilderError) else str(exc)).split())
    warn(f"{row.where}: input spec of {row.name} not read ({reason}): the recipe has a default one, check it")
    fields = {"shape": DEFAULT_SHAPE, "layout": "NHWC", "mean": FLOAT_MEAN_STD, "std": FLOAT_MEAN_STD}
    return Spec(fields, f"NOT read from the model ({reason}): a default, edit it to the model's input")


def recipe_text(row: Row, spec: Spec, calibration: Path | None) -> str:
    """The recipe as YAML with comments: where it came from and what was assumed."""
    d = row.download
    q = json.dumps  # a JSON string is a YAML string
    lines = [f"# Imported by `builder import` from {row.file.name}, line {row.line}.",
             f"# input: {spec.how}."]
    lines += [f"# left out (an archive whose {formats.get(row.format).suffix} is not named): {url}" for url in row.dropped]
    lines += [f"name: {row.name}", f"description: {q(f'{row.family}/{row.name}, from the mirrors list {row.file.name}')}",
              f"task: {row.family.lower() if row.family.lower() in TASKS else 'generic'}", "source:", "  download:", "    urls:"]
    lines += [f"      - {q(url)}" for url in d.urls]
    lines.append(f"    filename: {q(d.filename)}")
    lines.append(f"    sha256: {q(d.sha256)}" if d.sha256 else
                 "    sha256: null  # empty in the TSV: the download is NOT verified; fill it in to pin the file")
    lines.append("input:")
    lines += [f"  {key}: {q(value) if isinstance(value, str) else value}" for key, value in spec.fields.items()]
    if calibration is None:
        lines += ["calibration:  # SYNTHETIC (seeded noise): int8 ranges and accuracy figures mean little;",
                  "  # give real images: `builder import --calibration FOLDER`, or `folder: PATH` here",
                  f"  synthetic: {SYNTHETIC_SAMPLES}"]
    else:
        lines += ["calibration:  # images given to `builder import --calibration`",
                  f"  folder: {q(calibration.as_posix())}"]
    lines += ["variants:  # seed 000: the float model, and signed int8 by static PTQ", "  fp32: {}", "  int8: {}"]
    return "\n".join(lines) + "\n"


def import_tsv(tsv: Path, out_dir: Path, *, calibration: Path | None = None, offline: bool = False,
               echo: Callable[[str], None] = print, warn: Warn = print) -> list[Path]:
    """Write one recipe per row of `tsv` into `out_dir`; each is loaded back to be sure it is valid."""
    rows = read_tsv(tsv, warn)
    if calibration is not None and not calibration.is_dir():
        raise ConfigError(f"--calibration {calibration}: not a folder", hint="give a folder of images")
    out_dir.mkdir(parents=True, exist_ok=True)
    fetcher = Fetcher(cache_dir() / "files", offline=offline)
    folder = None if calibration is None else Path(os.path.relpath(calibration.resolve(), out_dir.resolve()))
    written = []
    for row in rows:
        echo(f"{row.where}: {row.family}/{row.name}")
        spec = _spec_of(row, fetcher, warn)
        path = out_dir / f"{row.name}.yaml"
        atomic_write_bytes(path, recipe_text(row, spec, folder).encode())
        load_model(path, Recipe, {"allow": [calibration] if calibration else []})
        written.append(path)
    if folder is not None and ".." in folder.parts and not any(is_within(root, calibration) for root in extra_roots()):
        warn(f"the recipes read {calibration}, outside {out_dir}: run them with {ALLOW_ENV}={calibration.resolve()}")
    return written
