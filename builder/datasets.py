"""Images, .npy files or seeded noise -> preprocessed float32 samples in the model's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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


def image_samples(path: Path, spec: InputSpec, *, crops: int = 1, flips: bool = False) -> list[np.ndarray]:
    """Preprocess one image into `crops` (x2 with flips) samples shaped like one model input without batch."""
    from PIL import Image

    height, width = spec.hw
    with Image.open(path) as img:
        img = img.convert("L" if spec.color == "GRAY" else "RGB")
        if spec.resize == "stretch":
            views = [img.resize((width, height), Image.BILINEAR)]
        else:
            scale = max(height, width) / spec.crop_fraction / min(img.size)
            resized = img.resize((max(width, round(img.width * scale)), max(height, round(img.height * scale))), Image.BILINEAR)
            views = [resized.crop(box) for box in _crop_boxes(resized.width, resized.height, width, height, crops)]
    if flips:
        views += [v.transpose(Image.FLIP_LEFT_RIGHT) for v in views]
    return [to_tensor(np.asarray(v, dtype=np.float32), spec) for v in views]


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
