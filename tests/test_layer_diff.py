"""Layer-by-layer error (`builder run --layer-diff`): each runtime's tensor reader on real models, the matching, the
record, the CSV, report.md and report.html, and the Model Explorer node data, checked against Model Explorer's own
classes; the same model and samples name the same worst layer every time."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import runtime_models as rm
from click.testing import CliRunner

from builder.backends.litert.layer_diff import dequantized
from builder.host.catalog import load_recipe, load_target
from builder.host.cli import cli
from builder.host.planner import ExtraMeasures, make_plan
from builder.records import LayerDiff, load_results
from builder.stage import layer_diff

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"
LOG = logging.getLogger("test")


# --- the plan ---------------------------------------------------------------------------------------------

def test_layer_diffs_are_planned_for_every_variant_but_fp32_only_when_asked():
    recipe, target = load_recipe(TINY, "x86-tflite"), load_target("x86-tflite")
    assert not [s for s in make_plan(recipe, target).steps if s.kind == "layer_diff"]
    plan = make_plan(recipe, target, extra=ExtraMeasures(layer_diff=True))
    diffs = [s for s in plan.steps if s.kind == "layer_diff"]
    assert {s.variant for s in diffs} == set(plan.variants) - {"fp32"}
    int8 = next(s for s in diffs if s.variant == "int8")
    assert (int8.inputs["model"], int8.inputs["reference"]) == (plan.artifacts["int8"], plan.artifacts["fp32"])
    assert int8.inputs["validation"] and int8.params["runtime"] == int8.params["reference_runtime"] == "litert"
    assert int8.outputs == {"table": "layer_diff_int8.csv", "node_data": "tiny-mobilenet_int8.error.node_data.json"}
    asked = recipe.model_copy(update={"benchmark": recipe.benchmark.model_copy(update={"layer_diff": True})})
    assert [s.id for s in make_plan(asked, target).steps] == [s.id for s in plan.steps]  # the recipe's field asks the same


# --- a real run with --layer-diff -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def diffed_runs(tmp_path_factory) -> tuple[Path, Path]:
    """tiny-mobilenet on x86-tflite with --layer-diff (fp32, int8 and dynamic range), by the local runner; then
    again with --remeasure, which reuses the artifacts and the samples and measures again."""
    out = tmp_path_factory.mktemp("out")
    args = ["run", str(TINY), "-t", "x86-tflite", "--runner", "local", "--layer-diff", "--variant", "int8",
            "--variant", "dynamic"]
    folders = []
    for again in ([], ["--remeasure"]):
        result = CliRunner().invoke(cli, [*args, *again, "--out", str(out / f"run{len(folders)}")])
        assert result.exit_code == 0, result.output
        folders.append(out / f"run{len(folders)}" / "tiny-mobilenet" / "x86-tflite")
    return folders[0], folders[1]


@pytest.fixture(scope="module")
def diffed_run(diffed_runs) -> Path:
    return diffed_runs[0]


def _diffs(workdir: Path) -> dict[str, LayerDiff | None]:
    return {v.name: v.layer_diff for v in load_results(workdir / "results.json").variants}


def test_every_layer_of_a_tflite_is_compared_worst_first(diffed_run):
    diffs = _diffs(diffed_run)
    assert diffs["fp32"] is None and diffs["int8"] and diffs["dynamic"]
    for name in ("int8", "dynamic"):
        d = diffs[name]
        assert len(d.layers) > 50 and d.unmatched == 0 and all(x.matched_by == "name" for x in d.layers), name
        snrs = [x.snr_db for x in d.layers]
        assert snrs == sorted(snrs) and d.worst == [x.name for x in d.layers[:layer_diff.WORST]]
        assert all(x.node_id.isdigit() for x in d.layers) and d.samples == 4 and d.metric == "snr_db"
    # int8 rounds every activation, dynamic range only the weights: int8's layers lose more
    assert np.median([x.snr_db for x in diffs["int8"].layers]) < np.median([x.snr_db for x in diffs["dynamic"].layers])
    assert {x.op_type for x in diffs["int8"].layers} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"}


def test_the_same_model_and_samples_name_the_same_worst_layer(diffed_runs):
    first, second = (_diffs(folder)["int8"] for folder in diffed_runs)
    step = json.loads(next((diffed_runs[1] / "work" / "records").glob("*-layer_diff-int8.json")).read_text())
    assert not step.get("cached")  # measured again, on the same artifacts and samples
    assert first.worst[0] == second.worst[0] and first == second


def test_each_diff_is_a_csv_beside_the_artifact(diffed_run):
    int8 = _diffs(diffed_run)["int8"]
    with open(diffed_run / "layer_diff_int8.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(layer_diff.CSV_FIELDS) and len(rows) == len(int8.layers)
    assert (rows[0]["rank"], rows[0]["name"], float(rows[0]["snr_db"])) == ("1", int8.layers[0].name,
                                                                             pytest.approx(int8.layers[0].snr_db))


def test_the_reports_show_the_worst_layers(diffed_run):
    md = (diffed_run / "report.md").read_text()
    assert "## Where the error comes from (layer by layer against fp32)" in md and "Worst layers of `int8`:" in md
    assert "Worst layers of `dynamic`:" in md and "matched by name" in md
    assert ("model-explorer tiny-mobilenet_int8.tflite --node_data_paths=tiny-mobilenet_int8.error.node_data.json"
            in md)
    html = (diffed_run / "report.html").read_text()
    assert "int8: the 15 worst of" in html and "SNR dB against fp32" in html and "int8: worst layers against fp32" in html


def test_a_failed_layer_diff_fails_no_variant(diffed_run, tmp_path):
    """Fault injection: the int8 layer diff's record says it failed; the report still builds int8, and says why it
    has no layer diff."""
    import shutil

    from builder.host import report
    from builder.plan import Plan
    from builder.records import read_record, write_record
    from builder.workdir import PLAN, RECORDS, RUN

    workdir = Path(shutil.copytree(diffed_run, tmp_path / "run"))
    path = next((workdir / RECORDS).glob("*-layer_diff-int8.json"))
    failed = read_record(path).model_dump(mode="json", exclude={"result"}) | {
        "status": "failed", "error": "the reader stopped", "result": None}
    write_record(path, failed)
    plan = Plan.from_json(json.loads((workdir / PLAN).read_text()))
    results = {r.name: r for r in report.write(plan, workdir, json.loads((workdir / RUN).read_text()))}
    assert results["int8"].status == "ok" and results["int8"].failure is None
    assert results["int8"].layer_diff is None and results["dynamic"].layer_diff is not None
    assert f"{path.stem} failed, int8 has no layer diff: the reader stopped" in (workdir / "report.md").read_text()


# --- Model Explorer ---------------------------------------------------------------------------------------

def test_error_node_data_is_what_model_explorers_own_classes_read(diffed_run):
    builder = pytest.importorskip("model_explorer.node_data_builder")
    dacite = pytest.importorskip("dacite")
    adapter = pytest.importorskip("model_explorer.builtin_tflite_flatbuffer_adapter")
    written = json.loads((diffed_run / "tiny-mobilenet_int8.error.node_data.json").read_text())
    theirs = dacite.from_dict(builder.ModelNodeData, {"graphsData": written}, config=dacite.Config(strict=True))
    rewritten = json.loads(theirs.to_json_string())
    assert {key: rewritten["main"][key] for key in written["main"]} == written["main"]
    graph = theirs.graphsData["main"]
    int8 = _diffs(diffed_run)["int8"]
    assert graph.name == "noise/signal dB"
    assert {k: r.value for k, r in graph.results.items()} == {x.node_id: pytest.approx(-x.snr_db, abs=1e-6)
                                                              for x in int8.layers}
    converted = adapter.BuiltinTfliteFlatbufferAdapter().convert(str(diffed_run / "tiny-mobilenet_int8.tflite"), {})
    graphs = {g["id"]: g for collection in converted["graphCollections"] for g in collection.graphs}
    labels = {n["id"]: n["label"] for n in graphs["main"]["nodes"]}
    assert all(labels[x.node_id] == x.op_type.lower() for x in int8.layers)  # the node Model Explorer draws for the op


# --- ONNX Runtime and OpenVINO on a real model -------------------------------------------------------------

@pytest.fixture(scope="module")
def quantized_cls(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """rapidocr's MobileNetV3 classifier (fixed input shape): fp32 and ONNX Runtime's QDQ int8 as ONNX, fp32 and
    NNCF's int8 as OpenVINO IR, both quantizers calibrated on the same seeded samples."""
    from builder.backends.onnxruntime.quantize import ort_quantize_static
    from builder.backends.openvino.convert import nncf_quantize

    folder = tmp_path_factory.mktemp("cls")
    model = onnx.load(rm.rapidocr_cls())
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, 48, 192)):
        dim.Clear()
        dim.dim_value = value
    onnx.save(model, folder / "cls.onnx")
    calibration = np.random.default_rng(0).standard_normal((8, 3, 48, 192)).astype(np.float32)
    ort_quantize_static(folder / "cls.onnx", folder / "cls_int8.onnx", calibration)
    rm.write_openvino(folder / "cls.onnx", folder / "cls.xml")
    nncf_quantize(folder / "cls.xml", folder / "cls_int8.xml", calibration)
    return {"onnxruntime": (folder / "cls.onnx", folder / "cls_int8.onnx"),
            "openvino": (folder / "cls.xml", folder / "cls_int8.xml")}


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_runtimes_reader_compares_a_quantized_model_layer_by_layer(quantized_cls, runtime):
    fp32, int8 = quantized_cls[runtime]
    samples = list(np.random.default_rng(1).standard_normal((3, 3, 48, 192)).astype(np.float32))
    reader = layer_diff.reader_of(runtime)
    runs = [layer_diff.record(reader(fp32, samples, {}, LOG), reader(int8, samples, {}, LOG), len(samples))
            for _ in range(2)]
    assert runs[0] == runs[1]  # deterministic: the same worst layer, the same figures
    d = LayerDiff.model_validate(runs[0])
    assert len(d.layers) > 100 and sum(x.matched_by == "name" for x in d.layers) > 0.8 * len(d.layers)
    assert all(-300 < x.snr_db < 300 and -1 <= x.cosine <= 1 for x in d.layers)
    assert 0 < np.median([x.snr_db for x in d.layers]) < 60  # int8 moved them, but not beyond recognition
    alike = reader(fp32, samples, {}, LOG)  # fp32 against itself: every layer equal
    assert {x["snr_db"] for x in layer_diff.record(alike, alike, len(samples))["layers"]} == {300.0}


# --- the matching and the dequantizing --------------------------------------------------------------------

def _tensors(*specs: tuple[str, tuple[int, ...], float]) -> layer_diff.Tensors:
    return layer_diff.Tensors("test", [layer_diff.Tensor(name, name, "Op", [np.full(shape, value, np.float32)])
                                       for name, shape, value in specs])


def test_layers_match_by_name_else_by_shape_and_position():
    fp32 = _tensors(("a", (4,), 1.0), ("b", (2,), 1.0), ("c", (2,), 1.0), ("d", (3,), 1.0))
    variant = _tensors(("a", (4,), 1.0), ("b'", (2,), 1.0), ("x", (5,), 1.0), ("c'", (2,), 1.0), ("d", (3,), 1.0))
    pairs = layer_diff.match(fp32, variant)
    assert [(p.candidate.name, p.reference.name, p.matched_by) for p in pairs] == [
        ("a", "a", "name"), ("b'", "b", "position"), ("c'", "c", "position"), ("d", "d", "name")]
    diff = layer_diff.record(fp32, variant, 1)
    assert diff["unmatched"] == 1
    with pytest.raises(Exception, match="none of the 1 intermediate tensors matched"):
        layer_diff.record(fp32, _tensors(("y", (7,), 1.0)), 1)


def test_ties_keep_execution_order():
    fp32 = _tensors(("a", (2,), 1.0), ("b", (2,), 1.0), ("c", (2,), 1.0))
    variant = _tensors(("a", (2,), 1.0), ("b", (2,), 0.0), ("c", (2,), 0.0))
    assert layer_diff.record(fp32, variant, 1)["worst"] == ["b", "c", "a"]


def test_int8_tensors_are_dequantized_per_tensor_and_per_channel():
    q = np.array([[-128, 0, 127], [10, 20, 30]], dtype=np.int8)
    per_tensor = {"quantization_parameters": {"scales": np.array([0.5]), "zero_points": np.array([-10]),
                                              "quantized_dimension": 0}}
    assert dequantized(q, per_tensor).tolist() == ((q.astype(np.float32) + 10) * 0.5).tolist()
    per_channel = {"quantization_parameters": {"scales": np.array([0.1, 1.0]), "zero_points": np.array([0, 5]),
                                               "quantized_dimension": 0}}
    assert np.allclose(dequantized(q, per_channel), [[-12.8, 0, 12.7], [5, 15, 25]])
    assert dequantized(np.array([1, 2], np.int32), {"quantization_parameters": {"scales": np.array([])}}) is None
