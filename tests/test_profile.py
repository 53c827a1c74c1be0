"""Per-layer profiles (`builder run --profile`): each runtime's profiler on real models, the record, the CSV,
report.md and report.html, and the Model Explorer node data, checked against Model Explorer's own classes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import onnx
import pytest
import runtime_models as rm
from click.testing import CliRunner

from builder.backends.onnxruntime.profiler import node_times
from builder.backends.openvino.profiler import precision_of
from builder.backends.tensorrt.profiler import parse_export_profile
from builder.errors import StepError
from builder.host import profile_report
from builder.host.catalog import load_recipe, load_target
from builder.host.cli import cli
from builder.host.planner import ExtraMeasures, make_plan
from builder.records import LayerTime, Profile, load_results
from builder.stage import model_explorer, profiling, runtimes, timing

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"


# --- the plan ---------------------------------------------------------------------------------------------

def _kinds(plan) -> list[str]:
    return [s.kind for s in plan.steps]


def test_profiles_are_planned_after_every_benchmark_only_when_asked():
    recipe, target = load_recipe(TINY, "x86-tflite"), load_target("x86-tflite")
    assert "profile" not in _kinds(make_plan(recipe, target))
    plan = make_plan(recipe, target, extra=ExtraMeasures(profile=True))
    kinds = _kinds(plan)
    last_benchmark = max(i for i, k in enumerate(kinds) if k == "benchmark")
    profiles = [s for s in plan.steps if s.kind == "profile"]
    assert {s.variant for s in profiles} == set(plan.variants)
    assert min(kinds.index("profile"), *(i for i, k in enumerate(kinds) if k == "profile")) > last_benchmark
    int8 = next(s for s in profiles if s.variant == "int8")
    assert int8.inputs["model"] == plan.artifacts["int8"] and int8.params["runtime"] == "litert"
    assert int8.outputs == {"table": "profile_int8.csv", "node_data": "tiny-mobilenet_int8.time.node_data.json"}
    asked = recipe.model_copy(update={"benchmark": recipe.benchmark.model_copy(update={"profile": True})})
    assert _kinds(make_plan(asked, target)) == kinds  # the recipe's `benchmark: {profile: true}` asks the same


# --- a real run with --profile ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory) -> Path:
    """tiny-mobilenet on x86-tflite with --profile (fp32, int8 and dynamic range), by the local runner."""
    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(cli, ["run", str(TINY), "-t", "x86-tflite", "--runner", "local", "--out", str(out),
                                      "--profile", "--variant", "int8", "--variant", "dynamic"])
    assert result.exit_code == 0, result.output
    return out / "tiny-mobilenet" / "x86-tflite"


def _profiles(workdir: Path) -> dict[str, Profile]:
    return {v.name: v.profile for v in load_results(workdir / "results.json").variants}


def test_litert_profiles_sum_to_the_p50_and_count_xnnpacks_partitions(profiled_run):
    profiles = _profiles(profiled_run)
    assert set(profiles) == {"fp32", "int8", "dynamic"}
    for name, p in profiles.items():
        times = [x.ms for x in p.layers]
        assert len(p.layers) > 50 and times == sorted(times, reverse=True) and min(times) >= 0, name
        assert sum(times) == pytest.approx(p.total_ms, rel=1e-3) and sum(x.share for x in p.layers) == pytest.approx(1, abs=1e-3)
        assert all(x.node_id.isdigit() for x in p.layers) and p.runs == profiling_runs()
        assert p.vs_p50 is not None and (0.8 <= p.vs_p50 <= 1.2 or p.why), (name, p.vs_p50)  # else the record says why
    int8, fp32, dynamic = profiles["int8"], profiles["fp32"], profiles["dynamic"]
    assert fp32.partitions == int8.partitions == 1 and not int8.warnings
    convs = [x for x in int8.layers if x.op_type == "CONV_2D"]
    assert convs and all(x.precision == "int8" and x.unit == "XNNPACK" for x in convs)
    assert all(x.precision == "fp32" for x in fp32.layers if x.op_type == "CONV_2D")
    # dynamic-range depthwise convolutions are not XNNPACK's: the graph falls apart into partitions
    assert dynamic.partitions > 1 and any("partitions" in w for w in dynamic.warnings)
    assert any(x.unit == "CPU kernel" and x.precision == "fp32 (int8 weights)" for x in dynamic.layers)


def profiling_runs() -> int:
    from builder.stage.steps.profile import PROFILE_RUNS

    return PROFILE_RUNS


def test_each_profile_is_a_csv_beside_the_artifact(profiled_run):
    int8 = _profiles(profiled_run)["int8"]
    with open(profiled_run / "profile_int8.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(profiling.CSV_FIELDS) and len(rows) == len(int8.layers)
    assert (rows[0]["rank"], rows[0]["node_id"], float(rows[0]["ms"])) == ("1", int8.layers[0].node_id,
                                                                            pytest.approx(int8.layers[0].ms))


def test_the_reports_show_where_the_time_goes_and_what_int8_changed(profiled_run):
    md = (profiled_run / "report.md").read_text()
    assert "## Where the time goes (per-layer profile)" in md and "Slowest layers of `int8`:" in md
    assert "### `int8` against fp32, layer by layer" in md and "matched fp32's" in md
    assert "### `dynamic` against fp32" in md and "stayed in float" in md
    assert ("model-explorer tiny-mobilenet_int8.tflite --node_data_paths=tiny-mobilenet_int8.time.node_data.json"
            in md)
    assert "the delegate made 1 partition(s)" in md and "**XNNPACK split tiny-mobilenet_dynamic.tflite into" in md
    html = (profiled_run / "report.html").read_text()
    assert "int8: the 15 slowest of" in html and "int8 against fp32: the layers that changed most" in html
    assert html.count("<svg") >= 5  # latency, two scatters... and the profiles' plots


# --- Model Explorer ---------------------------------------------------------------------------------------

def test_node_data_is_what_model_explorers_own_classes_write(profiled_run):
    builder = pytest.importorskip("model_explorer.node_data_builder")
    dacite = pytest.importorskip("dacite")
    written = json.loads((profiled_run / "tiny-mobilenet_int8.time.node_data.json").read_text())
    theirs = dacite.from_dict(builder.ModelNodeData, {"graphsData": written}, config=dacite.Config(strict=True))
    rewritten = json.loads(theirs.to_json_string())  # read and written back by Model Explorer: ours, plus its defaults
    assert {key: rewritten["main"][key] for key in written["main"]} == written["main"]
    graph = theirs.graphsData["main"]
    assert graph.name == "time ms" and graph.gradient[0].stop == 0 and graph.gradient[-1].stop == 1
    int8 = _profiles(profiled_run)["int8"]
    assert {k: r.value for k, r in graph.results.items()} == {x.node_id: pytest.approx(x.ms, abs=1e-6)
                                                              for x in int8.layers}


def test_node_ids_are_the_ops_model_explorer_draws_for_a_tflite(profiled_run):
    adapter = pytest.importorskip("model_explorer.builtin_tflite_flatbuffer_adapter")
    for variant in ("int8", "dynamic"):
        converted = adapter.BuiltinTfliteFlatbufferAdapter().convert(str(profiled_run / f"tiny-mobilenet_{variant}.tflite"), {})
        graphs = {g["id"]: g for collection in converted["graphCollections"] for g in collection.graphs}
        written = json.loads((profiled_run / f"tiny-mobilenet_{variant}.time.node_data.json").read_text())
        assert set(written) <= set(graphs)
        labels = {n["id"]: n["label"] for n in graphs["main"]["nodes"]}
        for layer in _profiles(profiled_run)[variant].layers:
            assert labels[layer.node_id] == layer.op_type.lower(), layer  # the node Model Explorer draws for the op


def test_the_writer_takes_any_per_node_figure(tmp_path):
    """What --layer-diff will write: a per-layer error on the same graph, keyed the same way."""
    path = model_explorer.write(tmp_path / "m.error.node_data.json",
                                model_explorer.NodeValues("rmse", "main", {"3": 0.25, "conv/Relu": 0.5}))
    data = json.loads(path.read_text())
    assert data["main"]["results"] == {"3": {"value": 0.25}, "conv/Relu": {"value": 0.5}}
    assert data["main"]["name"] == "rmse"


# --- OpenVINO and ONNX Runtime on a real model -------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet_v3(tmp_path_factory) -> dict[str, Path]:
    """rapidocr's MobileNetV3 classifier with a fixed input shape, as ONNX and as an OpenVINO IR."""
    folder = tmp_path_factory.mktemp("mnv3")
    model = onnx.load(rm.rapidocr_cls())
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, 48, 192)):
        dim.Clear()
        dim.dim_value = value
    onnx.save(model, folder / "cls.onnx")
    return {"onnxruntime": folder / "cls.onnx", "openvino": rm.write_openvino(folder / "cls.onnx", folder / "cls.xml")}


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_a_runtimes_own_profiler_gives_its_layers(mobilenet_v3, runtime):
    import logging

    model = mobilenet_v3[runtime]
    p50 = timing.measure(runtimes.load(model, threads=2, runtime=runtime), warmup=5, runs=100)["p50_ms"]
    measured = profiling.profiler_of(runtime)(model, {}, profiling.ProfileSpec(threads=2, runs=50, warmup=5),
                                              logging.getLogger("test"))
    profile = Profile.model_validate(profiling.record(measured))
    assert len(profile.layers) > 20 and profile.runs == 50
    assert {x.op_type for x in profile.layers} >= {"Convolution" if runtime == "openvino" else "Conv"}
    assert all(x.precision == "fp32" for x in profile.layers if x.op_type in ("Convolution", "Conv"))
    checked = profiling.against_p50(profile.total_ms, p50, caveat=profile.caveat)
    assert 0.8 <= checked["vs_p50"] <= 1.2 or checked["why"].startswith(profile.caveat), (runtime, checked)


def test_onnxruntime_events_leave_the_warm_up_out():
    events = [{"cat": "Session", "name": "model_run", "ts": t, "dur": 90} for t in (0, 100, 200)]
    events += [{"cat": "Node", "name": "conv_kernel_time", "ts": t + 1, "dur": dur,
                "args": {"op_name": "Conv", "provider": "CPUExecutionProvider", "input_type_shape": [{"float": [1]}]}}
               for t, dur in ((0, 500), (100, 40), (200, 60))]
    events.append({"cat": "Node", "name": "conv_fence_before", "ts": 150, "dur": 7})
    layers, runs = node_times(events, warmup=1)
    assert runs == 2 and [(x.name, x.op_type, x.ms, x.precision, x.unit) for x in layers] == [
        ("conv", "Conv", pytest.approx(0.05), "fp32", "CPUExecutionProvider")]
    with pytest.raises(StepError, match="warm-up"):
        node_times(events, warmup=3)


def test_openvino_kernels_name_their_precision():
    assert [precision_of(k) for k in ("jit_avx2_I8", "brgconv_avx512_f32", "jit_avx512_FP16", "ref_any", "gemm_mlas_f32")] \
        == ["int8", "fp32", "fp16", None, "fp32"]


# --- TensorRT: trtexec's exported profile ----------------------------------------------------------------

# the shape trtexec's Profiler::exportJSONProfile writes (TensorRT 8.6+: medianMs; before it, averageMs only)
SAMPLES = Path(__file__).parent / "profiles"
TRTEXEC_PROFILE = (SAMPLES / "trtexec_export_profile.json").read_text()


def test_trtexec_exported_profile_is_parsed():
    runs, layers = parse_export_profile(TRTEXEC_PROFILE)
    assert runs == 120 and [(x.name, x.ms, x.unit) for x in layers][1] == ("/conv1/Conv + /relu1/Relu", 0.4992, "GPU")
    older = TRTEXEC_PROFILE.replace(', "medianMs" : 0.4992', "")
    assert parse_export_profile(older, unit="DLA")[1][1].ms == pytest.approx(0.501667)
    with pytest.raises(StepError, match="not the shape"):
        parse_export_profile('[{"count": 3}, {"timeMs": 1}]')


# --- the report's comparison ----------------------------------------------------------------------------

def _profile(layers: list[tuple[str, str, str, float, str]]) -> Profile:
    total = sum(x[3] for x in layers)
    return Profile(profiler="test", runs=1, total_ms=total, layers=[
        LayerTime(name=n, node_id=i, op_type=op, ms=ms, share=ms / total, precision=p) for n, i, op, ms, p in layers])


def test_layers_match_by_name_else_by_position():
    fp32 = _profile([("a", "0", "CONV_2D", 1.0, "fp32"), ("b", "1", "FULLY_CONNECTED", 2.0, "fp32")])
    by_name = _profile([("a", "0", "CONV_2D", 0.4, "int8"), ("b", "1", "FULLY_CONNECTED", 2.0, "fp32")])
    changes, how = profile_report.changes(fp32, by_name)
    assert how == "by name" and {c.name: c.verdict for c in changes} == {"a": "faster", "b": "stayed in float"}
    renamed = _profile([("x", "0", "CONV_2D", 1.5, "int8"), ("y", "1", "FULLY_CONNECTED", 1.0, "int8")])
    changes, how = profile_report.changes(fp32, renamed)
    assert how.startswith("by position") and [c.verdict for c in changes] == ["slower", "faster"]
    other_graph = _profile([("x", "0", "CONV_2D", 1.5, "int8")])
    assert profile_report.changes(fp32, other_graph)[0] == []


def test_a_sum_far_from_the_p50_says_why():
    assert profiling.against_p50(9.0, 10.0, caveat="c") == {"vs_p50": 0.9}
    assert profiling.against_p50(5.0, 10.0, caveat="alone") == {"vs_p50": 0.5, "why": "alone; " + profiling.BUSY}
    assert "emulated" in profiling.against_p50(5.0, 10.0, caveat="alone", emulated=True)["why"]


def test_a_failed_profile_fails_no_variant(profiled_run, tmp_path):
    """Fault injection: the int8 profile's record says it failed; the report still builds int8, and says why it has
    no profile."""
    import shutil

    from builder.host import report
    from builder.plan import Plan
    from builder.records import read_record, write_record
    from builder.workdir import PLAN, RECORDS, RUN

    workdir = Path(shutil.copytree(profiled_run, tmp_path / "run"))
    path = next((workdir / RECORDS).glob("*-profile-int8.json"))
    failed = read_record(path).model_dump(mode="json", exclude={"result"}) | {
        "status": "failed", "error": "the profiler stopped", "result": None}
    write_record(path, failed)
    plan = Plan.from_json(json.loads((workdir / PLAN).read_text()))
    results = {r.name: r for r in report.write(plan, workdir, json.loads((workdir / RUN).read_text()))}
    assert results["int8"].status == results["fp32"].status == "ok" and results["int8"].failure is None
    assert results["int8"].profile is None and results["fp32"].profile is not None
    assert f"{path.stem} failed, int8 has no per-layer profile: the profiler stopped" in (workdir / "report.md").read_text()


# --- LiteRT's benchmark_model --enable_op_profiling ---------------------------------------------------------

# as benchmark_model prints it: older builds tab-separated with a [start] column, every node a TFLite op; newer ones
# aligned with spaces, XNNPACK's operators inside its delegate, an operator kind's calls counted
OP_PROFILE_TABS = (SAMPLES / "benchmark_model_tabs.txt").read_text()
OP_PROFILE_XNNPACK = (SAMPLES / "benchmark_model_xnnpack.txt").read_text()


def test_benchmark_models_op_profile_is_parsed_in_both_layouts():
    from builder.backends.litert.benchmark_model import parse_op_profile

    old = parse_op_profile(OP_PROFILE_TABS)
    assert [(x["name"], x["node_id"], x["op_type"], x["ms"], x["unit"]) for x in old] == [
        ("MobilenetV1/MobilenetV1/Conv2d_0/Relu6", "0", "CONV_2D", 60.957, "CPU kernel"),
        ("MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6", "1", "DEPTHWISE_CONV_2D", 49.87, "CPU kernel")]
    new = parse_op_profile(OP_PROFILE_XNNPACK)
    assert [(x["node_id"], x["op_type"], x["precision"], x["unit"]) for x in new] == [
        ("0", "QUANTIZE", None, "CPU kernel"),
        ("Delegate/Convolution (NHWC, QC8) IGEMM:0", "Convolution (NHWC, QC8) IGEMM", "int8", "Delegate"),
        ("Delegate/Convolution (NHWC, QC8) DWConv:1", "Convolution (NHWC, QC8) DWConv", "int8", "Delegate"),
        ("Delegate/Convert (NC, QS8, F32):113", "Convert (NC, QS8, F32)", "int8", "Delegate")]
    assert new[2]["ms"] == pytest.approx(0.051 * 13)  # per call, 13 calls an inference
    with pytest.raises(StepError, match="no operator-wise profile"):
        parse_op_profile("INFO: Inference timings in us: Init: 1, First inference: 2")
