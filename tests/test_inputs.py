"""Host-side fetching of a recipe's model and data, against a real local HTTP server."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builder import inputs
from builder.catalog import load_recipe
from builder.errors import FetchError

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


def test_model_and_images_land_in_the_work_dir_with_sources_recorded(tmp_path, server, cache):
    recipe = load_recipe(write_recipe(tmp_path, server))
    got = inputs.materialize(recipe, tmp_path / "w")
    # saved under the name the first mirror gives it (or `filename:`), so the plan knows it up front
    assert (tmp_path / "w" / "work" / "source" / "missing.tflite").read_bytes() == MODEL
    model = next(f for f in got.fetched if f["role"] == "model")
    assert model["url"] == f"{server}/model.tflite" and model["from_cache"] is False
    index = json.loads((tmp_path / "w" / "work" / "inputs" / "validation" / "index.json").read_text())
    assert index == [{"file": "000_img2.png", "label": 3, "boxes": None}]
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
