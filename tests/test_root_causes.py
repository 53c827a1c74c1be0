"""Every failure explained at its root: skips name the step that failed, however deep and across
stages, and a converter's own first error line is the message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from builder.config.recipe import Recipe
from builder.host import catalog
from builder.host.cli import cli
from builder.host.planner import make_plan, source_path
from builder.host.report import variant_results
from builder.stage.execute import read_records, run_stage
from builder.util import atomic_write_bytes
from builder.workdir import PLAN


def _workdir_for(recipe: Recipe, target: str, source: Path, workdir: Path):
    """A work dir as `builder run` leaves it before the toolchain stage: the plan and the source."""
    plan = make_plan(recipe, catalog.load_target(target))
    (workdir / source_path(plan.source)).parent.mkdir(parents=True)
    shutil.copy(source, workdir / source_path(plan.source))
    atomic_write_bytes(workdir / PLAN, json.dumps(plan.to_json()).encode())
    return plan


def test_every_skip_names_the_step_that_failed_however_deep_and_across_stages(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not an ONNX model")
    recipe = Recipe.model_validate(
        {"name": "broken", "source": {"file": "model.onnx"}, "input": {"shape": [1, 3, 32, 32], "layout": "NCHW"},
         "variants": ["fp32", "fp16"]}, context={"path": tmp_path / "recipe.yaml"})
    workdir = tmp_path / "run"
    plan = _workdir_for(recipe, "x86-tflite", tmp_path / "model.onnx", workdir)

    run_stage(workdir, "toolchain")
    run_stage(workdir, "device")  # reads the toolchain stage's records
    records = read_records(workdir)

    failed = [r for r in records.values() if r.status == "failed"]
    assert [r.kind for r in failed] == ["onnx.simplify"] and failed[0].cause == "invalid-onnx"
    root = failed[0].id
    skipped = [r for r in records.values() if r.status == "skipped"]
    # onnx2tf reads simplify's output, convert.tflite onnx2tf's, benchmark and validate convert.tflite's
    assert {r.kind for r in skipped} == {"convert.onnx2tf", "convert.tflite", "benchmark", "validate"}
    assert {r.stage for r in skipped} == {"toolchain", "device"}
    assert all(r.blocked_by == root and f"({root} failed)" in r.error for r in skipped)

    for result in variant_results(plan, records):
        assert result.status == "failed"
        assert result.failure.step == root and result.failure.cause == "invalid-onnx"
        assert result.failure.error == failed[0].error


def _dynamically_quantized_lstm(path: Path) -> Path:
    """A float LSTM quantized by ONNX Runtime's quantize_dynamic: one com.microsoft DynamicQuantizeLSTM node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import quantize_dynamic

    rng = np.random.default_rng(0)
    steps, features, hidden = 4, 8, 16
    weights = [numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, n)).astype(np.float32), name)
               for name, n in (("W", features), ("R", hidden))]
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hidden)], "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 1, 1, hidden])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    float_path = path.with_name("lstm_float.onnx")
    onnx.save(model, float_path)
    quantize_dynamic(float_path, path)
    assert [n.op_type for n in onnx.load(path).graph.node] == ["DynamicQuantizeLSTM"]
    return path


@pytest.mark.slow
def test_an_op_onnx2tf_lacks_is_the_message_and_the_root_of_every_later_skip(tmp_path):
    _dynamically_quantized_lstm(tmp_path / "lstm.onnx")
    recipe = tmp_path / "lstm.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "lstm", "source": {"file": "lstm.onnx"}, "input": {"name": "x", "shape": [4, 1, 8], "layout": "other"},
        "variants": ["fp32"]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", "x86-tflite", "--runner", "local", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "DynamicQuantizeLSTM OP is not yet implemented" in result.output  # the verdict says it

    workdir = out / "lstm" / "x86-tflite"
    (fp32,) = json.loads((workdir / "results.json").read_text())["variants"]
    failure = fp32["failure"]
    assert fp32["status"] == "failed" and failure["step"].endswith("convert.onnx2tf")
    assert failure["error"] == "onnx2tf could not convert model.onnx: DynamicQuantizeLSTM OP is not yet implemented."
    assert failure["cause"] == "unsupported-op" and "give the float model" in failure["hint"]
    records = read_records(workdir)
    benchmark = next(r for r in records.values() if r.kind == "benchmark")
    assert benchmark.stage == "device" and benchmark.blocked_by == failure["step"]


def _sparse_tflite(path: Path) -> Path:
    """A conv whose mostly-zero kernel the TFLite converter stores sparse, behind a DENSIFY op."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    kernel[rng.random(kernel.shape) < 0.8] = 0

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="input")])
    def conv(x):
        return tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME"))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([conv.get_concrete_function()], conv)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path.write_bytes(converter.convert())
    return path


@pytest.mark.slow
def test_tf2onnx_reads_sparse_weights_once_they_are_made_dense(tmp_path):
    """tf2onnx alone fails on DENSIFY ("cannot reshape array"); densified first, the ONNX model computes what
    LiteRT computes from the sparse file."""
    import onnxruntime

    from builder.backends.litert import tflite_float
    from builder.backends.tf2onnx.convert import tf_to_onnx
    from builder.stage.runtimes import load

    source = _sparse_tflite(tmp_path / "sparse.tflite")
    sparse = tflite_float.describe(source)["sparse_tensors"]
    assert sparse
    report = tf_to_onnx(source, tmp_path / "model.onnx", source_format="tflite")
    assert report["source_edits"]["sparse_tensors_densified"] == sparse
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 3)).astype(np.float32)
    (expected,) = load(source).run([x])
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
