"""`builder run --profile` through the docker runner: the profile steps run in the x86-tflite device image (LiteRT
and its flatbuffer schema, no TensorFlow), after the benchmarks, and their tables reach results.json, report.md,
the CSVs and the Model Explorer node data copied back from the container."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.records import load_results

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "efficientnet-lite0.yaml"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def profiled(docker_engine, base_image, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profiled")
    proc = subprocess.run([sys.executable, "-m", "builder.host.cli", "run", str(RECIPE), "-t", "x86-tflite",
                           "--runner", "docker", "--out", str(out), "--profile", "--variant", "int8"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out / "efficientnet-lite0" / "x86-tflite"


def test_profiles_run_in_the_device_image_after_the_benchmarks(profiled):
    steps = json.loads((profiled / "manifest.json").read_text())["steps"]
    kinds = [(s["name"], s["stage"], s["status"]) for s in steps]
    profiles = [k for k in kinds if k[0] == "profile"]
    assert sorted(profiles) == [("profile", "device", "ok")] * 2  # fp32 (the reference) and int8
    assert max(i for i, k in enumerate(kinds) if k[0] == "benchmark") < kinds.index(profiles[0])


def test_the_tables_reach_results_json_and_report_md(profiled):
    variants = {v.name: v for v in load_results(profiled / "results.json").variants}
    for name in ("fp32", "int8"):
        profile = variants[name].profile
        assert profile is not None and len(profile.layers) > 50 and profile.partitions == 1
        assert profile.vs_p50 is not None and (0.8 <= profile.vs_p50 <= 1.2 or profile.why)
        assert (profiled / f"profile_{name}.csv").is_file()
        assert (profiled / f"efficientnet-lite0_{name}.time.node_data.json").is_file()
    assert {x.precision for x in variants["int8"].profile.layers if x.op_type == "CONV_2D"} == {"int8"}
    md = (profiled / "report.md").read_text()
    assert "## Where the time goes (per-layer profile)" in md and "Slowest layers of `int8`:" in md
    assert "### `int8` against fp32, layer by layer" in md
    assert "--node_data_paths=efficientnet-lite0_int8.time.node_data.json" in md
