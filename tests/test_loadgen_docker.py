"""The quickstart with `benchmark.scenario: single-stream` on x86-tflite through the docker runner: LoadGen runs
inside the device image, and its VALID summary, p90 and query count reach report.md, report.html and
results.json.

min_query_count 256 and min_duration_ms 2000 keep it short (EfficientNet-Lite0 takes ~10 ms a query on two
threads, so the 256 queries take about as long as the 2 s): VALID by LoadGen's rules for these settings (the
recipe default is 1024 queries and 10 s; an MLPerf submission's 600 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from builder.stage import loadgen

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "efficientnet-lite0.yaml"
SETTINGS = {"scenario": "single-stream", "min_query_count": 256, "min_duration_ms": 2000}

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def single_stream_run(docker_engine, base_image, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loadgen-docker")
    recipe = yaml.safe_load(QUICKSTART.read_text())
    recipe["variants"] = {"fp32": {}, "int8": {}}
    recipe["benchmark"] |= SETTINGS
    path = folder / "efficientnet-lite0.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    command = ["run", str(path), "-t", "x86-tflite", "--runner", "docker", "--out", str(folder / "out"),
               "--remeasure"]  # the conversions may come from the step cache; the benchmarks run here
    proc = subprocess.run([sys.executable, "-m", "builder.host.cli", *command], capture_output=True, text=True,
                          timeout=3600, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return folder / "out" / "efficientnet-lite0" / "x86-tflite"


def test_loadgen_ran_in_the_device_image_and_its_summary_is_valid(single_stream_run):
    results = json.loads((single_stream_run / "results.json").read_text())
    report = (single_stream_run / "report.md").read_text()
    page = (single_stream_run / "report.html").read_text()
    for variant in results["variants"]:
        figures = variant["benchmark"]["loadgen"]
        summary, detail = (single_stream_run / log for log in figures["logs"])
        assert "Result is : VALID" in summary.read_text() and detail.stat().st_size > 0  # LoadGen's own files
        assert loadgen.parse(summary, detail)["query_count"] == figures["query_count"] >= 256
        assert (figures["scenario"], figures["validity"], figures["available"]) == ("single-stream", "VALID", True)
        assert figures["settings"]["min_duration_ms"] == 2000 and figures["settings"]["min_query_count"] == 256
        assert figures["percentile_latency_ms"] == figures["p90_ms"] > 0 and figures["early_stopping_ms"] > 0
        p90 = f"p90 {figures['p90_ms']:.3f} ms"
        for text in (report, page):
            assert "VALID" in text and p90 in text and str(figures["query_count"]) in text
    assert "quick harness" in report and "quick harness" in page
