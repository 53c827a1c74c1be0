"""compile.vela for real: a full-int8 TFLite compiled for Ethos-U55-256, its estimate parsed,
and the estimate standing in for a benchmark that no CPU can run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builder import formats
from builder.host import inputs
from builder.host.catalog import load_recipe, load_target
from builder.host.planner import make_plan
from builder.records import VariantResult
from builder.stage import execute
from builder.stage.runtimes import runtime_class
from builder.workdir import PLAN

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The arm-npu plan's toolchain stage for the int8 variant: Keras -> int8 TFLite -> Vela."""
    workdir = tmp_path_factory.mktemp("arm-npu")
    recipe = load_recipe(TINY, "arm-npu")
    source = inputs.materialize(recipe, workdir).source
    plan = make_plan(recipe, load_target("arm-npu"), variants=["int8"], source=source)
    (workdir / PLAN).write_text(json.dumps(plan.to_json()))
    records = {r["kind"] + "-" + str(r["variant"]): r for r in execute.run_stage(workdir, "toolchain")}
    record = records["compile.vela-int8"]
    assert record["status"] == "ok", [(r["id"], r["status"], r.get("error")) for r in records.values()]
    call = next(s for s in plan.steps if s.kind == "benchmark" and s.variant == "int8")
    return workdir, plan, record, call


def _files(workdir, call) -> dict[str, Path]:
    return {name: workdir / rel for name, rel in call.inputs.items()}


def test_vela_compiles_every_op_for_the_npu_and_estimates_it(compiled):
    workdir, plan, record, _ = compiled
    estimate = record["result"]["vela"]
    assert estimate["accelerator"] == "Ethos_U55_256"
    assert estimate["npu_operators"] > 0 and estimate["cpu_operators"] == 0
    assert 0 < estimate["inference_ms"] < 1000 and estimate["cycles_total"] > 0 and estimate["macs"] > 0
    assert estimate["inferences_per_second"] == pytest.approx(1000.0 / estimate["inference_ms"], rel=1e-6)
    artifact = workdir / plan.artifacts["int8"]
    assert artifact.name.endswith("_vela.tflite") and formats.of_file(artifact.name).name == "vela"
    assert b"ethos-u" in artifact.read_bytes()  # the NPU command stream is one custom op


def test_the_benchmark_of_a_vela_artifact_is_the_marked_estimate(compiled):
    workdir, plan, record, call = compiled
    assert call.params["runtime"] == "ethos-u"  # the target's runtime, for its own format
    result = runtime_class("ethos-u").estimate(_files(workdir, call))
    assert result["estimate"] is True and result["runtime"] == "vela-estimate"
    assert result["p50_ms"] == pytest.approx(record["result"]["vela"]["inference_ms"])
    assert result["size_bytes"] == (workdir / plan.artifacts["int8"]).stat().st_size


def test_the_estimate_is_a_benchmark_record_with_velas_own_figures_in_its_section(compiled):
    from builder.host.report import _other_measurements, backend_sections
    from builder.records import BenchmarkResult, check_result

    workdir, plan, record, call = compiled
    result = runtime_class("ethos-u").estimate(_files(workdir, call))
    check_result("benchmark", {"benchmark": result})
    bench = BenchmarkResult.model_validate(result)
    assert (bench.estimated_by, bench.estimated_for) == ("Vela", "NPU")
    assert bench.extra["vela"].accelerator == "Ethos_U55_256" == record["result"]["vela"]["accelerator"]
    assert bench.extra["vela"].macs == record["result"]["vela"]["macs"] > 0
    variant = VariantResult(name="int8", artifact=plan.artifacts["int8"], format="vela", precision="int8",
                            io_dtype="int8", status="ok", benchmark=bench)
    assert _other_measurements([variant]) == ["- int8: timings are Vela's estimate for the NPU, not a measurement"]
    assert backend_sections([variant])[0].rows[0][:2] == ["int8", "Ethos_U55_256"]


def test_validation_stands_in_the_int8_tflite_that_vela_compiled(compiled):
    from builder.stage.runtimes import load

    workdir, plan, _, call = compiled
    stand_in = runtime_class("ethos-u").stand_in(_files(workdir, call))
    session = load(stand_in)
    assert session.inputs[0].dtype == "int8" and formats.of_file(stand_in.name).name == "tflite"
    sample = np.load(workdir / "work" / "data" / "validation.npy")[0]
    assert session.run([sample])[0].shape[-1] == 1000


def test_every_file_the_toolchain_steps_write_is_under_a_declared_output(compiled):
    from builder.workdir import INPUTS, LOGS, RECORDS, SOURCE_DIR, VERSIONS

    workdir, plan, _, _ = compiled
    declared = [rel for call in plan.steps for rel in call.outputs.values()]
    declared += [PLAN, LOGS, RECORDS, VERSIONS, SOURCE_DIR, INPUTS]  # the driver's, not the steps'
    written = [str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file()]
    stray = [rel for rel in written if not any(rel == d or rel.startswith(d + "/") for d in declared)]
    assert stray == []
    assert (workdir / "work/vela/tiny-mobilenet_int8_vela.estimate.json").is_file()


def test_the_npus_profile_is_velas_estimate_per_layer(compiled):
    import logging

    from builder.stage import profiling

    workdir, plan, record, call = compiled
    assert len(json.loads((workdir / call.inputs["estimate"]).read_text())["per_layer"]) > 20  # kept by compile.vela
    measured = profiling.profiler_of("ethos-u")(workdir / call.inputs["model"], _files(workdir, call),
                                                profiling.ProfileSpec(threads=2, runs=1, warmup=0), logging.getLogger())
    profile = profiling.record(measured)
    assert profile["estimate"] and profile["runs"] == 0 and len(profile["layers"]) > 20
    # Vela's cycles per layer add up to its whole-network estimate
    assert profile["total_ms"] == pytest.approx(record["result"]["vela"]["inference_ms"], rel=1e-3)
    assert {x["unit"] for x in profile["layers"]} == {"NPU"} and {x["precision"] for x in profile["layers"]} == {"int8"}
    assert measured.shown_on == workdir / call.inputs["compiled_from"]  # its layers are the int8 TFLite's ops
