"""Images, .npy files or seeded noise -> preprocessed float32 samples in the model's layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from builder.config.boxes import Box
from builder.config.recipe import Dataset, InputSpec
from builder.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
SYNTHETIC_WARNING = (
    "calibration/validation data is SYNTHETIC (seeded random noise): quantization ranges and "
    "accuracy figures are not meaningful; give real images in the recipe"
)


def _crop_boxes(width: int, height: int, out_w: int, out_h: int, count: int) -> list[tuple[int, int, int, int]]:
    """Center first, then the four corners, then more evenly spaced offsets."""
    dx, dy = width - out_w, height - out_h
    spots = [(dx // 2, dy // 2), (0, 0), (dx, 0), (0, dy), (dx, dy)]
    while len(spots) < count:
        k = len(spots)
        spots.append(((k * 37) % (dx + 1), (k * 53) % (dy + 1)))
    return [(x, y, x + out_w, y + out_h) for x, y in spots[:count]]


class View(NamedTuple):
    """One sample of an image: the image resized to `size`, cut to `crop` (left, top, right, bottom), maybe mirrored."""

    size: tuple[int, int]
    crop: tuple[int, int, int, int]
    flip: bool


def views(width: int, height: int, spec: InputSpec, *, crops: int = 1, flips: bool = False) -> list[View]:
    """The samples made of a `width` x `height` image: `crops` of it (x2 with flips, mirrored ones last)."""
    out_h, out_w = spec.hw
    if spec.resize == "stretch":
        made = [View((out_w, out_h), (0, 0, out_w, out_h), False)]
    else:
        scale = max(out_h, out_w) / spec.crop_fraction / min(width, height)
        size = max(out_w, round(width * scale)), max(out_h, round(height * scale))
        made = [View(size, box, False) for box in _crop_boxes(*size, out_w, out_h, crops)]
    return made + [v._replace(flip=True) for v in made] if flips else made


def image_samples(path: Path, spec: InputSpec, *, crops: int = 1, flips: bool = False) -> list[np.ndarray]:
    """Preprocess one image into `crops` (x2 with flips) samples shaped like one model input without batch."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L" if spec.color == "GRAY" else "RGB")
        resized: dict[tuple[int, int], Image.Image] = {}
        samples = []
        for view in views(img.width, img.height, spec, crops=crops, flips=flips):
            if view.size not in resized:
                resized[view.size] = img.resize(view.size, Image.BILINEAR)
            cut = resized[view.size].crop(view.crop)
            samples.append(to_tensor(np.asarray(cut.transpose(Image.FLIP_LEFT_RIGHT) if view.flip else cut,
                                                dtype=np.float32), spec))
    return samples


KEPT = 0.5  # a box cut by a crop stays an object if at least this share of its area is left in the view


def view_boxes(boxes: list[Box], view: View) -> list[Box]:
    """Boxes normalized to the original image -> normalized to the view: clipped to its crop, mirrored with it;
    a box with less than half its area left in the view is dropped."""
    (width, height), (left, top, right, bottom) = view.size, view.crop
    out = []
    for box in boxes:
        x0, y0, x1, y1 = box.xmin * width, box.ymin * height, box.xmax * width, box.ymax * height
        cx0, cy0, cx1, cy1 = max(x0, left), max(y0, top), min(x1, right), min(y1, bottom)
        if cx1 <= cx0 or cy1 <= cy0 or (cx1 - cx0) * (cy1 - cy0) < KEPT * (x1 - x0) * (y1 - y0):
            continue
        xmin, xmax = (cx0 - left) / (right - left), (cx1 - left) / (right - left)
        if view.flip:
            xmin, xmax = 1 - xmax, 1 - xmin
        out.append(Box(box.cls, xmin, (cy0 - top) / (bottom - top), xmax, (cy1 - top) / (bottom - top)))
    return out


def to_tensor(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HWC (or HW) pixels 0..255 -> (pixels - mean) / std in the spec's layout."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if spec.color == "BGR":
        pixels = pixels[..., ::-1]
    x = (pixels - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def synthetic(spec: InputSpec, count: int, seed: int = 0) -> np.ndarray:
    """Seeded noise in the range the preprocessing would produce."""
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, size=(count, *spec.hw, 1 if spec.color == "GRAY" else 3)).astype(np.float32)
    return np.stack([to_tensor(p, spec) for p in pixels])


def build(dataset: Dataset, folder: Path, spec: InputSpec) -> tuple[np.ndarray, list | None, str | None]:
    """Samples, labels (or None) and a warning (or None) from the files materialized in `folder`.

    `folder/index.json` lists the files in recipe order as [{"file": name, "label": ...}].
    """
    if dataset.synthetic:
        return synthetic(spec, dataset.synthetic), None, SYNTHETIC_WARNING
    index = json.loads((folder / "index.json").read_text())
    if dataset.npy:
        samples = np.load(folder / index[0]["file"]).astype(np.float32)
        expected = tuple(spec.shape[1:])
        if samples.shape[1:] != expected:
            raise ConfigError(f"{dataset.npy}: samples have shape {samples.shape[1:]}, the input spec wants {expected}",
                              hint="save preprocessed samples as (N, *input.shape[1:]) float32")
        return samples[: dataset.limit], None, None
    samples, labels = [], []
    for entry in index:
        views = image_samples(folder / entry["file"], spec, crops=dataset.augment.crops, flips=dataset.augment.flips)
        samples += views
        labels += [entry.get("label")] * len(views)
    if not samples:
        raise ConfigError(f"dataset has no images (looked in {folder})",
                          hint=f"image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))}")
    samples, labels = samples[: dataset.limit], labels[: dataset.limit]
    return np.stack(samples), (labels if any(label is not None for label in labels) else None), None


def photos(dataset: Dataset, folder: Path | None, spec: InputSpec) -> list[int]:
    """For each sample `build` makes, the index of the image it was cut from: crops and flips of one photo are
    not independent samples. Samples of an .npy file or of noise count as their own images."""
    if dataset.synthetic:
        return list(range(dataset.synthetic))
    index = json.loads((folder / "index.json").read_text())
    if dataset.npy:
        return list(range(len(np.load(folder / index[0]["file"], mmap_mode="r"))))[: dataset.limit]
    from PIL import Image

    out = []
    for i, entry in enumerate(index):
        with Image.open(folder / entry["file"]) as img:
            out += [i] * len(views(img.width, img.height, spec, crops=dataset.augment.crops, flips=dataset.augment.flips))
    return out[: dataset.limit]


def build_boxes(dataset: Dataset, folder: Path, spec: InputSpec) -> list[list[Box]] | None:
    """Each sample's ground-truth boxes, in its view (the samples `build` makes), or None when the dataset gives no boxes.

    `folder/index.json` gives each image's boxes as [[class, xmin, ymin, xmax, ymax], ...] (none: no object)."""
    if not dataset.boxed:
        return None
    from PIL import Image

    per_sample = []
    for entry in json.loads((folder / "index.json").read_text()):
        boxes = [Box(int(b[0]), *b[1:]) for b in entry.get("boxes") or []]
        with Image.open(folder / entry["file"]) as img:
            made = views(img.width, img.height, spec, crops=dataset.augment.crops, flips=dataset.augment.flips)
        per_sample += [view_boxes(boxes, view) for view in made]
    return per_sample[: dataset.limit]
