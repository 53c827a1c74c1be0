"""builder.stage.device_check, the check inside a device image, run here on each CPU runtime's tiny model: the runtime
declares which tiny model it runs (an NPU's image runs its CPU baseline's) and which tools it found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.stage import device_check


@pytest.mark.parametrize("runtime, runs_in", [("litert", "litert"), ("ethos-u", "litert"), ("onnxruntime", "onnxruntime"),
                                              ("openvino", "openvino")])
def test_each_runtime_runs_its_tiny_model(tmp_path, runtime, runs_in):
    result = device_check.check(runtime, tmp_path, [])
    assert result["ok"] and result["runtime"] == runs_in and result["ms"] > 0, result


def test_the_tensorrt_check_builds_its_engine_with_the_targets_device_step_first(capsys):
    """No TensorRT here: the check fails inside convert.tensorrt, the step the jetson target runs on the device."""
    assert device_check.main("tensorrt", ["convert.tensorrt"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert not result["ok"] and "TensorRT" in result["error"], result


def test_run_as_a_module_it_finds_the_tiny_model_a_backend_registered():
    """`builder devices --check` runs `python -m builder.stage.device_check`: the TFLite model is LiteRT's, registered
    with builder.stage.device_check, which __main__ is not."""
    proc = subprocess.run([sys.executable, "-m", "builder.stage.device_check", "ethos-u"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    result = json.loads(proc.stdout.splitlines()[-1])
    assert proc.returncode == 0 and result["ok"] and result["runtime"] == "litert" and result["ms"] > 0, result


def test_a_format_without_a_tiny_model_checks_the_image_only(tmp_path, monkeypatch):
    monkeypatch.delitem(device_check.TINY, "tflite")
    result = device_check.check("litert", tmp_path, [])
    assert result == {"ok": True, "note": "no tiny tflite model for runtime litert: only the image was checked"}
