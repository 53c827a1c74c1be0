"""builder.stage.loadgen: MLCommons LoadGen's scenarios on a real session, its own logs parsed, the record and
the reports carrying its figures beside the quick harness's, and the recipe's settings checked."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import runtime_models as rm
from click.testing import CliRunner

from builder.errors import StepError
from builder.host.cli import cli
from builder.records import BenchmarkResult, LoadGenResult, load_results
from builder.stage import loadgen, runtimes, timing

pytest.importorskip(loadgen.MODULE, reason="MLCommons LoadGen has x86-64 wheels only")

QUICK = {"min_query_count": 64, "min_duration_ms": 300, "target_latency_percentile": 0.9}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    return rm.write_onnx(rm.weights(), tmp_path_factory.mktemp("loadgen") / "tiny.onnx")


def _run(session, scenario: str, folder: Path, **settings) -> dict:
    """LoadGen on the session, its schedule sized from the quick harness's fastest run, as the step does."""
    chosen = loadgen.Settings(scenario=scenario, **(QUICK | settings))
    fastest = timing.measure(session, warmup=2, runs=20)["min_ms"]
    return loadgen.run(session, chosen, expected_ms=fastest, summary=folder / loadgen.SUMMARY,
                       detail=folder / loadgen.DETAIL)


def test_single_stream_runs_loadgen_and_its_logs_give_the_figures(tiny_onnx, tmp_path):
    figures = _run(runtimes.load(tiny_onnx, threads=1), "single-stream", tmp_path)
    assert (tmp_path / loadgen.SUMMARY).is_file() and (tmp_path / loadgen.DETAIL).is_file()
    assert "MLPerf Results Summary" in (tmp_path / loadgen.SUMMARY).read_text()
    assert (figures["scenario"], figures["validity"], figures["valid"]) == ("single-stream", "VALID", True)
    assert figures["min_duration_met"] and figures["min_queries_met"] and figures["early_stopping_met"]
    assert figures["query_count"] >= 64 and figures["errors"] == 0 and figures["version"] == "6.0.17"
    assert 0 < figures["p50_ms"] <= figures["percentile_latency_ms"] == figures["p90_ms"] <= figures["p99_ms"]
    assert figures["early_stopping_ms"] >= figures["p90_ms"]
    assert figures["settings"]["min_query_count"] == 64 and figures["settings"]["min_duration_ms"] == 300
    assert figures["settings"]["target_latency_percentile"] == 0.9
    LoadGenResult.model_validate(figures)


def test_single_stream_reports_the_percentile_asked(tiny_onnx, tmp_path):
    figures = _run(runtimes.load(tiny_onnx, threads=1), "single-stream", tmp_path, target_latency_percentile=0.95)
    assert figures["target_latency_percentile"] == 0.95
    assert "95.0th percentile latency (ns)" in (tmp_path / loadgen.SUMMARY).read_text()
    assert figures["p90_ms"] <= figures["percentile_latency_ms"] <= figures["p99_ms"]


def test_offline_reports_samples_per_second(tiny_onnx, tmp_path):
    figures = _run(runtimes.load(tiny_onnx, threads=1), "offline", tmp_path, min_query_count=200)
    assert (figures["scenario"], figures["validity"]) == ("offline", "VALID")
    assert figures["query_count"] == 1 and figures["settings"]["samples_per_query"] >= 200
    assert figures["samples_per_second"] > 0
    assert "Samples per second" in (tmp_path / loadgen.SUMMARY).read_text()


def test_a_run_too_short_for_its_settings_is_invalid(tiny_onnx, tmp_path):
    # early stopping cannot estimate a p99.9 from 64 queries: LoadGen itself says INVALID
    figures = _run(runtimes.load(tiny_onnx, threads=1), "single-stream", tmp_path, min_duration_ms=0,
                   target_latency_percentile=0.999)
    assert (figures["validity"], figures["valid"], figures["early_stopping_met"]) == ("INVALID", False, False)


def test_a_failing_inference_fails_the_run_after_loadgen_ends(tiny_onnx, tmp_path, monkeypatch):
    session = runtimes.load(tiny_onnx, threads=1)

    def broken(inputs):  # fault injection: each prepared inference fails on its 30th run (the quick one does 22)
        calls = []
        return lambda: calls.append(1) or (len(calls) >= 30 and 1 / 0)

    monkeypatch.setattr(session, "prepared", broken)
    with pytest.raises(StepError, match="inference failed under LoadGen: division by zero"):
        _run(session, "single-stream", tmp_path)


def test_missing_logs_mean_loadgen_did_not_run(tmp_path):
    with pytest.raises(StepError, match="LoadGen did not run"):
        loadgen.parse(tmp_path / loadgen.SUMMARY, tmp_path / loadgen.DETAIL)


# --- through the benchmark step, the record and the reports -------------------------------------------------

RECIPE = """\
name: tiny-lg
source: {{file: {model}}}
input: {{shape: [1, 3, 16, 16], layout: NCHW}}
validation: {{synthetic: 2}}
variants: [fp32]
benchmark: {{threads: 1, warmup: 2, runs: 10, throughput: false, {benchmark}}}
"""


def _recipe(folder: Path, model: Path, benchmark: str) -> Path:
    (folder / model.name).write_bytes(model.read_bytes())  # a recipe reads files below its own folder only
    path = folder / "tiny-lg.yaml"
    path.write_text(RECIPE.format(model=model.name, benchmark=benchmark))
    return path


def _local_run(recipe: Path, out: Path) -> Path:
    result = CliRunner().invoke(cli, ["run", str(recipe), "--target", "openvino", "--runner", "local",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "tiny-lg" / "openvino"


@pytest.mark.parametrize("scenario", ["single-stream", "offline"])
def test_the_benchmark_step_keeps_loadgens_logs_and_the_reports_carry_its_figures(tiny_onnx, tmp_path, scenario):
    recipe = _recipe(tmp_path, tiny_onnx, f"scenario: {scenario}, min_query_count: 100, min_duration_ms: 300")
    workdir = _local_run(recipe, tmp_path / "out")
    bench = load_results(workdir / "results.json").variants[0].benchmark
    assert bench.loadgen is not None and bench.loadgen.scenario == scenario and bench.loadgen.validity == "VALID"
    for log in bench.loadgen.logs:  # LoadGen's own files, beside the artifact: parsed again, they give the record
        assert (workdir / log).is_file() and log.startswith("tiny-lg_fp32_loadgen/")
    again = loadgen.parse(workdir / bench.loadgen.logs[0], workdir / bench.loadgen.logs[1])
    assert again["query_count"] == bench.loadgen.query_count
    assert bench.p50_ms > 0 and bench.runs == 10  # the quick harness's, beside LoadGen's
    report, page = (workdir / "report.md").read_text(), (workdir / "report.html").read_text()
    assert "quick harness" in report and "quick harness" in page
    headline = (f"{bench.loadgen.percentile_latency_ms:.3f}" if scenario == "single-stream"
                else f"{bench.loadgen.samples_per_second:.1f}")
    for text in (report, page):
        assert "LoadGen" in text and "VALID" in text and headline in text and str(bench.loadgen.query_count) in text
    row = next(csv.DictReader((workdir / "results.csv").open()))
    figure = "percentile_latency_ms" if scenario == "single-stream" else "samples_per_second"
    assert (row["loadgen_scenario"], row["loadgen_validity"]) == (scenario, "VALID")
    assert float(row[f"loadgen_{figure}"]) == getattr(bench.loadgen, figure)


def test_without_loadgen_the_result_says_so_and_holds_no_loadgen_figure(tiny_onnx, tmp_path, monkeypatch):
    from builder.host.report import loadgen_section
    from builder.plan import StepCall
    from builder.records import VariantResult, check_result
    from builder.stage.steps.base import StepContext
    from builder.stage.steps.measure import Benchmark

    monkeypatch.setattr(loadgen, "available", lambda: False)  # as in an arm64 image, where it has no wheel
    (tmp_path / "tiny_fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    params = Benchmark.Params(runtime="onnxruntime", threads=1, warmup=1, runs=5, throughput=False,
                              scenario="single-stream")
    inputs = {"model": "tiny_fp32.onnx"}
    call = StepCall(id="01-benchmark-fp32", kind="benchmark", stage="device", variant="fp32", inputs=inputs,
                    outputs=Benchmark.own_outputs(params.model_dump(), inputs))
    result = Benchmark().run(StepContext(tmp_path, call, logging.getLogger("test")), params)
    check_result("benchmark", result)
    bench = BenchmarkResult.model_validate(result["benchmark"])
    assert bench.loadgen.model_dump(exclude_unset=True) == {
        "scenario": "single-stream", "available": False, "note": loadgen.UNAVAILABLE}
    assert bench.p50_ms > 0 and bench.runs == 5  # the quick harness's figures, and no LoadGen figure among them
    assert (tmp_path / "tiny_fp32_loadgen" / "loadgen-not-run.txt").read_text().strip() == loadgen.UNAVAILABLE
    assert not (tmp_path / "tiny_fp32_loadgen" / loadgen.SUMMARY).exists()
    section = loadgen_section([VariantResult(name="fp32", artifact="tiny_fp32.onnx", format="onnx", precision="fp32",
                                             io_dtype="float32", status="ok", benchmark=bench)])
    assert section.rows == [["fp32", "single-stream", "not run", "-", "-", "-", "-", "-"]]
    assert f"fp32: {loadgen.UNAVAILABLE}" in section.markdown()


def test_an_estimate_runs_no_loadgen_and_its_folder_says_why(tiny_onnx, tmp_path, monkeypatch):
    from builder.plan import StepCall
    from builder.stage.steps.base import StepContext
    from builder.stage.steps.measure import Benchmark

    estimate = {"runtime": "onnxruntime", "mean_ms": 1.0, "p50_ms": 1.0, "estimate": True, "estimated_by": "a tool"}
    monkeypatch.setattr(runtimes.runtime_class("onnxruntime"), "estimate", classmethod(lambda cls, files: estimate))
    (tmp_path / "tiny_fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    params = Benchmark.Params(runtime="onnxruntime", scenario="offline")
    inputs = {"model": "tiny_fp32.onnx"}
    call = StepCall(id="01-benchmark-fp32", kind="benchmark", stage="device", variant="fp32", inputs=inputs,
                    outputs=Benchmark.own_outputs(params.model_dump(), inputs))
    assert Benchmark().run(StepContext(tmp_path, call, logging.getLogger("test")), params) == {"benchmark": estimate}
    assert "nothing ran for LoadGen" in (tmp_path / "tiny_fp32_loadgen" / "loadgen-not-run.txt").read_text()


def test_an_old_results_file_without_loadgen_still_loads():
    old = {"runtime": "litert", "mean_ms": 1.0, "p50_ms": 1.0}
    assert BenchmarkResult.model_validate(old).loadgen is None


@pytest.mark.parametrize(("setting", "field"), [
    ("scenario: server", "benchmark.scenario"),
    ("min_query_count: -5", "benchmark.min_query_count"),
    ("min_duration_ms: -1", "benchmark.min_duration_ms"),
    ("target_latency_percentile: 1.5", "benchmark.target_latency_percentile"),
])
def test_bad_loadgen_settings_exit_2_naming_file_and_field(tiny_onnx, tmp_path, setting, field):
    recipe = _recipe(tmp_path, tiny_onnx, setting)
    result = CliRunner().invoke(cli, ["plan", str(recipe), "--target", "openvino"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "tiny-lg.yaml" in result.output and field in result.output, result.output


def test_the_schema_of_results_shows_the_loadgen_section():
    result = CliRunner().invoke(cli, ["schema", "results"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "LoadGenResult" in schema["$defs"] and "loadgen" in schema["$defs"]["BenchmarkResult"]["properties"]
    assert "samples_per_second" in schema["$defs"]["LoadGenResult"]["properties"]


def test_a_target_whose_device_image_has_no_loadgen_is_told_at_plan_time(tiny_onnx, tmp_path):
    recipe = _recipe(tmp_path, tiny_onnx, "scenario: offline")
    planned = CliRunner().invoke(cli, ["plan", str(recipe), "--target", "rpi"])
    assert planned.exit_code == 0, planned.output
    assert "LoadGen is not in" in planned.output and "quick harness" in planned.output
    on_x86 = CliRunner().invoke(cli, ["plan", str(recipe), "--target", "openvino"])
    assert "LoadGen is not in" not in on_x86.output
