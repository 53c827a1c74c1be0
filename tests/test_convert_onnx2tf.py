"""builder.backends.litert.onnx2tf: ONNX -> SavedModel (NHWC) -> TFLite via the shared to_tflite (real onnx2tf)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from onnx_models import INPUT_NCHW, cosine, images, ort_run

from builder.causes import classify
from builder.cli import cli
from builder.convert.onnx import simplify_onnx, torch_to_onnx
from builder.backends.litert.onnx2tf import onnx_to_saved_model
from builder.backends.litert.tflite import representative_from_array, tflite_ops, to_tflite
from builder.errors import ConversionError
from builder.runtimes import load
from builder.backends.litert.steps import OnnxToSavedModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path, dict]:
    work = tmp_path_factory.mktemp("onnx2tf")
    torch_to_onnx(work / "cnn.onnx", input_shape=INPUT_NCHW, factory="onnx_models:small_cnn")
    simplify_onnx(work / "cnn.onnx", work / "slim.onnx")
    report = onnx_to_saved_model(work / "slim.onnx", work / "saved_model", calibration=images(8))
    return work / "slim.onnx", work / "saved_model", report


def test_saved_model_is_nhwc_and_only_the_saved_model_is_kept(converted):
    onnx_path, saved, report = converted
    assert report["layout"] == "NHWC"
    assert report["inputs"] == {"input": {"shape": [1, 32, 32, 3], "dtype": "float32"}}
    assert report["outputs"] == {"output_0": {"shape": [1, 10], "dtype": "float32"}}
    assert sorted(p.name for p in saved.iterdir()) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert onnx_path.exists()  # onnx2tf worked on a copy


@pytest.mark.parametrize(("precision", "min_cosine"), [("fp32", 0.99999), ("int8", 0.99)])
def test_tflite_from_saved_model_matches_onnx(converted, tmp_path, precision, min_cosine):
    onnx_path, saved, _ = converted
    nhwc = images(16, seed=1).transpose(0, 2, 3, 1)
    rep = representative_from_array(nhwc) if precision == "int8" else None
    out = tmp_path / f"cnn_{precision}.tflite"
    to_tflite(saved, out, source_format="saved_model", precision=precision, representative=rep)
    session = load(out, threads=2)
    for i in range(4):
        x = images(1, seed=100 + i)
        got = session.run([x.transpose(0, 2, 3, 1)])[0]
        assert cosine(got, ort_run(onnx_path, x)) > min_cosine


def test_keep_nchw_keeps_the_onnx_layout(converted, tmp_path):
    onnx_path, _, _ = converted
    report = onnx_to_saved_model(onnx_path, tmp_path / "nchw", keep_nchw=True)
    assert report["inputs"]["input"]["shape"] == [1, 3, 32, 32]
    import tensorflow as tf

    fn = tf.saved_model.load(str(tmp_path / "nchw")).signatures["serving_default"]
    x = images(1, seed=9)
    np.testing.assert_allclose(fn(input=tf.constant(x))["output_0"].numpy(), ort_run(onnx_path, x), atol=1e-4)


def test_failure_becomes_conversion_error_with_log_tail(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    with pytest.raises(ConversionError) as err:
        onnx_to_saved_model(bad, tmp_path / "out")
    assert err.value.cause == "invalid-onnx"
    assert err.value.log_tail
    assert not (tmp_path / "out").exists()


# --- onnx2tf's own options, from a recipe's source.onnx2tf ---


def _erf_of_scaled(path: Path) -> Path:
    """y = Erf(x * c), c = 2: TFLite has no Erf; the Mul node `scale` reads the constant `c`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "c"], ["xc"], name="scale"), helper.make_node("Erf", ["xc"], ["y"], name="erf")],
        "erf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(np.array([2.0], np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_pseudo_operators_and_param_replacements_reach_onnx2tf(tmp_path):
    from scipy.special import erf

    source = _erf_of_scaled(tmp_path / "erf.onnx")
    onnx_to_saved_model(source, tmp_path / "plain")
    with pytest.raises(ConversionError) as err:  # as onnx2tf makes it, the SavedModel keeps TF's Erf
        to_tflite(tmp_path / "plain", tmp_path / "plain.tflite", source_format="saved_model")
    record = {"status": "failed", "kind": "convert.tflite", "error": err.value.message, "cause": err.value.cause,
              "hint": err.value.hint}
    assert classify(record, source_format="onnx") == (
        "unsupported-op", "set source.onnx2tf.replace_to_pseudo_operators: [Erf]: onnx2tf then builds it from ops "
        "TFLite has")

    params = OnnxToSavedModel.Params(replace_to_pseudo_operators=["erf"], param_replacements=[
        {"op_name": "scale", "param_target": "inputs", "param_name": "c", "values": [3.0]}])
    onnx_to_saved_model(source, tmp_path / "pseudo", options=params.model_dump(exclude_defaults=True))
    to_tflite(tmp_path / "pseudo", tmp_path / "pseudo.tflite", source_format="saved_model")
    assert not tflite_ops(tmp_path / "pseudo.tflite")["custom_ops"]
    x = np.linspace(-1.5, 1.5, 16, dtype=np.float32)[None]
    got = load(tmp_path / "pseudo.tflite").run([x])[0]
    np.testing.assert_allclose(got, erf(3.0 * x), atol=1e-3)  # c replaced by 3; Erf built from builtins


def _onnx_recipe(tmp_path: Path, onnx2tf: dict, source: str = "model.onnx") -> Path:
    (tmp_path / source).write_bytes(b"")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "m", "source": {"file": source, "onnx2tf": onnx2tf},
                                      "input": {"shape": [1, 3, 32, 32], "layout": "NCHW"}, "variants": ["fp32"]}))
    return recipe


def test_source_onnx2tf_options_are_the_onnx2tf_steps_params_in_the_plan(tmp_path):
    operation = {"op_name": "Transpose_1", "param_target": "attributes", "param_name": "perm", "values": [0, 2, 3, 1]}
    (tmp_path / "replace.json").write_text(json.dumps({"format_version": 1, "operations": [operation]}))
    recipe = _onnx_recipe(tmp_path, {"replace_to_pseudo_operators": ["erf", "GeLU"], "enable_rnn_unroll": True,
                                     "param_replacement_file": "replace.json"})
    result = CliRunner().invoke(cli, ["plan", str(recipe), "-t", "x86-tflite", "--json"])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.output[result.output.index("{"):])["steps"]
    (step,) = [s for s in steps if s["kind"] == "convert.onnx2tf"]
    given = {"replace_to_pseudo_operators": ["Erf", "Gelu"], "enable_rnn_unroll": True, "param_replacements": [operation]}
    assert {k: step["params"][k] for k in given} == given
    assert step["params"]["output_layout"] == "NHWC"  # every option is shown, defaults too
    assert step["params"]["disable_group_convolution"] is False


@pytest.mark.parametrize("onnx2tf, source, field", [
    ({"replace_to_pseudo_operators": ["Softmax"]}, "model.onnx", "replace_to_pseudo_operators"),
    ({"param_replacement_file": "replace.json"}, "model.onnx", "param_replacement_file"),
    ({"keep_ncw_or_nchw_or_ncdhw_input_names": ["x"]}, "model.tflite", "onnx2tf never converts a tflite source"),
])
def test_onnx2tf_options_that_cannot_apply_are_refused_at_load(tmp_path, onnx2tf, source, field):
    (tmp_path / "replace.json").write_text(json.dumps({"operations": [{"op_name": "a", "values": [1]}]}))
    result = CliRunner().invoke(cli, ["plan", str(_onnx_recipe(tmp_path, onnx2tf, source)), "-t", "x86-tflite"])
    assert result.exit_code == 2 and field in result.output and "Traceback" not in result.output, result.output
