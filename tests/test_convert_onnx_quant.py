"""builder.backends.onnxruntime.quantize: ONNX Runtime dynamic and static QDQ quantization (real ORT),
and the quantize.ort step as a CPU target runs it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import onnx
import pytest
from onnx_models import INPUT_NCHW, cosine, images, ort_run

from builder.backends.onnxruntime import quantize as onnx_quant
from builder.backends.onnxruntime.quantize import input_dtype, ort_quantize_dynamic, ort_quantize_static
from builder.errors import ConfigError
from builder.host import catalog
from builder.stage.convert.onnx import torch_to_onnx


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quant") / "cnn.onnx"
    torch_to_onnx(out, input_shape=INPUT_NCHW, factory="onnx_models:small_cnn")
    return out


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _mean_cosine(reference: Path, candidate: Path) -> float:
    xs = images(8, seed=42)
    return min(cosine(ort_run(candidate, x[None]), ort_run(reference, x[None])) for x in xs)


def test_dynamic_quantization(fp32, tmp_path):
    out = tmp_path / "dyn.onnx"
    report = ort_quantize_dynamic(fp32, out, per_channel=True)
    assert report["mode"] == "dynamic" and report["size"] == out.stat().st_size
    assert "ConvInteger" in _ops(out) or "DynamicQuantizeLinear" in _ops(out)
    assert _mean_cosine(fp32, out) > 0.98


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_qdq_each_calibration_method(fp32, tmp_path, method):
    out = tmp_path / f"{method}.onnx"
    report = ort_quantize_static(fp32, out, images(32), method=method)
    assert report["format"] == "QDQ" and report["samples"] == 32
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(out)
    assert _mean_cosine(fp32, out) > (0.98 if method == "minmax" else 0.9)


@pytest.mark.parametrize("method, tolerance", [("percentile", 0.01), ("entropy", 0.1)])
def test_histograms_built_a_chunk_at_a_time_give_the_ranges_of_one_pass(fp32, tmp_path, monkeypatch, method, tolerance):
    """Memory is bounded by the chunk, not the calibration set; merged histograms fit nearly the same ranges."""
    samples = images(40)  # chunks of 16, 16 and 8
    chunked = onnx_quant._histogram_ranges(fp32, samples, method, False, tmp_path)
    monkeypatch.setattr(onnx_quant, "HISTOGRAM_CHUNK", len(samples))
    whole = onnx_quant._histogram_ranges(fp32, samples, method, False, tmp_path)
    assert chunked.keys() == whole.keys() and len(whole) > 10
    for name, [ranges] in whole.items():
        for bound in ("rmin", "rmax"):
            assert chunked[name][0][bound] == pytest.approx(ranges[bound], rel=tolerance, abs=1e-6), name


def test_static_uint8_activations(fp32, tmp_path):
    out = tmp_path / "u8.onnx"
    ort_quantize_static(fp32, out, images(16), activation_type="uint8", per_channel=False)
    q = [n for n in onnx.load(str(out)).graph.node if n.op_type == "QuantizeLinear"]
    zero_points = {i.name: i for i in onnx.load(str(out)).graph.initializer}
    assert any(zero_points[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in q)
    assert _mean_cosine(fp32, out) > 0.98


def test_bad_arguments_are_config_errors(fp32, tmp_path):
    with pytest.raises(ConfigError, match="calibration method"):
        ort_quantize_static(fp32, tmp_path / "x.onnx", images(2), method="kl")
    with pytest.raises(ConfigError, match="empty"):
        ort_quantize_static(fp32, tmp_path / "x.onnx", images(0))
    with pytest.raises(ConfigError, match="int4"):
        ort_quantize_dynamic(fp32, tmp_path / "x.onnx", weight_type="int4")


def _zero_point_types(path: Path) -> dict[str, set[int]]:
    """ONNX data types of the zero points of activation Qs and of weight DQs."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    return {"activations": {inits[n.input[2]].data_type for n in nodes if n.op_type == "QuantizeLinear"},
            "weights": {inits[n.input[2]].data_type for n in nodes
                        if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(n.input) > 2
                        and inits[n.input[0]].data_type != onnx.TensorProto.INT32}}


def test_the_library_default_is_u8_activations_s8_weights(fp32, tmp_path):
    out = tmp_path / "default.onnx"
    report = ort_quantize_static(fp32, out, images(8))
    assert (report["activation_type"], report["weight_type"]) == ("uint8", "int8")
    assert _zero_point_types(out) == {"activations": {onnx.TensorProto.UINT8}, "weights": {onnx.TensorProto.INT8}}
    assert input_dtype(out) == input_dtype(fp32) == "float32"  # QDQ keeps the model's float inputs


CPU_RECIPE = """\
name: small-cnn
source: {file: cnn.onnx}
input: {name: input, shape: [1, 3, 32, 32], layout: NCHW, mean: 127.5, std: 127.5}
calibration: {synthetic: 16}
variants: [fp32, int8]
steps:
  - {kind: onnx.simplify, variant: fp32}
  - {kind: quantize.ort, variant: int8}
"""


@pytest.fixture(scope="module")
def cpu_int8(tmp_path_factory, fp32):
    """x86-tflite's toolchain stage for real, under umask 027: recipe steps ending in quantize.ort."""
    from builder.host import inputs
    from builder.host.planner import make_plan
    from builder.stage import execute
    from builder.workdir import PLAN

    root = fp32.parent
    (root / "recipe.yaml").write_text(CPU_RECIPE)
    recipe = catalog.load_recipe(root / "recipe.yaml", "x86-tflite")
    workdir = root / "work"
    workdir.mkdir()
    plan = make_plan(recipe, catalog.load_target("x86-tflite"), source=inputs.materialize(recipe, workdir).source)
    (workdir / PLAN).write_text(json.dumps(plan.to_json()))
    old = os.umask(0o027)
    try:
        records = {r["id"]: r for r in execute.run_stage(workdir, "toolchain")}
    finally:
        os.umask(old)
    assert all(r["status"] == "ok" for r in records.values()), records
    return plan, workdir, records


def test_a_cpu_target_gets_u8_activations_and_s8_weights(cpu_int8):
    plan, workdir, records = cpu_int8
    assert plan.to_json()["target"]["ort_quantization"] == {"activation_type": "uint8", "reduce_range": True}
    record = next(r for r in records.values() if r["kind"] == "quantize.ort")
    quantization = record["result"]["quantization"]
    assert (quantization["activation_type"], quantization["weight_type"]) == ("uint8", "int8")
    assert quantization["reduce_range"] is True  # x86 CPUs without VNNI saturate u8 x s8 with 8-bit weights
    artifact = workdir / plan.artifacts["int8"]
    assert _zero_point_types(artifact) == {"activations": {onnx.TensorProto.UINT8},
                                           "weights": {onnx.TensorProto.INT8}}


def test_the_results_give_the_artifacts_float_inputs_not_the_precision(cpu_int8):
    from builder.host.report import variant_results
    from builder.stage.execute import read_records

    plan, workdir, _ = cpu_int8
    assert plan.recipe.io_dtype_of("int8") == "int8"  # what the recipe alone would have claimed
    io = {v.name: v.io_dtype for v in variant_results(plan, read_records(workdir))}
    assert io == {"fp32": "float32", "int8": "float32"}


def test_the_step_writes_its_artifact_with_the_users_umask(cpu_int8):
    plan, workdir, _ = cpu_int8
    for variant in ("fp32", "int8"):
        assert stat.S_IMODE((workdir / plan.artifacts[variant]).stat().st_mode) == 0o640, variant


def test_tensorrt_keeps_s8_activations_and_8_bit_weights():
    ort = catalog.load_target("jetson").ort_quantization
    assert (ort.activation_type, ort.reduce_range) == ("int8", False)


def test_reduce_range_gives_7_bit_weights(fp32, tmp_path):
    import numpy as np
    from onnx import numpy_helper

    for reduce_range, low in ((False, -127), (True, -64)):
        out = tmp_path / f"rr-{reduce_range}.onnx"
        report = ort_quantize_static(fp32, out, images(8), reduce_range=reduce_range)
        assert report["reduce_range"] is reduce_range
        weights = [numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer
                   if i.data_type == onnx.TensorProto.INT8 and i.dims]
        assert min(int(w.min()) for w in weights) == low, reduce_range
        assert max(int(np.abs(w).max()) for w in weights) <= (127 if not reduce_range else 64)
        assert _mean_cosine(fp32, out) > 0.98


def test_the_search_ranks_layers_by_what_keeping_each_in_float_does_to_the_output(fp32, tmp_path):
    """Leave-one-out on a real QDQ model: each probed node is kept in float alone and the output's SNR against
    fp32 decides the order, not the node's own noise."""
    import logging

    from builder.stage.steps.search import Probe

    samples = images(16, seed=3)
    calibration = images(32)
    probe = Probe(samples, "onnxruntime", threads=1)
    probe.reference = [[ort_run(fp32, s[None])] for s in samples]
    nodes = [n.name for n in onnx.load(fp32).graph.node if n.op_type in ("Conv", "Gemm")]

    def build(kept: list[str]):
        return lambda path: ort_quantize_static(fp32, path, calibration, nodes_to_exclude=kept)

    found: dict = {}
    ranked = probe.by_effect(nodes[::-1], [], build, tmp_path / "probe.onnx", found, logging.getLogger("test"))
    effects = {e["name"]: e["value"] for e in found["effect_in_float"]["layers"]}
    assert sorted(ranked) == sorted(nodes) and set(effects) == set(nodes[:6])
    assert [effects[n] for n in ranked if n in effects] == sorted(effects.values(), reverse=True)
    ort_quantize_static(fp32, tmp_path / "all.onnx", calibration)  # every node in int8: below each probe
    everything = Probe(samples, "onnxruntime", threads=1, reference=probe.reference).snr_db(tmp_path / "all.onnx")
    assert everything <= max(effects.values())  # some node kept in float brings the output closer
