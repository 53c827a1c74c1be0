"""Host-side fetching of a recipe's model and data, against a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builder.errors import ConfigError, FetchError
from builder.host import inputs
from builder.host.catalog import load_recipe

MODEL = b"not really a tflite model, but bytes with a checksum" * 100


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.tflite").write_bytes(MODEL)
    for i in range(3):
        Image.fromarray(np.full((40, 60, 3), i * 80, np.uint8)).save(root / f"img{i}.png")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_BUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGE_BUILDER_ALLOWLIST", raising=False)
    monkeypatch.delenv("DOMAIN_ALLOWLIST", raising=False)


def write_recipe(folder: Path, base: str, *, model: str = "model.tflite") -> Path:
    import hashlib

    recipe = folder / "r.yaml"
    recipe.write_text(f"""
name: fetched
source:
  download:
    urls: [{base}/missing.tflite, {base}/{model}]
    sha256: {hashlib.sha256(MODEL).hexdigest()}
input: {{shape: [1, 8, 8, 3]}}
calibration:
  files:
    - download: {{urls: [{base}/img0.png]}}
    - download: {{urls: [{base}/img1.png]}}
validation:
  files:
    - {{download: {{urls: [{base}/img2.png]}}, label: 3}}
variants: [fp32]
""")
    return recipe


def server_root(tmp_path: Path) -> Path:
    return tmp_path / "www"


def test_model_and_images_land_in_the_work_dir_with_sources_recorded(tmp_path, server, cache):
    recipe = load_recipe(write_recipe(tmp_path, server))
    got = inputs.materialize(recipe, tmp_path / "w")
    # saved under the name the first mirror gives it (or `filename:`), so the plan knows it up front
    assert (tmp_path / "w" / "work" / "source" / "missing.tflite").read_bytes() == MODEL
    model = next(f for f in got.fetched if f["role"] == "model")
    assert model["url"] == f"{server}/model.tflite" and model["from_cache"] is False
    index = json.loads((tmp_path / "w" / "work" / "inputs" / "validation" / "index.json").read_text())
    assert index == [{"file": "000_img2.png", "label": 3, "boxes": None,
                      "sha256": hashlib.sha256((server_root(tmp_path) / "img2.png").read_bytes()).hexdigest()}]
    assert len(list((tmp_path / "w" / "work" / "inputs" / "calibration").glob("*.png"))) == 2


def test_offline_rerun_uses_the_cache_only(tmp_path, server, cache):
    recipe = load_recipe(write_recipe(tmp_path, server))
    inputs.materialize(recipe, tmp_path / "w1")
    got = inputs.materialize(recipe, tmp_path / "w2", offline=True)
    assert all(f["from_cache"] for f in got.fetched)


def test_unfetchable_model_is_listed_in_missing_txt(tmp_path, server, cache):
    recipe = load_recipe(write_recipe(tmp_path, server, model="also-missing.tflite"))
    with pytest.raises(FetchError):
        inputs.materialize(recipe, tmp_path / "w")
    missing = (tmp_path / "w" / "missing.txt").read_text()
    assert "model:missing.tflite" in missing and "also-missing.tflite" in missing


def test_offline_miss_is_listed_too(tmp_path, server, cache):
    recipe = load_recipe(write_recipe(tmp_path, server))
    with pytest.raises(FetchError, match="offline"):
        inputs.materialize(recipe, tmp_path / "w", offline=True)
    assert "model:" in (tmp_path / "w" / "missing.txt").read_text()


def test_fallback_source_is_used_when_every_mirror_fails(tmp_path, server, cache):
    recipe_path = write_recipe(tmp_path, server, model="gone.tflite")
    text = recipe_path.read_text().replace("input:", f"fallback:\n  download: {{urls: [{server}/model.tflite]}}\ninput:")
    recipe_path.write_text(text)
    got = inputs.materialize(load_recipe(recipe_path), tmp_path / "w")
    assert got.source.download.urls == [f"{server}/model.tflite"]
    assert any("fallback" in w for w in got.warnings)


def photo_wheel(folder: Path, photos: dict[str, bytes]) -> Path:
    """A real wheel of photos (as ai-benchmark or foolbox ship theirs), for pip to download from a local folder."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "photo_fixture-1.0-py3-none-any.whl"
    info = "photo_fixture-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in photos.items():
            z.writestr(f"photo_fixture/data/{name}", data)
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: photo-fixture\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


def png(value: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def photo_index(tmp_path, monkeypatch):
    """pip finds the photo wheel in a local folder and nowhere else."""
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return tmp_path / "wheels"


PHOTO_RECIPE = """
name: globbed
source: {{download: {{urls: [{base}/model.tflite]}}}}
input: {{shape: [1, 8, 8, 3]}}
calibration:
  files: [{{pip: {{package: photo-fixture, version: "1.0", member: "photo_fixture/data/cal_*.png"}}}}]
validation:
  files:
    - {{pip: {{package: photo-fixture, version: "1.0", member: "photo_fixture/data/imagenet_*.png"}},
       label_from_name: 'imagenet_\\d+_(\\d+)\\.png'}}
variants: [fp32]
"""


def test_a_pip_glob_takes_every_matching_photo_with_its_label_from_the_name(tmp_path, server, cache, photo_index):
    photo_wheel(photo_index, {"cal_0.png": png(10), "cal_1.png": png(20), "imagenet_00_243.png": png(30),
                              "imagenet_01_559.png": png(40), "readme.txt": b"not a photo"})
    (tmp_path / "r.yaml").write_text(PHOTO_RECIPE.format(base=server))
    recipe = load_recipe(tmp_path / "r.yaml")
    assert inputs.planned_images(recipe.validation) is None  # not fetched yet: the plan cannot count them
    got = inputs.materialize(recipe, tmp_path / "w")
    assert inputs.planned_images(recipe.validation) == 2 and inputs.planned_images(recipe.calibration) == 2
    index = json.loads((tmp_path / "w" / "work" / "inputs" / "validation" / "index.json").read_text())
    assert [(e["file"], e["label"]) for e in index] == [("000_imagenet_00_243.png", 243), ("001_imagenet_01_559.png", 559)]
    calibration = json.loads((tmp_path / "w" / "work" / "inputs" / "calibration" / "index.json").read_text())
    assert [e["file"] for e in calibration] == ["000_cal_0.png", "001_cal_1.png"]
    assert sorted(f["name"] for f in got.fetched if f["role"] == "validation") == ["imagenet_00_243.png",
                                                                                    "imagenet_01_559.png"]


def test_validation_photos_that_calibrated_the_model_are_refused(tmp_path, server, cache, photo_index):
    photo_wheel(photo_index, {"cal_0.png": png(10), "cal_1.png": png(30), "imagenet_00_243.png": png(30)})
    (tmp_path / "r.yaml").write_text(PHOTO_RECIPE.format(base=server))
    with pytest.raises(ConfigError, match="1 validation image.* also calibration images: validation "
                                          "000_imagenet_00_243.png = calibration 001_cal_1.png"):
        inputs.materialize(load_recipe(tmp_path / "r.yaml"), tmp_path / "w")


def test_a_glob_that_matches_nothing_and_a_name_without_a_label_are_clear_errors(tmp_path, server, cache, photo_index):
    photo_wheel(photo_index, {"cal_0.png": png(10), "imagenet_x.png": png(30)})
    (tmp_path / "r.yaml").write_text(PHOTO_RECIPE.format(base=server))
    with pytest.raises(ConfigError, match="finds no class id in 'imagenet_x.png'"):
        inputs.materialize(load_recipe(tmp_path / "r.yaml"), tmp_path / "w")
    (tmp_path / "r.yaml").write_text(PHOTO_RECIPE.format(base=server).replace("cal_*", "none_*"))
    with pytest.raises(FetchError, match="no file of photo-fixture==1.0 matches photo_fixture/data/none_"):
        inputs.materialize(load_recipe(tmp_path / "r.yaml"), tmp_path / "w2")


def test_a_pinned_wheel_with_other_bytes_is_refused(tmp_path, server, cache, photo_index):
    wheel = photo_wheel(photo_index, {"cal_0.png": png(10), "imagenet_00_243.png": png(30)})
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    pinned = PHOTO_RECIPE.format(base=server).replace('member: "photo_fixture/data/cal_*.png"',
                                                      f'member: "photo_fixture/data/cal_*.png", sha256: "{good}"')
    (tmp_path / "r.yaml").write_text(pinned)
    inputs.materialize(load_recipe(tmp_path / "r.yaml"), tmp_path / "w")
    (tmp_path / "r.yaml").write_text(pinned.replace(good, "0" * 64))
    with pytest.raises(FetchError, match=f"the wheel of photo-fixture==1.0 has sha256 {good}, the recipe pins 0000"):
        inputs.materialize(load_recipe(tmp_path / "r.yaml"), tmp_path / "w2")
