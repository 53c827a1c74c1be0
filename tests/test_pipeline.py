"""The TFLite pipeline end to end with the local runner, on a real Keras MobileNetV2 graph."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from builder.host.cli import cli

HERE = Path(__file__).parent
TINY = HERE / "recipes" / "tiny-mobilenet.yaml"

pytestmark = pytest.mark.slow


def run_cli(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code, output = run_cli("run", str(TINY), "--target", "x86-tflite", "--runner", "local", "--out", str(out))
    assert code == 0, output
    return out / "tiny-mobilenet" / "x86-tflite", output


def test_every_variant_has_an_artifact_and_the_documented_files(tiny_run):
    workdir, output = tiny_run
    assert "runner: local" in output
    for name in ("manifest.json", "results.json", "results.csv", "report.md", "logs"):
        assert (workdir / name).exists(), name
    for variant in ("fp32", "fp16", "dynamic", "int8", "int8-uint8"):
        assert (workdir / f"tiny-mobilenet_{variant}.tflite").stat().st_size > 100_000


def test_the_console_shows_our_lines_and_the_tools_output_goes_to_the_step_logs(tiny_run):
    workdir, output = tiny_run
    noise = ("absl::InitializeLog", "cudart_stub", "oneDNN custom operations", "tensorflow/core", "WARNING: All log")
    assert not [line for line in output.splitlines() if any(n in line for n in noise)], output
    logs = "".join(p.read_text(errors="replace") for p in (workdir / "logs").glob("*.log"))
    assert any(n in logs for n in noise), "TensorFlow said nothing: the check above proves nothing"


def test_manifest_accounts_for_every_artifact(tiny_run):
    workdir, _ = tiny_run
    manifest = json.loads((workdir / "manifest.json").read_text())
    from builder.util import sha256_file

    assert {a["variant"] for a in manifest["artifacts"]} == {"fp32", "fp16", "dynamic", "int8", "int8-uint8"}
    for artifact in manifest["artifacts"]:
        path = workdir / artifact["path"]
        assert artifact["sha256"] == sha256_file(path) and artifact["size"] == path.stat().st_size
        assert artifact["format"] == "tflite"
    assert manifest["recipe"]["sha256"] and manifest["target"]["id"] == "x86-tflite"
    assert manifest["runner"] == "local"
    assert manifest["tool_versions"]["toolchain"]["packages"]["tensorflow"]
    assert manifest["tool_versions"]["device"]["packages"]["ai-edge-litert"]
    assert all(step["status"] == "ok" and step["seconds"] >= 0 for step in manifest["steps"])
    assert {"fetch_s", "toolchain_s", "device_s", "total_s"} <= set(manifest["timings"])


def test_results_have_benchmark_and_validation_per_variant(tiny_run):
    workdir, _ = tiny_run
    results = json.loads((workdir / "results.json").read_text())
    by_name = {v["name"]: v for v in results["variants"]}
    for v in by_name.values():
        bench = v["benchmark"]
        assert bench["runtime"] == "litert" and bench["threads"] == 2 and bench["runs"] >= 10
        assert 0 < bench["p50_ms"] <= bench["p90_ms"] <= bench["p99_ms"]
        assert bench["throughput_fps"] > 0 and bench["peak_rss_mb"] > 0 and bench["emulated"] is False
        val = v["validation"]
        assert val["reference"] == "tiny-mobilenet_fp32.tflite" and val["samples"] == 8
        assert {"top1_agreement", "top5_agreement", "cosine", "max_abs_error", "snr_db"} <= set(val)
    assert by_name["fp32"]["validation"]["top1_agreement"] == 1.0
    assert by_name["int8"]["io_dtype"] == "int8" and by_name["int8-uint8"]["io_dtype"] == "uint8"
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert [r["variant"] for r in rows] == list(by_name)


def test_int8_io_tensors_really_are_int8_and_uint8(tiny_run):
    workdir, _ = tiny_run
    from builder.stage.runtimes import load

    for variant, dtype in (("int8", "int8"), ("int8-uint8", "uint8"), ("fp32", "float32")):
        session = load(workdir / f"tiny-mobilenet_{variant}.tflite")
        assert session.inputs[0].dtype == dtype and session.outputs[0].dtype == dtype
        raw = session.run_raw(session.example_inputs())
        assert raw[0].dtype == np.dtype(dtype)


def test_synthetic_data_warns_loudly(tiny_run):
    workdir, _ = tiny_run
    assert "SYNTHETIC" in (workdir / "report.md").read_text()
    assert any("SYNTHETIC" in w for w in json.loads((workdir / "manifest.json").read_text())["warnings"])


def test_a_missed_gate_fails_the_run_and_says_by_how_much(tmp_path):
    recipe = tmp_path / "gated.yaml"
    text = TINY.read_text().replace("benchmark: {threads: 2, warmup: 2, runs: 10}",
                                    "benchmark: {threads: 2, warmup: 1, runs: 3}")
    text = re.sub(r"^gates: .*$", "gates: {min_snr_db: 1000}", text, flags=re.M)
    recipe.write_text(text)
    code, output = run_cli("run", str(recipe), "-t", "x86-tflite", "--runner", "local", "--out", str(tmp_path / "o"),
                           "--variant", "dynamic")
    assert code == 1
    assert "accuracy gate(s) missed" in output and "min_snr_db" in output and "missed by" in output
    results = json.loads((tmp_path / "o" / "tiny-mobilenet" / "x86-tflite" / "results.json").read_text())
    assert {v["name"]: v["status"] for v in results["variants"]}["dynamic"] == "gate-failed"


def test_a_failed_step_is_isolated_classified_and_exits_1(tmp_path):
    """int8 calibration data of the wrong shape: int8 fails with a cause, fp32 still builds."""
    np.save(tmp_path / "wrong.npy", np.zeros((4, 32, 32, 3), np.float32))
    recipe = tmp_path / "broken.yaml"
    text = TINY.read_text().replace("calibration: {synthetic: 16}", "calibration: {npy: wrong.npy}")
    recipe.write_text(text.replace("benchmark: {threads: 2, warmup: 2, runs: 10}", "benchmark: {warmup: 1, runs: 3}"))
    code, output = run_cli("run", str(recipe), "-t", "x86-tflite", "--runner", "local", "--out", str(tmp_path / "o"),
                           "--variant", "int8")
    assert code == 1 and "Traceback" not in output
    workdir = tmp_path / "o" / "tiny-mobilenet" / "x86-tflite"
    results = {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}
    assert results["fp32"]["status"] == "ok"
    assert results["int8"]["status"] in ("failed", "skipped") and results["int8"]["failure"]["cause"]
    assert "int8" in (workdir / "report.md").read_text().split("## Failures")[1]
    assert not (workdir / "tiny-mobilenet_int8.tflite").exists()


def test_a_rerun_never_trusts_old_files(tiny_run, tmp_path):
    workdir, _ = tiny_run
    stale = tmp_path / "tiny-mobilenet" / "x86-tflite"
    shutil.copytree(workdir, stale)
    (stale / "tiny-mobilenet_fp16.tflite").write_bytes(b"half-written")
    code, output = run_cli("run", str(TINY), "-t", "x86-tflite", "--runner", "local", "--out", str(tmp_path),
                           "--variant", "fp32")
    assert code == 0, output
    assert not (stale / "tiny-mobilenet_fp16.tflite").exists()
