"""builder.stage.datasets on real photos (scikit-image's sample data): preprocessing math, layouts, crops, flips."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builder.config.recipe import Dataset, InputSpec
from builder.errors import ConfigError
from builder.stage import datasets

PHOTOS = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"
COFFEE = PHOTOS / "coffee.png"  # 600 x 400 RGB


def pixels(path: Path, mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert(mode), dtype=np.float32)


def spec(**fields) -> InputSpec:
    return InputSpec(**{"shape": [1, 224, 224, 3], **fields})


def test_the_photo_is_what_the_tests_assume():
    assert pixels(COFFEE).shape == (400, 600, 3)


def test_shape_and_layout():
    (nhwc,) = datasets.image_samples(COFFEE, spec())
    (nchw,) = datasets.image_samples(COFFEE, spec(shape=[1, 3, 224, 224], layout="NCHW"))
    assert nhwc.shape == (224, 224, 3) and nchw.shape == (3, 224, 224)
    assert nhwc.dtype == nchw.dtype == np.float32 and nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw, nhwc.transpose(2, 0, 1))


def test_mean_and_std_per_channel():
    # Same size as the photo: no resampling, so every value is (pixel - mean) / std exactly.
    s = spec(shape=[1, 400, 600, 3], resize="stretch", mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 8.0])
    (x,) = datasets.image_samples(COFFEE, s)
    raw = pixels(COFFEE)
    y, col = 123, 456
    assert x[y, col].tolist() == pytest.approx([(raw[y, col, c] - m) / d for c, (m, d) in enumerate([(10, 2), (20, 4), (30, 8)])])
    np.testing.assert_allclose(x, (raw - [10, 20, 30]) / [2, 4, 8], rtol=1e-6)


def test_scalar_mean_std_and_stretch_resize():
    (x,) = datasets.image_samples(COFFEE, spec(resize="stretch", mean=127.5, std=127.5))
    assert x.shape == (224, 224, 3) and -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0


def test_crops_are_center_then_corners():
    # Crop size = the shorter side and crop_fraction 1: no resize, so the crops are plain slices of the photo.
    s = spec(shape=[1, 400, 400, 3], crop_fraction=1.0)
    views = datasets.image_samples(COFFEE, s, crops=5)
    raw = pixels(COFFEE)
    assert len(views) == 5
    for view, left in zip(views, [100, 0, 200, 0, 200]):
        np.testing.assert_array_equal(view, raw[:, left:left + 400])
    assert len(datasets.image_samples(COFFEE, s, crops=7)) == 7


def test_flips_double_the_samples():
    views = datasets.image_samples(COFFEE, spec(), crops=3, flips=True)
    assert len(views) == 6
    for original, flipped in zip(views[:3], views[3:]):
        np.testing.assert_array_equal(flipped, original[:, ::-1])


def test_gray_and_bgr():
    (gray,) = datasets.image_samples(COFFEE, spec(shape=[1, 400, 600, 1], color="GRAY", resize="stretch"))
    assert gray.shape == (400, 600, 1)
    np.testing.assert_array_equal(gray[..., 0], pixels(COFFEE, "L"))
    (rgb,) = datasets.image_samples(COFFEE, spec())
    (bgr,) = datasets.image_samples(COFFEE, spec(color="BGR"))
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    (gray_nchw,) = datasets.image_samples(COFFEE, spec(shape=[1, 1, 96, 96], layout="NCHW", color="GRAY"))
    assert gray_nchw.shape == (1, 96, 96)


def test_synthetic_is_seeded_and_warned_about(tmp_path):
    s = spec(shape=[1, 3, 32, 32], layout="NCHW", mean=127.5, std=127.5)
    samples, labels, warning = datasets.build(Dataset(synthetic=4), tmp_path, s)
    again, _, _ = datasets.build(Dataset(synthetic=4), tmp_path, s)
    assert samples.shape == (4, 3, 32, 32) and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, again)
    assert not np.array_equal(samples, datasets.synthetic(s, 4, seed=1))
    assert -1.0 <= samples.min() and samples.max() <= 1.0
    assert labels is None and warning == datasets.SYNTHETIC_WARNING and "not meaningful" in warning


def materialize(folder: Path, entries: list[tuple[str, object]]) -> None:
    """Lay out files the way builder.host.inputs does: copies plus index.json in recipe order."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, _ in entries:
        shutil.copy(PHOTOS / name, folder / name)
    (folder / "index.json").write_text(json.dumps([{"file": name, "label": label} for name, label in entries]))


def test_build_from_files_keeps_order_and_labels(tmp_path):
    materialize(tmp_path, [("coffee.png", 967), ("chelsea.png", [281, 282])])
    dataset = Dataset(files=[{"file": PHOTOS / "coffee.png"}, {"file": PHOTOS / "chelsea.png"}],
                      augment={"crops": 2, "flips": True})
    samples, labels, warning = datasets.build(dataset, tmp_path, spec(shape=[1, 64, 64, 3]))
    assert samples.shape == (8, 64, 64, 3) and warning is None
    assert labels == [967] * 4 + [[281, 282]] * 4
    limited, labels, _ = datasets.build(dataset.model_copy(update={"limit": 3}), tmp_path, spec(shape=[1, 64, 64, 3]))
    assert len(limited) == 3 and labels == [967] * 3


def test_each_sample_knows_the_photo_it_was_cut_from(tmp_path):
    materialize(tmp_path, [("coffee.png", 967), ("chelsea.png", None)])
    dataset = Dataset(files=[{"file": PHOTOS / "coffee.png"}, {"file": PHOTOS / "chelsea.png"}],
                      augment={"crops": 2, "flips": True})
    assert datasets.photos(dataset, tmp_path, spec(shape=[1, 64, 64, 3])) == [0] * 4 + [1] * 4
    assert datasets.photos(dataset.model_copy(update={"limit": 5}), tmp_path, spec()) == [0] * 4 + [1]
    assert datasets.photos(Dataset(synthetic=3), None, spec()) == [0, 1, 2]  # noise: every sample its own


def test_unlabeled_images_have_no_labels(tmp_path):
    materialize(tmp_path, [("rocket.jpg", None)])
    _, labels, _ = datasets.build(Dataset(folder=PHOTOS), tmp_path, spec())
    assert labels is None


def test_no_images_is_a_config_error(tmp_path):
    materialize(tmp_path, [])
    with pytest.raises(ConfigError, match="no images"):
        datasets.build(Dataset(folder=tmp_path), tmp_path, spec())


def test_npy_must_match_the_input_shape(tmp_path):
    npy = tmp_path / "samples.npy"
    np.save(npy, np.zeros((5, 32, 32, 3), dtype=np.float64))
    (tmp_path / "index.json").write_text(json.dumps([{"file": "samples.npy"}]))
    samples, labels, _ = datasets.build(Dataset(npy=npy, limit=4), tmp_path, spec(shape=[1, 32, 32, 3]))
    assert samples.shape == (4, 32, 32, 3) and samples.dtype == np.float32 and labels is None
    with pytest.raises(ConfigError, match=r"shape \(32, 32, 3\), the input spec wants \(3, 32, 32\)"):
        datasets.build(Dataset(npy=npy), tmp_path, spec(shape=[1, 3, 32, 32], layout="NCHW"))
