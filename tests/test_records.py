"""Typed records: a real run's results.json is what `builder schema results` says, step records are read through
their models, and a record that does not match its model is a clear error, never a KeyError in the report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_compare import results, variant

from builder.errors import BuilderError, StepError
from builder.host.cli import cli
from builder.records import (
    BenchmarkRecord,
    Results,
    StepRecord,
    ValidateRecord,
    VariantResult,
    as_json,
    check_result,
    load_results,
    write_record,
)
from builder.stage.execute import read_records
from builder.workdir import RECORDS


def results_schema() -> dict:
    result = CliRunner().invoke(cli, ["schema", "results"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def schema_problems(value, schema: dict, defs: dict, where: str = "") -> list[str]:
    """Where `value` breaks `schema`: types, required keys, keys it does not declare (jsonschema is not a
    dependency; this checks the parts of the draft pydantic writes)."""
    if "$ref" in schema:
        return schema_problems(value, defs[schema["$ref"].rsplit("/", 1)[1]], defs, where)
    if "anyOf" in schema:
        tries = [schema_problems(value, option, defs, where) for option in schema["anyOf"]]
        return [] if [] in tries else min(tries, key=len)
    kinds = {"object": dict, "array": (list, tuple), "string": str, "integer": int, "number": (int, float),
             "boolean": bool, "null": type(None)}
    if "type" in schema and not isinstance(value, kinds[schema["type"]]) or (
            isinstance(value, bool) and schema.get("type") in ("integer", "number")):
        return [f"{where or 'top'}: {value!r} is not {schema['type']}"]
    if "const" in schema and value != schema["const"] or "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not allowed"]
    problems = []
    if isinstance(value, dict):
        problems += [f"{where}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties", True))
            if sub is False:
                problems.append(f"{where}.{key}: not in the schema")
            elif isinstance(sub, dict):
                problems += schema_problems(item, sub, defs, f"{where}.{key}")
    if isinstance(value, list):
        items = schema.get("prefixItems") or [schema.get("items", {})] * len(value)
        for i, (item, sub) in enumerate(zip(value, items)):
            problems += schema_problems(item, sub, defs, f"{where}[{i}]")
    return problems


def test_the_schema_command_prints_the_json_schema_of_results_json():
    schema = results_schema()
    assert schema["title"] == "results.json" and schema["type"] == "object"
    assert set(schema["required"]) == {"recipe", "target", "variants"}
    defs = schema["$defs"]
    assert {"VariantResult", "BenchmarkResult", "ValidationResult", "Gate", "Recommendation"} <= set(defs)
    assert defs["VariantResult"]["additionalProperties"] is False  # our own records: a new key is a schema change
    assert "async" in defs["BenchmarkResult"]["properties"]  # the file's key, not the Python name
    tools = defs["BenchmarkResult"]["properties"]["tools"]["anyOf"][0]
    assert tools["additionalProperties"] == {"additionalProperties": True, "type": "object"}  # a vendor tool's own
    assert schema_problems(results(variant("fp32", 10.0)), schema, defs) == []
    assert schema_problems({"recipe": "r", "target": "t", "variants": [{"name": "fp32", "status": "done"}]},
                           schema, defs)  # the checker itself finds problems


@pytest.mark.slow
def test_a_real_runs_results_json_is_what_the_schema_says(tiny_x86_tflite_run):
    payload = json.loads((tiny_x86_tflite_run / "results.json").read_text())
    schema = results_schema()
    assert schema_problems(payload, schema, schema["$defs"]) == []
    loaded = load_results(tiny_x86_tflite_run / "results.json")
    assert as_json(loaded) == payload  # read and written back: the same keys and values
    assert {"fp32", "int8"} <= {v.name for v in loaded.variants}
    assert all(v.benchmark.p50_ms > 0 and v.validation.samples > 0 for v in loaded.variants if v.status == "ok")
    assert loaded.recommendation.variant in {v.name for v in loaded.variants}


@pytest.mark.slow
def test_a_real_runs_step_records_are_read_as_their_models(tiny_x86_tflite_run):
    records = read_records(tiny_x86_tflite_run)
    kinds = {type(r) for r in records.values()}
    assert kinds == {StepRecord, BenchmarkRecord, ValidateRecord}
    bench = next(r for r in records.values() if isinstance(r, BenchmarkRecord))
    assert bench.status == "ok" and bench.result.benchmark.device.device == "host"
    for step_id, record in records.items():  # what was written is what the model reads, key for key
        assert as_json(record) == json.loads((tiny_x86_tflite_run / RECORDS / f"{step_id}.json").read_text()), step_id


def _benchmark_record(**benchmark) -> dict:
    figures = variant("fp32", 10.0)["benchmark"] | benchmark
    return {"id": "07-benchmark-fp32", "kind": "benchmark", "stage": "device", "variant": "fp32", "outputs": {},
            "result": {"benchmark": figures}, "status": "ok", "seconds": 0.1, "finished": "2026-01-01T00:00:00Z"}


def test_a_bad_record_read_from_disk_names_the_file_and_the_field(tmp_path):
    folder = tmp_path / RECORDS
    folder.mkdir(parents=True)
    good = folder / "07-benchmark-fp32.json"
    good.write_text(json.dumps(_benchmark_record()))
    assert read_records(tmp_path)["07-benchmark-fp32"].result.benchmark.p50_ms == 10.0
    good.write_text(json.dumps(_benchmark_record(p50_ms="fast")))
    with pytest.raises(BuilderError) as err:
        read_records(tmp_path)
    assert err.value.message == (f"{good}: not a valid 07-benchmark-fp32.json: result.benchmark.p50_ms: "
                                 "Input should be a valid number, unable to parse string as a number")
    good.write_text(json.dumps(_benchmark_record(p05_ms=1.0)))
    with pytest.raises(BuilderError, match=r"result\.benchmark\.p05_ms: Extra inputs are not permitted"):
        read_records(tmp_path)
    good.write_text('{"id": "07-benchmark-fp32", ')
    with pytest.raises(BuilderError, match="Invalid JSON"):
        read_records(tmp_path)


def test_a_record_that_does_not_match_its_model_is_never_written(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(BuilderError, match=r"stage: Input should be 'toolchain' or 'device'"):
        write_record(path, _benchmark_record() | {"stage": "later"})
    assert not path.exists()
    assert write_record(path, _benchmark_record()).result.benchmark.runtime == "litert" and path.exists()


def test_a_measurement_its_record_cannot_hold_fails_the_step_that_made_it():
    check_result("benchmark", _benchmark_record()["result"])
    check_result("convert.tflite", {"anything": "a converter reports"})  # other steps' reports stay open
    with pytest.raises(StepError, match=r"the validate result does not match its record: validation\.samples: Field"):
        check_result("validate", {"validation": {"reference": "m.tflite", "emulated": False}})


def test_variant_results_keep_exactly_the_keys_they_were_written_with():
    written = variant("int8", 4.0, precision="int8") | {"status": "failed", "benchmark": None, "validation": None,
                                                          "failure": {"step": "06-convert.tflite-int8", "error": "boom",
                                                                      "cause": "error", "hint": None}}
    assert as_json(VariantResult.model_validate(written)) == written
    older = results(variant("fp32", 10.0))  # an empty recommendation, as a results.json may hold
    assert as_json(Results.model_validate(older)) == older


def test_compare_names_the_field_of_a_results_json_it_cannot_read(tmp_path):
    payload = results(variant("fp32", 10.0))
    payload["variants"][0]["benchmark"]["runs"] = "fifty"
    (tmp_path / "results.json").write_text(json.dumps(payload))
    result = CliRunner().invoke(cli, ["compare", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2
    assert "not a results.json written by `builder run`" in result.output
    assert "variants.0.benchmark.runs: Input should be a valid integer" in result.output


def test_the_report_reads_a_benchmarks_other_figures_through_their_types():
    from builder.host.report import _other_measurements, measured_on

    openvino = variant("fp32", 10.0)
    openvino["benchmark"] |= {
        "runtime": "openvino",
        "async": {"mode": "throughput", "device": "CPU", "requests": 4, "infers": 300, "seconds": 3.0,
                  "throughput_fps": 100.0},
        "tools": {"benchmark_app": {"tool": "benchmark_app", "mean_ms": 9.0, "throughput_fps": 111.0}},
        "vs_tools": {"benchmark_app": {"p50_ratio": 1.2, "tool_field": "p50_ms", "within_5pct": False,
                                       "why": "unexplained: other processes used only 0% of the CPUs"}}}
    npu = variant("int8", 1.0, precision="int8")
    npu["benchmark"] = {"runtime": "vela-estimate", "estimate": True, "emulated": False, "threads": None, "runs": None,
                        "mean_ms": 1.0, "p50_ms": 1.0, "min_ms": 1.0, "throughput_fps": 1000.0,
                        "accelerator": "Ethos_U55_256", "cycles_total": 500000, "npu_operators": 64, "cpu_operators": 0,
                        "size_bytes": 1_000_000}
    ov, vela = (VariantResult.model_validate(v) for v in (openvino, npu))
    assert _other_measurements([ov, vela]) == [
        "- fp32: async throughput 100.0 fps (4 requests); benchmark_app: mean 9.000 ms, 111.0 fps, our p50 / its "
        "1.200 (unexplained: other processes used only 0% of the CPUs)",
        "- int8: timings are Vela's estimate for the NPU, not a measurement"]
    assert [measured_on(v.benchmark) for v in (ov, vela)] == ["host", "estimate (not measured)"]
    assert as_json(ov) == openvino  # `async` keeps its name in the file


def test_the_report_flags_a_benchmark_taken_while_throttled_and_says_why_trtexec_did_not_run():
    from builder.host.report import _other_measurements, measured_on

    pi = variant("int8", 5.0, precision="int8")
    pi["benchmark"] |= {"throttled": ["soft_temp_limit_now"],
                        "tools": {"trtexec": {"error": "trtexec not found"}}}
    result = VariantResult.model_validate(pi)
    assert measured_on(result.benchmark) == "host, THROTTLED"
    assert _other_measurements([result]) == ["- int8: trtexec: not run (trtexec not found)"]


# --- a backend's own figures: typed `extra` sections ---------------------------------------------------------

OLDER_NPU = {"runtime": "vela-estimate", "estimate": True, "emulated": False, "threads": None, "runs": None,
             "mean_ms": 1.0, "p50_ms": 1.0, "min_ms": 1.0, "throughput_fps": 1000.0, "accelerator": "Ethos_U55_256",
             "system_config": "Ethos_U55_High_End_Embedded", "memory_mode": "Shared_Sram", "cycles_total": 500000,
             "npu_operators": 64, "cpu_operators": 0, "size_bytes": 1_000_000}
OLDER_JETSON = {"device": "orin", "engine": "ssh://nvidia@orin", "emulated": False, "on_target": True,
                "cpu_model": "Cortex-A78AE", "l4t": "36.3.0", "jetpack": "6.0", "tensorrt": "8.6.2",
                "jetson_power_mode": "MAXN", "jetson_power_mode_id": 0, "cuda": "12.2.140"}


def test_a_results_json_of_the_previous_version_loads_with_its_backend_fields_moved_into_extra(tmp_path):
    from builder.backends.tensorrt.facts import JetsonFacts
    from builder.backends.vela.runtime import VelaEstimate

    npu = variant("int8", 1.0, precision="int8") | {"benchmark": OLDER_NPU}
    jetson = variant("fp16", 2.0, precision="fp16")
    jetson["benchmark"]["device"] = OLDER_JETSON
    (tmp_path / "results.json").write_text(json.dumps(results(variant("fp32", 10.0), npu, jetson)))
    loaded = load_results(tmp_path / "results.json")
    estimate, engine = loaded.variants[1].benchmark, loaded.variants[2].benchmark
    assert (estimate.estimate, estimate.estimated_by, estimate.estimated_for) == (True, "Vela", "NPU")
    assert estimate.extra["vela"] == VelaEstimate(accelerator="Ethos_U55_256", system_config="Ethos_U55_High_End_Embedded",
                                                  memory_mode="Shared_Sram", cycles_total=500000, npu_operators=64,
                                                  cpu_operators=0)
    assert engine.device.extra["tensorrt"] == JetsonFacts(l4t="36.3.0", jetpack="6.0", tensorrt="8.6.2",
                                                          jetson_power_mode="MAXN", jetson_power_mode_id=0,
                                                          cuda="12.2.140")
    assert engine.device.cpu_model == "Cortex-A78AE"  # the generic facts stay where they were
    written = as_json(loaded)["variants"][1]["benchmark"]
    assert "accelerator" not in written and written["extra"]["vela"]["cycles_total"] == 500000
    assert as_json(Results.model_validate(as_json(loaded))) == as_json(loaded)  # the new shape reads back as is


def test_compare_reads_a_run_of_the_previous_version_beside_one_of_this_version(tmp_path):
    old = results(variant("fp32", 10.0), variant("int8", 1.0, precision="int8") | {"benchmark": OLDER_NPU},
                  target="arm-npu")
    new = json.loads(json.dumps(old))
    moved = {key: new["variants"][1]["benchmark"].pop(key)
             for key in ("accelerator", "system_config", "memory_mode", "cycles_total", "npu_operators", "cpu_operators")}
    new["variants"][1]["benchmark"] |= {"estimated_by": "Vela", "estimated_for": "NPU", "extra": {"vela": moved},
                                        "p50_ms": 0.5, "mean_ms": 0.5, "min_ms": 0.5}
    for name, payload in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(payload))
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "old"), str(tmp_path / "new"), "--json"])
    assert result.exit_code == 0, result.output
    int8 = next(row for row in json.loads(result.output) if row["variant"] == "int8")
    assert next(f for f in int8["figures"] if f["name"] == "p50_ms") | {"noise": None} == {
        "name": "p50_ms", "old": 1.0, "new": 0.5, "change_pct": -50.0, "noise": None, "worse": False}


def test_a_section_of_a_backend_not_installed_here_is_kept_as_the_file_holds_it():
    bench = variant("fp32", 10.0)["benchmark"] | {"extra": {"someone-elses-npu": {"tops": 26}}}
    loaded = VariantResult.model_validate(variant("fp32", 10.0) | {"benchmark": bench})
    assert loaded.benchmark.extra == {"someone-elses-npu": {"tops": 26}}
    assert as_json(loaded)["benchmark"] == bench


def test_a_benchmark_step_may_write_only_the_sections_a_backend_declares():
    good = _benchmark_record(extra={"vela": {"accelerator": "Ethos_U55_256", "cycles_total": 1}})["result"]
    check_result("benchmark", good)
    with pytest.raises(StepError, match=r"holds extra\.mine, which no backend declares"):
        check_result("benchmark", _benchmark_record(extra={"mine": {"x": 1}})["result"])
    with pytest.raises(StepError, match=r"extra\.vela\.cycles: Extra inputs are not permitted"):
        check_result("benchmark", _benchmark_record(extra={"vela": {"cycles": 1}})["result"])
    device = {"device": "host", "engine": "local", "extra": {"gpu-of-mine": {"x": 1}}}
    with pytest.raises(StepError, match=r"holds device\.extra\.gpu-of-mine, which no backend declares"):
        check_result("benchmark", _benchmark_record(device=device)["result"])


def test_the_schema_describes_each_section_a_backend_declares():
    defs = results_schema()["$defs"]
    sections = defs["BenchmarkResult"]["properties"]["extra"]["anyOf"][0]
    assert sections["additionalProperties"] is True  # a section of another backend's is read as it is
    assert sections["properties"]["vela"]["properties"]["cycles_total"]["anyOf"][0] == {"type": "integer"}
    machine = defs["DeviceFacts"]["properties"]["extra"]["anyOf"][0]["properties"]
    assert "jetson_power_mode" in machine["tensorrt"]["properties"]
    payload = results(variant("int8", 1.0, precision="int8") | {"benchmark": OLDER_NPU})
    written = as_json(Results.model_validate(payload))
    assert schema_problems(written, results_schema(), defs) == []


def test_the_report_takes_a_backends_own_section_and_its_words_on_the_machine():
    from builder.host.report import _device_lines, backend_sections

    npu = VariantResult.model_validate(variant("int8", 1.0, precision="int8") | {"benchmark": OLDER_NPU
                                                                                | {"cpu_operators": 2}})
    [section] = backend_sections([npu])
    lines = section.markdown()
    assert lines[0] == "## Vela's estimate"
    assert "| int8 | Ethos_U55_256 | Ethos_U55_High_End_Embedded | Shared_Sram | 500,000 | - | 64 | 2 |" in lines
    assert "Operators left to the CPU are not in the estimate" in lines[-1]
    page = section.html()
    assert page.startswith("<h2>Vela&#x27;s estimate</h2><table>") and "<td>500,000</td>" in page
    assert backend_sections([VariantResult.model_validate(variant("fp32", 10.0))]) == []
    jetson = variant("fp16", 2.0, precision="fp16")
    jetson["benchmark"]["device"] = OLDER_JETSON
    assert _device_lines([VariantResult.model_validate(jetson)]) == [
        "- device `orin` via ssh://nvidia@orin: Cortex-A78AE, L4T 36.3.0, MAXN", ""]


def test_the_manifest_names_the_conversion_path_of_whichever_converter_reports_one():
    from builder.host.report import _made_by

    def step(kind: str, result: dict | None, status: str = "ok") -> StepRecord:
        return StepRecord(id=f"01-{kind}", kind=kind, stage="toolchain", status=status, seconds=0.1, result=result)

    chain = [step("convert.mine", {"conversion": {"path": "direct", "prepared": {"signature_added": "main"}}}),
             step("quantize.mine", {"conversion": {"precision": "int8"}}), step("compile.npu", {"npu": {}})]
    assert _made_by(chain) == {"path": "direct", "source_edits": {"signature_added": "main"}}
    assert _made_by([step("convert.mine", {"conversion": {"path": "direct"}}, status="failed")]) == {}
    assert _made_by([step("convert.mine", None)]) == {}
