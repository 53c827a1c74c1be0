"""recipes x targets in parallel, with one status report over all of them (seed 002's report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.host.cli import cli

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"

pytestmark = pytest.mark.slow


def test_matrix_runs_in_parallel_and_reports_successes_and_classified_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_BUILDER_CACHE", str(tmp_path / "cache"))
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(
        "name: unreachable\n"
        "source: {download: {urls: ['http://127.0.0.1:9/model.tflite'], allowlist: [example.com]}}\n"
        "input: {shape: [1, 8, 8, 3]}\n"
        "variants: [fp32]\n"
    )
    result = CliRunner().invoke(cli, ["run", str(TINY), str(unreachable), "-t", "x86-tflite", "-t", "openvino",
                                      "--runner", "local", "--variant", "fp32", "-j", "2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    rows = json.loads((tmp_path / "o" / "status.json").read_text())
    ok = {(r["recipe"], r["target"]) for r in rows if r["status"] == "ok"}
    assert ok == {("tiny-mobilenet", "x86-tflite"), ("tiny-mobilenet", "openvino")}
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["target"] for r in failed} == {"x86-tflite", "openvino"}
    assert all(r["cause"] == "allowlist" and r["hint"] for r in failed)
    status = (tmp_path / "o" / "status.md").read_text()
    assert "2 succeeded, 2 did not" in status and "allowlist" in status
    assert (tmp_path / "o" / "tiny-mobilenet" / "openvino" / "tiny-mobilenet_fp32.xml").exists()
