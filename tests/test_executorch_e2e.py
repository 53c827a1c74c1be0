"""The ExecuTorch backend end to end in its own images: the quickstart built for x86-executorch and x86-tflite in
one matrix with the docker runner, fp32 and int8, each benchmarked and validated, side by side in its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "efficientnet-lite0.yaml"
TARGETS = ("x86-tflite", "x86-executorch")

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def matrix(docker_engine, base_image, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("executorch-matrix")
    proc = subprocess.run([sys.executable, "-m", "builder.host.cli", "run", str(RECIPE), *(f"--target={t}" for t in TARGETS),
                           "--variant=fp32", "--variant=int8", "--runner", "docker", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def _variants(out: Path, target: str) -> dict:
    results = json.loads((out / "efficientnet-lite0" / target / "results.json").read_text())
    return {v["name"]: v for v in results["variants"]}


def test_executorch_builds_runs_and_validates_fp32_and_int8_in_its_own_images(matrix):
    variants = _variants(matrix, "x86-executorch")
    assert set(variants) == {"fp32", "int8"}
    for v in variants.values():
        assert v["status"] == "ok" and v["format"] == "executorch" and v["artifact"].endswith(".pte")
        assert v["benchmark"]["runtime"] == "executorch" and v["benchmark"]["p50_ms"] > 0
    int8 = variants["int8"]["validation"]
    assert int8["photos"] == 125 and int8["top1_agreement_interval"][0] > 0.9  # decided against fp32
    assert variants["int8"]["benchmark"]["size_bytes"] < variants["fp32"]["benchmark"]["size_bytes"] / 3
    manifest = json.loads((matrix / "efficientnet-lite0" / "x86-executorch" / "manifest.json").read_text())
    assert {manifest["images"][role]["lock"] for role in ("toolchain", "device")} == {"executorch-amd64"}


def test_the_matrix_report_shows_executorch_beside_litert(matrix):
    status = (matrix / "status.md").read_text()
    assert all(f"efficientnet-lite0 / {t} / {v}" in status for t in TARGETS for v in ("fp32", "int8"))
    rows = json.loads((matrix / "status.json").read_text())
    assert {r["target"] for r in rows} == set(TARGETS) and all(r["status"] == "ok" for r in rows)
    assert "x86-executorch" in (matrix / "status.html").read_text()
