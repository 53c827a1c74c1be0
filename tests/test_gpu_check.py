"""bench/gpu_check.sh where no GPU is: its prerequisites refused with the fix, its summary of a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_tensorrt import TRTEXEC_10_3

from builder.backends.tensorrt import trtexec

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.sh"


def gpu_check(*args: str, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_without_a_gpu_it_stops_at_once_naming_what_is_missing(tmp_path):
    proc = gpu_check(str(tmp_path / "out"), path="/usr/bin:/bin")
    assert proc.returncode == 2 and "needs an NVIDIA GPU: nvidia-smi not found" in proc.stderr
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA L4, 550.54.15, 23034 MiB'\n")
    (fake / "nvidia-smi").chmod(0o755)
    proc = gpu_check(str(tmp_path / "out"), path=f"{fake}:/usr/bin:/bin")
    assert proc.returncode == 2 and "NVIDIA L4" in proc.stdout
    assert "needs TensorRT 10.x's Python bindings" in proc.stderr and not (tmp_path / "out").exists()


def run_folder(tmp_path: Path, trtexec_figures: dict) -> Path:
    run = tmp_path / "out" / "efficientnet-lite0" / "jetson"
    run.mkdir(parents=True)
    variants = [{"name": name, "status": "ok", "validation": {"cosine": 0.9991},
                 "benchmark": {"p50_ms": 1.23, "tools": {"trtexec": trtexec_figures},
                               "vs_tools": {"trtexec": {"p50_ratio": 1.022}}}} for name in ("fp32", "fp16", "int8")]
    (run / "results.json").write_text(json.dumps({"variants": variants}))
    return tmp_path / "out"


def test_the_summary_reads_each_engines_figures_and_trtexecs(tmp_path):
    figures = {"tool": "trtexec", **trtexec.parse_trtexec(TRTEXEC_10_3), "compared_field": "p50_ms"}
    proc = gpu_check("--summarize", str(run_folder(tmp_path, figures)), path=os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["fp32", "ok", "p50", "1.230", "ms", "trtexec", "p50", "1.204", "ms", "ours/trtexec",
                                "1.022", "cosine", "0.9991"]
    assert lines[-1] == "gpu check: ok"


def test_the_summary_fails_when_trtexec_gave_no_figures(tmp_path):
    proc = gpu_check("--summarize", str(run_folder(tmp_path, {"error": "trtexec not found"})), path=os.environ["PATH"])
    assert proc.returncode == 1 and "trtexec: trtexec not found" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "gpu check: 3 variant(s) without an ok engine and trtexec figures"
