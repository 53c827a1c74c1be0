"""The Jetson/TensorRT parts that run without a GPU: builder settings and their trtexec twin,
trtexec's report, the .engine session's errors, and the QDQ model jetson's int8 chain feeds TensorRT."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import yaml
from click.testing import CliRunner
from onnx import numpy_helper
from onnx_models import INPUT_NCHW, cosine, images, ort_run

from builder.backends.tensorrt import runtime as trt_runtime
from builder.backends.tensorrt import trtexec
from builder.backends.tensorrt.steps import ToTensorrt, apply_settings, builder_settings, trtexec_command
from builder.errors import ConfigError, StepError
from builder.host import catalog
from builder.host.cli import cli
from builder.stage import runtimes
from builder.stage.steps import registry

BASE = ["--memPoolSize=workspace:1024M", "--builderOptimizationLevel=3", "--avgTiming=8"]


def settings(**params):
    return builder_settings(ToTensorrt.Params(**params))


# --- builder settings and the equivalent trtexec command ---------------------------------------


@pytest.mark.parametrize(("params", "flags", "precision_args"), [
    ({"precision": "fp32"}, (), []),
    ({"precision": "fp16"}, ("FP16",), ["--fp16"]),
    ({"precision": "int8"}, ("FP16", "INT8"), ["--fp16", "--int8"]),
])
def test_gpu_settings_and_their_trtexec_command(params, flags, precision_args):
    s = settings(**params)
    assert s.flags == flags and s.default_device_type == "GPU" and s.dla_core is None and not s.gpu_fallback
    assert s.workspace_bytes == 1024 * 2**20 and s.optimization_level == 3 and s.avg_timing_iterations == 8
    assert trtexec_command(s, "work/onnx/model.onnx", "m_fp16.engine") == [
        "trtexec", "--onnx=work/onnx/model.onnx", "--saveEngine=m_fp16.engine", *precision_args, *BASE]


def test_dla_settings_match_what_trtexec_sets_for_use_dla_core_with_gpu_fallback():
    s = settings(precision="fp16", dla_core=1)
    # trtexec --useDLACore sets kPREFER_PRECISION_CONSTRAINTS itself, --allowGPUFallback adds kGPU_FALLBACK
    assert s.flags == ("FP16", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS")
    assert (s.default_device_type, s.dla_core, s.gpu_fallback) == ("DLA", 1, True)
    assert trtexec_command(s, "model.onnx", "model.engine") == [
        "trtexec", "--onnx=model.onnx", "--saveEngine=model.engine", "--fp16", "--allowGPUFallback", *BASE,
        "--useDLACore=1"]


def test_int8_on_dla_core_0_with_a_small_workspace_and_the_highest_level():
    s = settings(precision="int8", dla_core=0, workspace_mb=256, optimization_level=5)
    assert s.flags == ("FP16", "INT8", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS")
    assert s.workspace_bytes == 256 << 20 and s.dla_core == 0
    assert trtexec_command(s, "q.onnx", "q.engine", binary="/usr/src/tensorrt/bin/trtexec") == [
        "/usr/src/tensorrt/bin/trtexec", "--onnx=q.onnx", "--saveEngine=q.engine", "--fp16", "--int8",
        "--allowGPUFallback", "--memPoolSize=workspace:256M", "--builderOptimizationLevel=5", "--avgTiming=8",
        "--useDLACore=0"]
    assert s.as_dict() == {"flags": ["FP16", "INT8", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS"],
                           "workspace_bytes": 268435456, "optimization_level": 5, "avg_timing_iterations": 8,
                           "default_device_type": "DLA", "dla_core": 0, "gpu_fallback": True}
    json.dumps(s.as_dict())  # recorded in the step result as is


def test_apply_settings_sets_each_value_on_the_builder_config():
    """No TensorRT here: a recording stand-in for the module and its IBuilderConfig."""
    trt = SimpleNamespace(MemoryPoolType=SimpleNamespace(WORKSPACE="pool:WORKSPACE"),
                          BuilderFlag=SimpleNamespace(**{f: f"flag:{f}" for f in
                                                         ("FP16", "INT8", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS")}),
                          DeviceType=SimpleNamespace(GPU="device:GPU", DLA="device:DLA"))

    class Config:
        def __init__(self):
            self.pools, self.set_flags = {}, []

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def set_flag(self, flag):
            self.set_flags.append(flag)

    config = Config()
    apply_settings(trt, config, settings(precision="int8", dla_core=1, workspace_mb=512, optimization_level=4))
    assert config.pools == {"pool:WORKSPACE": 512 << 20}
    assert config.set_flags == ["flag:FP16", "flag:INT8", "flag:GPU_FALLBACK", "flag:PREFER_PRECISION_CONSTRAINTS"]
    assert (config.builder_optimization_level, config.avg_timing_iterations) == (4, 8)
    assert (config.default_device_type, config.DLA_core) == ("device:DLA", 1)

    gpu = Config()
    apply_settings(trt, gpu, settings(precision="fp32"))
    assert gpu.set_flags == [] and gpu.default_device_type == "device:GPU" and not hasattr(gpu, "DLA_core")


@pytest.mark.parametrize(("params", "problem"), [
    ({"precision": "fp32", "dla_core": 0}, "dla_core needs precision fp16 or int8"),
    ({"optimization_level": 6}, "optimization_level"),
    ({"workspace_mb": 0}, "workspace_mb"),
    ({"dla_core": -1}, "dla_core"),
    ({"dla": 0}, "dla"),
])
def test_bad_params_are_config_errors(params, problem):
    with pytest.raises(ValueError, match="bad params for step 'convert.tensorrt'") as caught:
        registry.check_call("convert.tensorrt", params, where="params")
    assert problem in str(caught.value)
    with pytest.raises(ConfigError, match=problem):
        registry.params_of("convert.tensorrt", params)


def test_fp32_on_a_dla_core_in_a_target_file_exits_2_naming_the_field(tmp_path):
    data = yaml.safe_load(catalog.target_files()["jetson"].read_text())
    data["variants"]["fp32"] = {"step": "convert.tensorrt", "params": {"precision": "fp32", "dla_core": 0}}
    path = tmp_path / "targets" / "jetson.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "variants.fp32" in result.output and "dla_core needs precision fp16 or int8" in result.output


# --- trtexec's report ---------------------------------------------------------------------------

# Verbatim lines, in order, of the trtexec log in NVIDIA's TensorRT quickstart "1. Introduction.ipynb"
# (github.com/NVIDIA/TensorRT, tag v10.8.0, quickstart/IntroNotebooks): `trtexec --onnx=resnet50/model.onnx
# --saveEngine=...` with TensorRT 10.3.0. Left out: the options and build log, and all but one of the 262
# "Average on 10 runs" lines; from "=== Performance summary ===" on, the block is whole.
TRTEXEC_10_3 = "\n".join([
    "[08/09/2024-23:11:42] [I] TensorRT version: 10.3.0",
    "[08/09/2024-23:12:00] [I] Starting inference",
    "[08/09/2024-23:12:04] [I] Warmup completed 177 queries over 200 ms",
    "[08/09/2024-23:12:04] [I] Timing trace has 2622 queries over 3.00285 s",
    "[08/09/2024-23:12:04] [I] ",
    "[08/09/2024-23:12:04] [I] === Trace details ===",
    "[08/09/2024-23:12:04] [I] Trace averages of 10 runs:",
    "[08/09/2024-23:12:04] [I] Average on 10 runs - GPU latency: 1.1434 ms - Host latency: 1.2078 ms (enqueue 0.681778 ms)",
    "[08/09/2024-23:12:04] [I] ",
    "[08/09/2024-23:12:04] [I] === Performance summary ===",
    "[08/09/2024-23:12:04] [I] Throughput: 873.17 qps",
    "[08/09/2024-23:12:04] [I] Latency: min = 1.18591 ms, max = 1.36273 ms, mean = 1.20476 ms, "
    "median = 1.2041 ms, percentile(90%) = 1.21265 ms, percentile(95%) = 1.21558 ms, percentile(99%) = 1.22229 ms",
    "[08/09/2024-23:12:04] [I] Enqueue Time: min = 0.250732 ms, max = 1.58789 ms, mean = 0.682948 ms, "
    "median = 0.69696 ms, percentile(90%) = 0.746094 ms, percentile(95%) = 0.783936 ms, percentile(99%) = 0.883545 ms",
    "[08/09/2024-23:12:04] [I] H2D Latency: min = 0.0541382 ms, max = 0.09375 ms, mean = 0.057872 ms, "
    "median = 0.0571289 ms, percentile(90%) = 0.0585938 ms, percentile(95%) = 0.0678711 ms, percentile(99%) = 0.0698242 ms",
    "[08/09/2024-23:12:04] [I] GPU Compute Time: min = 1.12744 ms, max = 1.30353 ms, mean = 1.14253 ms, "
    "median = 1.14185 ms, percentile(90%) = 1.1499 ms, percentile(95%) = 1.151 ms, percentile(99%) = 1.15405 ms",
    "[08/09/2024-23:12:04] [I] D2H Latency: min = 0.00341797 ms, max = 0.0123291 ms, mean = 0.00436357 ms, "
    "median = 0.00415039 ms, percentile(90%) = 0.00537109 ms, percentile(95%) = 0.00561523 ms, percentile(99%) = 0.00817871 ms",
    "[08/09/2024-23:12:04] [I] Total Host Walltime: 3.00285 s",
    "[08/09/2024-23:12:04] [I] Total GPU Compute Time: 2.99571 s",
    "[08/09/2024-23:12:04] [I] Explanations of the performance metrics are printed in the verbose logs.",
    "[08/09/2024-23:12:04] [I] ",
    "&&&& PASSED TensorRT.trtexec [TensorRT v100300] # "
    "trtexec --onnx=resnet50/model.onnx --saveEngine=resnet_engine_intro.engine",
    "",
])


def test_parse_trtexec_performance_summary_of_tensorrt_10():
    result = trtexec.parse_trtexec(TRTEXEC_10_3)
    assert result == pytest.approx({
        "throughput_fps": 873.17, "runs": 2622, "warmup_runs": 177, "duration_ms": 3002.85,
        "gpu_compute_total_ms": 2995.71, "tensorrt": "10.3.0",
        "min_ms": 1.18591, "max_ms": 1.36273, "mean_ms": 1.20476, "p50_ms": 1.2041,
        "p90_ms": 1.21265, "p95_ms": 1.21558, "p99_ms": 1.22229,
        "enqueue_min_ms": 0.250732, "enqueue_max_ms": 1.58789, "enqueue_mean_ms": 0.682948, "enqueue_p50_ms": 0.69696,
        "enqueue_p90_ms": 0.746094, "enqueue_p95_ms": 0.783936, "enqueue_p99_ms": 0.883545,
        "h2d_min_ms": 0.0541382, "h2d_max_ms": 0.09375, "h2d_mean_ms": 0.057872, "h2d_p50_ms": 0.0571289,
        "h2d_p90_ms": 0.0585938, "h2d_p95_ms": 0.0678711, "h2d_p99_ms": 0.0698242,
        "gpu_compute_min_ms": 1.12744, "gpu_compute_max_ms": 1.30353, "gpu_compute_mean_ms": 1.14253,
        "gpu_compute_p50_ms": 1.14185, "gpu_compute_p90_ms": 1.1499, "gpu_compute_p95_ms": 1.151,
        "gpu_compute_p99_ms": 1.15405,
        "d2h_min_ms": 0.00341797, "d2h_max_ms": 0.0123291, "d2h_mean_ms": 0.00436357, "d2h_p50_ms": 0.00415039,
        "d2h_p90_ms": 0.00537109, "d2h_p95_ms": 0.00561523, "d2h_p99_ms": 0.00817871,
    })
    assert isinstance(result["runs"], int) and isinstance(result["warmup_runs"], int)


def test_parse_trtexec_without_a_summary_raises_with_the_log_tail():
    log = "[I] Loading engine\n[E] Error[1]: engine plan file is incompatible with this version of TensorRT\n"
    with pytest.raises(StepError, match="no performance summary") as caught:
        trtexec.parse_trtexec(log)
    assert any("incompatible" in line for line in caught.value.log_tail)


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_trtexec_binary_env_then_path_then_jetpack(monkeypatch, tmp_path):
    monkeypatch.setenv("TRTEXEC_BIN", str(tmp_path / "mine"))
    assert trtexec.trtexec_binary() == tmp_path / "mine"
    monkeypatch.delenv("TRTEXEC_BIN")
    (tmp_path / "bin").mkdir()
    on_path = _executable(tmp_path / "bin" / "trtexec", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert trtexec.trtexec_binary() == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(trtexec, "JETPACK_TRTEXEC", tmp_path / "usr-src-tensorrt-bin-trtexec")
    assert trtexec.trtexec_binary() is None
    jetpack = _executable(tmp_path / "usr-src-tensorrt-bin-trtexec", "#!/bin/sh\n")
    assert trtexec.trtexec_binary() == jetpack


def test_trtexec_tool_runs_the_binary_with_load_engine_and_parses_it(tmp_path):
    """A stand-in trtexec: records its arguments and prints NVIDIA's recorded log."""
    (tmp_path / "log.txt").write_text(TRTEXEC_10_3)
    binary = _executable(tmp_path / "trtexec", f'#!/bin/sh\necho "$@" > "{tmp_path}/args"\ncat "{tmp_path}/log.txt"\n')
    result = trtexec.trtexec_tool(tmp_path / "m_int8.engine", binary=binary, iterations=50, dla_core=1,
                                  shapes="input:1x3x224x224")
    assert (tmp_path / "args").read_text().split() == [
        f"--loadEngine={tmp_path / 'm_int8.engine'}", "--iterations=50", "--duration=3", "--warmUp=200",
        "--percentile=90,95,99", "--useDLACore=1", "--shapes=input:1x3x224x224"]
    assert result["tool"] == "trtexec" and result["p50_ms"] == 1.2041 and result["runs"] == 2622


def test_trtexec_times_what_we_time_on_the_engines_dla_core(tmp_path, monkeypatch):
    """The TensorRT runtime's second opinion (a stand-in trtexec printing NVIDIA's recorded log) runs on the
    session's DLA core, without the host<->device copies our timed call does not make either, and our p50 is
    compared with its Latency, not with GPU compute alone."""
    from builder.stage.runtimes import Timing, runtime_class
    from builder.stage.steps.measure import vs_tool

    (tmp_path / "log.txt").write_text(TRTEXEC_10_3)
    binary = _executable(tmp_path / "trtexec", f'#!/bin/sh\necho "$@" > "{tmp_path}/args"\ncat "{tmp_path}/log.txt"\n')
    monkeypatch.setenv("TRTEXEC_BIN", str(binary))
    session = SimpleNamespace(dla_core=1, dynamic=True, inputs=[SimpleNamespace(name="input", shape=(1, 3, 224, 224))])
    tools = runtime_class("tensorrt").second_opinions(tmp_path / "m.engine", session, Timing(
        threads=1, runs=10, warmup=1, throughput=False, emulated=False))
    figures = tools["trtexec"]()
    args = (tmp_path / "args").read_text().split()
    assert {"--useDLACore=1", "--noDataTransfers", "--shapes=input:1x3x224x224"} <= set(args)
    result = vs_tool({"p50_ms": figures["p50_ms"] * 1.02, "other_cpu_load": 0.0}, figures)
    assert result["tool_field"] == "p50_ms" and result["within_5pct"]


def test_without_trtexec_the_benchmark_records_why_it_has_no_trtexec_figures(tmp_path, monkeypatch):
    from builder.stage.runtimes import Timing, runtime_class
    from builder.stage.steps.measure import _second_opinion

    monkeypatch.delenv("TRTEXEC_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(trtexec, "JETPACK_TRTEXEC", tmp_path / "absent")
    tools = runtime_class("tensorrt").second_opinions(tmp_path / "m.engine", None, Timing(
        threads=1, runs=10, warmup=1, throughput=False, emulated=False))
    ctx = SimpleNamespace(log=SimpleNamespace(warning=lambda *a: None))
    assert _second_opinion(ctx, "trtexec", tools["trtexec"]) == {"error": "trtexec not found"}


def test_a_hung_trtexec_is_stopped_with_its_last_lines(tmp_path):
    binary = _executable(tmp_path / "trtexec", "#!/bin/sh\necho '[I] Loading engine'\nexec sleep 30\n")
    with pytest.raises(StepError, match="trtexec did not finish in 1 s") as caught:
        trtexec.trtexec_tool(tmp_path / "m.engine", binary=binary, timeout_s=1)
    assert caught.value.log_tail == ["[I] Loading engine"]


def test_trtexec_failure_carries_its_log(tmp_path):
    binary = _executable(tmp_path / "trtexec", "#!/bin/sh\necho '[E] Error[1]: Cannot deserialize engine'\nexit 1\n")
    with pytest.raises(StepError, match="trtexec exited with code 1") as caught:
        trtexec.trtexec_tool(tmp_path / "m.engine", binary=binary)
    assert caught.value.log_tail == ["[E] Error[1]: Cannot deserialize engine"]


def test_no_trtexec_anywhere_says_where_it_was_looked_for(monkeypatch, tmp_path):
    monkeypatch.delenv("TRTEXEC_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(trtexec, "JETPACK_TRTEXEC", tmp_path / "absent")
    with pytest.raises(StepError, match="trtexec not found") as missing:
        trtexec.trtexec_tool(tmp_path / "m.engine")
    assert "TRTEXEC_BIN" in missing.value.hint and "absent" in missing.value.hint


# --- the .engine runtime without TensorRT -------------------------------------------------------


def test_an_engine_goes_to_the_tensorrt_runtime_which_names_the_missing_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on every machine without TensorRT
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ConfigError, match="tensorrt is not installed") as caught:
        runtimes.load(engine)
    assert ".engine" in caught.value.message and "Jetson" in caught.value.hint
    with pytest.raises(ConfigError, match=r"runtime tensorrt has no option\(s\) \['device'\]") as options:
        runtimes.load(engine, device="GPU")
    assert "dla_core" in options.value.hint and "input_shapes" in options.value.hint


def test_missing_cuda_python_names_the_package(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match="cuda-python is not installed") as caught:
        trt_runtime._cudart()
    assert "pip install cuda-python" in caught.value.hint


def test_cuda_errors_become_step_errors():
    """With cuda-python installed: an invalid free fails with a driver (cudaErrorInvalidValue)
    and without one (cuda-python cannot load libcuda); both are StepErrors naming the call."""
    from cuda.bindings import runtime as cudart

    with pytest.raises(StepError, match="CUDA cudaFree failed"):
        trt_runtime.cuda_call(cudart, "cudaFree", 0xDEAD0)


# --- the QDQ model jetson's int8 chain gives TensorRT -------------------------------------------

RECIPE = """\
name: small-cnn
source: {file: cnn.onnx}
input: {name: input, shape: [1, 3, 32, 32], layout: NCHW, mean: 127.5, std: 127.5}
calibration: {synthetic: 16}
variants: [fp32, int8]
"""


@pytest.fixture(scope="module")
def jetson_int8(tmp_path_factory):
    """jetson's toolchain stage for real (onnx.simplify, quantize.ort with the target's params)."""
    from builder.host import inputs
    from builder.host.planner import make_plan
    from builder.stage import execute
    from builder.stage.convert.onnx import torch_to_onnx
    from builder.workdir import PLAN

    root = tmp_path_factory.mktemp("jetson")
    torch_to_onnx(root / "cnn.onnx", input_shape=INPUT_NCHW, factory="onnx_models:small_cnn")
    (root / "recipe.yaml").write_text(RECIPE)
    recipe = catalog.load_recipe(root / "recipe.yaml", "jetson")
    workdir = root / "work"
    workdir.mkdir()
    plan = make_plan(recipe, catalog.load_target("jetson"), source=inputs.materialize(recipe, workdir).source)
    (workdir / PLAN).write_text(json.dumps(plan.to_json()))
    records = {r["kind"]: r for r in execute.run_stage(workdir, "toolchain")}
    assert all(r["status"] == "ok" for r in records.values()), records
    quantize = next(s for s in plan.steps if s.kind == "quantize.ort")
    return root / "cnn.onnx", workdir / quantize.outputs["model"], records["quantize.ort"]["result"]["quantization"]


def _qdq(path: Path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return model, inits, [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def test_jetson_int8_is_symmetric_int8_qdq_as_tensorrt_requires(jetson_int8):
    source, quantized, report = jetson_int8
    assert report["symmetric_activations"] is True and report["quantize_bias"] is False
    model, inits, qdq = _qdq(quantized)
    assert {n.op_type for n in qdq} == {"QuantizeLinear", "DequantizeLinear"}
    for node in qdq:  # TensorRT's ONNX parser: "TensorRT only supports symmetric quantization"
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for node in qdq:
        if node.op_type == "QuantizeLinear":  # every activation Q has its DQ
            assert consumers[node.output[0]] == ["DequantizeLinear"], node.name
        elif node.input[0] in inits:  # a weight: int8, narrow range, per output channel
            weight = inits[node.input[0]]
            assert weight.dtype == np.int8 and weight.min() >= -127, node.name
            assert next((a.i for a in node.attribute if a.name == "axis"), 1) == 0, node.name
    assert not [n for n in qdq if inits.get(n.input[0], np.int8(0)).dtype == np.int32]  # biases stay float
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):  # both the activation and the weight arrive dequantized
            assert all(name.endswith("DequantizeLinear_Output") for name in node.input[:2]), node.name
    xs = images(8, seed=3)
    assert min(cosine(ort_run(quantized, x[None]), ort_run(source, x[None])) for x in xs) > 0.98


def test_onnx_runtimes_default_activations_are_asymmetric_so_jetson_sets_its_params(jetson_int8, tmp_path):
    from builder.backends.onnxruntime.quantize import ort_quantize_static

    source, _, _ = jetson_int8
    ort_quantize_static(source, tmp_path / "default.onnx", images(16))
    _, inits, qdq = _qdq(tmp_path / "default.onnx")
    assert any(inits[n.input[2]].any() for n in qdq)  # non-zero zero points: TensorRT's parser rejects these
    assert any(inits[n.input[0]].dtype == np.int32 for n in qdq if n.input[0] in inits)  # int32 bias DQ


# --- TensorRT's versions, its GPU and its engines, around a stand-in `tensorrt` module ----------------

PYBIND_TYPE_ERROR = (  # what trt.Builder(logger) raises when CUDA cannot start (error 100/801 logged before it)
    "__init__(): incompatible constructor arguments. The following argument types are supported:\n"
    "    1. tensorrt_bindings.tensorrt.Builder(logger: tensorrt_bindings.tensorrt.ILogger)\n\n"
    "Invoked with: <tensorrt_bindings.tensorrt.Logger object at 0x7f>")


def stand_in_tensorrt(version="10.3.0.30", *, explicit_batch=True, no_gpu=False, accepts_shape=True,
                      output_shape=(1, 10)):
    """A recording stand-in for the parts of the `tensorrt` module the step and the session touch."""
    calls = {}

    def gpu_class(name, **members):
        def init(self, logger):
            if no_gpu:
                raise TypeError(PYBIND_TYPE_ERROR)
        return type(name, (), {"__init__": init, **members})

    context = SimpleNamespace(
        set_input_shape=lambda name, shape: calls.setdefault("shapes", []).append((name, shape)) or accepts_shape,
        get_tensor_shape=lambda name: (1, 3, 8, 8) if name == "input" else output_shape)
    engine = SimpleNamespace(
        num_io_tensors=2, get_tensor_name=lambda i: ("input", "logits")[i],
        get_tensor_mode=lambda n: "INPUT" if n == "input" else "OUTPUT", get_tensor_dtype=lambda n: "FLOAT",
        get_tensor_shape=lambda n: (1, 3, 8, 8) if n == "input" else (1, -1) if -1 in output_shape else output_shape,
        create_execution_context=lambda: context)
    flags = SimpleNamespace(EXPLICIT_BATCH=0) if explicit_batch else SimpleNamespace(STRONGLY_TYPED=1)
    builder_members = {"num_DLA_cores": 0,
                       "create_network": lambda self, f: calls.setdefault("network_flags", f) and None}
    return SimpleNamespace(
        __version__=version, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=gpu_class("Builder", **builder_members),
        Runtime=gpu_class("Runtime", deserialize_cuda_engine=lambda self, data: engine),
        TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"), nptype=lambda dtype: np.float32,
        NetworkDefinitionCreationFlag=flags), calls


def test_explicit_batch_where_tensorrt_has_the_flag_none_where_it_is_gone():
    from builder.backends.tensorrt.steps import network_flags

    assert network_flags(stand_in_tensorrt("8.6.2")[0]) == 1  # 1 << EXPLICIT_BATCH: 8.6 is implicit-batch without it
    assert network_flags(stand_in_tensorrt("10.3.0", explicit_batch=False)[0]) == 0


@pytest.mark.parametrize("version", ["8.5.2.2", "11.0.0.1", "7"])
def test_a_tensorrt_outside_the_tested_range_is_refused_by_name(version, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", stand_in_tensorrt(version)[0])
    with pytest.raises(StepError, match=rf"TensorRT {version} is outside the tested range 8.6 to 11.x"):
        trt_runtime.check_version(version)
    (tmp_path / "m.engine").write_bytes(b"plan")
    with pytest.raises(StepError, match=f"TensorRT {version}"):
        runtimes.load(tmp_path / "m.engine")


@pytest.mark.parametrize("version", ["8.6.2.3", "10.3.0.30", "10.13.3.9"])
def test_tested_versions_pass(version):
    trt_runtime.check_version(version)


def test_a_builder_that_cannot_reach_the_gpu_is_a_classified_step_error(tmp_path, monkeypatch):
    from builder.errors import GpuUnavailable

    trt, _ = stand_in_tensorrt(no_gpu=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    ctx = SimpleNamespace(input=lambda name: tmp_path / "m.onnx")
    with pytest.raises(GpuUnavailable, match="TensorRT could not create its builder: __init__") as caught:
        ToTensorrt().run(ctx, ToTensorrt.Params(precision="fp16"))
    assert caught.value.cause == "gpu-unavailable"
    assert "--group-add video" in caught.value.hint and "NVIDIA_VISIBLE_DEVICES" in caught.value.hint
    (tmp_path / "m.engine").write_bytes(b"plan")
    with pytest.raises(GpuUnavailable, match="could not create its runtime"):
        runtimes.load(tmp_path / "m.engine")


def test_cuda_without_a_driver_is_gpu_unavailable():
    from cuda.bindings import runtime as cudart

    from builder.errors import GpuUnavailable

    with pytest.raises(GpuUnavailable, match="CUDA cudaGetDeviceCount failed") as caught:
        trt_runtime.cuda_call(cudart, "cudaGetDeviceCount")
    assert caught.value.cause == "gpu-unavailable"


def test_a_shape_outside_the_engines_profile_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", stand_in_tensorrt(accepts_shape=False)[0])
    (tmp_path / "m.engine").write_bytes(b"plan")
    with pytest.raises(StepError, match=r"TensorRT refused the shape \(1, 3, 8, 8\) for input 'input'"):
        runtimes.load(tmp_path / "m.engine")


def test_a_data_dependent_output_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", stand_in_tensorrt(output_shape=(-1, 4))[0])
    (tmp_path / "m.engine").write_bytes(b"plan")
    with pytest.raises(StepError, match=r"output 'logits' has a data-dependent shape \(-1, 4\)"):
        runtimes.load(tmp_path / "m.engine")


def test_an_engine_built_for_a_dla_core_is_benchmarked_and_validated_on_it(tmp_path):
    from builder.config.target import ChainStep
    from builder.host.planner import make_plan

    (tmp_path / "model.onnx").touch()
    recipe = catalog.Recipe.model_validate(
        {"name": "m", "source": {"file": "model.onnx"}, "input": {"shape": [1, 3, 32, 32], "layout": "NCHW"},
         "calibration": {"synthetic": 4}, "variants": ["fp32", "fp16"]}, context={"path": tmp_path / "r.yaml"})
    jetson = catalog.load_target("jetson")
    on_dla = jetson.model_copy(update={"variants": {**jetson.variants, "fp16": [
        ChainStep(step="convert.tensorrt", params={"precision": "fp16", "dla_core": 1})]}})
    plan = make_plan(recipe, on_dla)
    measured = {(s.kind, s.variant): s.params["runtime_options"] for s in plan.steps if s.kind in ("benchmark", "validate")}
    assert measured == {("benchmark", "fp32"): {}, ("benchmark", "fp16"): {"dla_core": 1},
                        ("validate", "fp32"): {}, ("validate", "fp16"): {"dla_core": 1}}


def test_tensorrts_cuda_initialisation_error_in_a_log_is_classified():
    from builder.stage.causes import known_cause

    # TensorRT's own line when a non-root user outside `video` creates a builder on a Jetson
    assert known_cause("[TRT] [W] CUDA initialization failure with error: 801. Please check your CUDA "
                       "installation: http://docs.nvidia.com/cuda/cuda-installation-guide-linux/index.html") \
        == "gpu-unavailable"
