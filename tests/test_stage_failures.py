"""No false "ok": a stage that dies leaves its remaining steps failed with the cause, a variant is ok only
with every step's record, and a variant with no validation data is "not validated"."""

from __future__ import annotations

import csv
import json
import os
import re
import textwrap
from pathlib import Path

from click.testing import CliRunner

from builder import records
from builder.host import catalog
from builder.host.cli import cli
from builder.host.planner import make_plan
from builder.host.report import variant_results

HERE = Path(__file__).parent
TINY = HERE / "recipes" / "tiny-mobilenet.yaml"

# In the device stage's process only: the disk fills up as the second step's record is written.
DISK_FULL = textwrap.dedent('''
    import errno, os, sys
    import builder.records as records

    _write, _count = records.write_record, []

    def write_record(path, record):
        if "device" in sys.argv:
            _count.append(path)
            if len(_count) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return _write(path, record)

    records.write_record = write_record
''')


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def quick_recipe(folder: Path, *, data: bool = True) -> Path:
    text = TINY.read_text().replace("benchmark: {threads: 2, warmup: 2, runs: 10}", "benchmark: {warmup: 1, runs: 3}")
    if not data:  # no validation set, and no calibration set for validation to reuse: fp32 only
        text = re.sub(r"^(validation|calibration): .*\n", "", text, flags=re.M)
        text = re.sub(r"^variants:\n(  .*\n)+", "variants:\n  fp32: {}\n", text, flags=re.M)
    recipe = folder / "tiny.yaml"
    recipe.write_text(text)
    return recipe


def test_a_stage_that_dies_midway_leaves_its_remaining_steps_failed_with_the_cause(tmp_path, monkeypatch):
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(DISK_FULL)
    inject = [str(tmp_path / "inject"), *filter(None, [os.environ.get("PYTHONPATH")])]  # a checkout's builder/ stays
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(inject))  # the stage's own process, not this one
    code, output = run("run", str(quick_recipe(tmp_path)), "-t", "x86-tflite", "--runner", "local",
                       "--out", str(tmp_path / "o"), "--variant", "fp32")
    assert code == 1, output
    assert "Traceback" not in output and "device stage died" in output
    workdir = tmp_path / "o" / "tiny-mobilenet" / "x86-tflite"
    plan = json.loads((workdir / "plan.json").read_text())
    recs = records.read_records(workdir / "work" / "records")
    assert {s["id"] for s in plan["steps"]} == set(recs)  # every step has its record
    died = [r for r in recs.values() if r.cause == "stage-died"]
    assert died and all(r.status == "failed" and "No space left on device" in "\n".join(r.log_tail) for r in died)
    fp32 = json.loads((workdir / "results.json").read_text())["variants"][0]
    assert fp32["status"] == "failed" and fp32["failure"]["cause"] == "disk-full"
    assert "disk-full" in (workdir / "report.md").read_text()


def test_a_variant_without_every_steps_record_is_not_ok(tmp_path):
    plan = make_plan(catalog.load_recipe(TINY, "x86-tflite"), catalog.load_target("x86-tflite"), variants=["fp32"])
    left_out = next(c.id for c in plan.steps if c.kind == "benchmark")
    for call in plan.steps:
        if call.id != left_out:
            records.write_record(tmp_path / f"{call.id}.json", {
                "id": call.id, "kind": call.kind, "stage": call.stage, "variant": call.variant, "outputs": {},
                "status": "ok", "seconds": 0.1})
    fp32 = variant_results(plan, records.read_records(tmp_path))[0]
    assert fp32.status == "failed"
    assert fp32.failure.cause == "no-record" and fp32.failure.step == left_out


def test_a_variant_with_no_validation_data_is_not_validated_never_ok(tmp_path):
    code, output = run("run", str(quick_recipe(tmp_path, data=False)), "-t", "x86-tflite", "--runner", "local",
                       "--out", str(tmp_path / "o"), "--variant", "fp32")
    assert code == 0, output  # reported, as an undecided gate is, not failed
    workdir = tmp_path / "o" / "tiny-mobilenet" / "x86-tflite"
    results = json.loads((workdir / "results.json").read_text())
    assert results["variants"][0]["status"] == "not-validated"
    assert results["recommendation"].get("variant") is None
    assert results["recommendation"]["flags"]["fp32"] == ["not validated"]
    with open(workdir / "results.csv") as fh:
        assert next(csv.DictReader(fh))["status"] == "not-validated"
    report = (workdir / "report.md").read_text()
    assert "| fp32 | not-validated |" in report and "not validated" in report
