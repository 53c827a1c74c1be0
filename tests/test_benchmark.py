"""builder.stage.timing: timing real sessions, OpenVINO throughput and the vendors' tools."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import runtime_models as rm

from builder.backends.litert import benchmark_model
from builder.backends.openvino import benchmark_app
from builder.backends.openvino import runtime as openvino_runtime
from builder.errors import ConfigError, StepError
from builder.stage import runtimes, timing
from builder.stage.steps.measure import vs_tool

KEYS = {
    "runtime", "threads", "warmup", "runs", "mean_ms", "std_ms", "min_ms", "max_ms",
    "p50_ms", "p90_ms", "p99_ms", "throughput_fps", "peak_rss_mb", "other_cpu_load",
}  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    onnx_path = rm.write_onnx(rm.weights(), folder / "tiny.onnx")
    return {"onnx": onnx_path, "xml": rm.write_openvino(onnx_path, folder / "tiny.xml")}


def test_measure_returns_sane_statistics(models):
    session = runtimes.load(models["onnx"], threads=2)
    result = timing.measure(session, warmup=3, runs=40)
    assert KEYS <= result.keys()
    assert (result["runtime"], result["threads"], result["warmup"], result["runs"]) == ("onnxruntime", 2, 3, 40)
    assert 0 < result["min_ms"] <= result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["min_ms"] <= result["mean_ms"] <= result["max_ms"] and result["std_ms"] >= 0
    assert result["throughput_fps"] == pytest.approx(1000.0 / result["mean_ms"])
    # two samplers (psutil thread, ru_maxrss) of one peak: equal within their granularity
    assert 10 < result["peak_rss_mb"] <= result["process_peak_rss_mb"] * 1.01
    assert 0 <= result["other_cpu_load"] <= 1


def test_measure_times_the_prepared_inference_and_nothing_else(models, monkeypatch):
    session = runtimes.load(models["xml"])
    bind, calls = session.prepared, []

    def slow_binding(inputs):  # fault injection: binding takes 0.3 s, none of which may be timed
        time.sleep(0.3)
        infer = bind(inputs)
        return lambda: calls.append(1) or infer()

    monkeypatch.setattr(session, "prepared", slow_binding)
    result = timing.measure(session, warmup=2, runs=10)
    assert len(calls) == 12 and result["runs"] == 10
    assert result["max_ms"] < 300


def test_no_sampling_thread_runs_beside_the_timed_runs(models):
    session = runtimes.load(models["xml"])
    seen: list[set[str]] = []
    result = timing.measure(session, warmup=3, runs=5, progress=lambda d, t: seen.append({t.name for t in threading.enumerate()}))
    assert len(seen) == 5 and not any("peak-rss" in names for names in seen)
    assert result["peak_rss_mb"] > 10  # sampled while warming up, and after


def test_other_load_sees_a_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        with timing.OtherLoad() as load:
            time.sleep(0.5)
    finally:
        busy.kill()
        busy.wait()
    # the busy process alone keeps one CPU busy, whatever else the machine runs
    assert 0.8 / os.cpu_count() <= load.share <= 1


def test_measure_keeps_running_until_min_seconds(models):
    session = runtimes.load(models["xml"])
    seen: list[tuple[int, int]] = []
    t0 = time.perf_counter()
    result = timing.measure(session, warmup=0, runs=3, min_seconds=0.3, progress=lambda d, t: seen.append((d, t)))
    assert time.perf_counter() - t0 >= 0.3
    assert result["runs"] > 3 and result["runtime"] == "openvino"
    assert seen[0] == (1, 3) and seen[-1] == (result["runs"], result["runs"])
    assert result["mean_ms"] * result["runs"] <= 1000 * (time.perf_counter() - t0)


def test_measure_uses_given_inputs_and_wraps_runtime_failures(models):
    session = runtimes.load(models["onnx"])
    wrong = [np.zeros((1, 3, 8, 8), np.float32)]
    with pytest.raises(StepError, match="onnxruntime inference failed during the benchmark"):
        timing.measure(session, warmup=1, runs=2, inputs=wrong)
    with pytest.raises(ConfigError, match="runs >= 1"):
        timing.measure(session, runs=0)


def test_measure_load_times_initialisation(models):
    session, init_ms = timing.measure_load(models["xml"], threads=1, precision="f32")
    assert session.runtime == "openvino" and session.threads == 1
    assert init_ms > 0


def test_peak_rss_sees_a_short_lived_allocation():
    with timing.PeakRSS() as quiet:
        time.sleep(0.05)
    with timing.PeakRSS() as busy:
        block = np.ones(200 * 2**20, np.uint8)  # 200 MB, touched
        time.sleep(0.05)
        del block
    assert busy.peak_mb - quiet.peak_mb > 150


def test_openvino_throughput_uses_optimal_requests(models):
    result = openvino_runtime.async_throughput(models["xml"], seconds=0.5)
    assert result["mode"] == "throughput" and result["requests"] >= 1
    assert result["infers"] > 0 and result["seconds"] >= 0.5
    assert result["throughput_fps"] == pytest.approx(result["infers"] / result["seconds"])


def test_a_runtimes_own_figures_go_into_the_section_its_backend_declares(models, tmp_path):
    from builder.records import BenchmarkResult, check_result
    from builder.stage.device_check import TINY

    tflite = tmp_path / "tiny.tflite"
    tflite.write_bytes(TINY["tflite"].data)
    spec = runtimes.Timing(threads=1, runs=1, warmup=0, throughput=False, emulated=False)
    for model, section in ((models["xml"], "openvino"), (tflite, "litert")):
        session = runtimes.load(model, threads=1)
        result = timing.measure(session, warmup=0, runs=2)
        result |= runtimes.runtime_class(session.runtime).extra_figures(model, session, spec)
        check_result("benchmark", {"benchmark": result})
        assert list(BenchmarkResult.model_validate(result).extra) == [section]
    assert result["extra"]["litert"] == {"xnnpack_applied": True, "interpreter": "ai_edge_litert"}
    figures = runtimes.runtime_class("openvino").extra_figures(models["xml"], runtimes.load(models["xml"]), spec)
    assert figures == {"extra": {"openvino": {"device": "CPU", "inference_precision": "f32"}}}


@pytest.mark.slow
def test_measure_litert_int8(tmp_path):
    path = rm.write_tflite(rm.keras_cnn(rm.weights()), tmp_path / "int8.tflite", io="int8")
    session = runtimes.load(path, threads=1)
    result = timing.measure(session, warmup=2, runs=20)
    assert result["runtime"] == "litert" and result["threads"] == 1 and result["runs"] == 20
    assert session.example_inputs()[0].dtype == np.int8


# --- TFLite benchmark_model ----------------------------------------------------

BENCHMARK_MODEL_NEW = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Min warmup runs: [5]
INFO: Num threads: [2]
INFO: Graph: [/work/mobilenet_int8.tflite]
INFO: #threads used for CPU inference: [2]
INFO: Loaded model /work/mobilenet_int8.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: XNNPack weight cache not enabled.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 3.97759
INFO: Initialized session in 21.634ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=472 first=2311 curr=1012 min=981 max=2311 avg=1056.7 std=94 p5=990 median=1031 p95=1198

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=944 first=1044 curr=1019 min=978 max=1.6542e+03 avg=1.05963e+03 std=61 p5=989 median=1042 p95=1133

INFO: Inference timings in us: Init: 21634, First inference: 2311, Warmup (avg): 1056.7, Inference (avg): 1.05963e+03
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=8.48828 overall=12.3672
"""

BENCHMARK_MODEL_OLD = """\
STARTING!
Num runs: [50]
Num threads: [4]
Graph: [/data/local/tmp/yolov5s_fp32_640.tflite]
Loaded model /data/local/tmp/yolov5s_fp32_640.tflite
Initialized session in 16.242ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=2 first=360262 curr=248910 min=248910 max=360262 avg=304586 std=55676

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442

Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Peak memory footprint (MB): init=4.92969 overall=138.809
"""


def test_parse_benchmark_model_new_format_takes_the_measured_run():
    result = benchmark_model.parse_benchmark_model(BENCHMARK_MODEL_NEW)
    assert result["runs"] == 944
    assert result["mean_ms"] == pytest.approx(1.05963)
    assert (result["std_ms"], result["min_ms"], result["max_ms"], result["p50_ms"]) == pytest.approx(
        (0.061, 0.978, 1.6542, 1.042)
    )
    assert (result["init_ms"], result["first_ms"], result["warmup_mean_ms"]) == pytest.approx((21.634, 2.311, 1.0567))
    assert result["throughput_fps"] == pytest.approx(1000 / 1.05963)
    assert (result["memory_init_mb"], result["memory_overall_mb"]) == pytest.approx((8.48828, 12.3672))


def test_parse_benchmark_model_old_format_has_no_median():
    result = benchmark_model.parse_benchmark_model(BENCHMARK_MODEL_OLD)
    assert result["runs"] == 50 and result["p50_ms"] is None
    assert (result["mean_ms"], result["std_ms"], result["min_ms"], result["max_ms"]) == pytest.approx(
        (249.684, 1.442, 247.067, 254.474)
    )
    assert result["memory_overall_mb"] == pytest.approx(138.809)


def test_parse_benchmark_model_without_timings_raises_with_tail():
    log = "INFO: Loaded model m.tflite\nERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'\n"
    with pytest.raises(StepError) as caught:
        benchmark_model.parse_benchmark_model(log)
    assert caught.value.log_tail[-1].startswith("ERROR: Didn't find op")


def test_benchmark_model_tool_failure_reports_last_lines(tmp_path):
    # fault injection: a stand-in binary that fails the way benchmark_model does on a bad model
    fake = tmp_path / "benchmark_model"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "INFO: Graph: [$1]"\n'
        "echo 'ERROR: Could not build model from the provided pointer.' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(StepError, match="benchmark_model exited with code 1") as caught:
        benchmark_model.benchmark_model_tool(fake, tmp_path / "m.tflite", threads=2, runs=5, warmup=1)
    assert caught.value.log_tail == [
        f"INFO: Graph: [--graph={tmp_path / 'm.tflite'}]",
        "ERROR: Could not build model from the provided pointer.",
    ]
    with pytest.raises(StepError, match="could not be started") as missing:
        benchmark_model.benchmark_model_tool(tmp_path / "absent", tmp_path / "m.tflite", threads=2, runs=5, warmup=1)
    assert "BENCHMARK_MODEL_BIN" in missing.value.hint


def test_benchmark_model_binary_prefers_the_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCHMARK_MODEL_BIN", str(tmp_path / "bm"))
    assert benchmark_model.benchmark_model_binary() == tmp_path / "bm"


# --- OpenVINO benchmark_app ----------------------------------------------------

BENCHMARK_APP = """\
[Step 7/11] Loading the model to the device
[ INFO ] Compile model took 286.35 ms
[Step 8/11] Querying optimal runtime parameters
[ INFO ]   OPTIMAL_NUMBER_OF_INFER_REQUESTS: 1
[ INFO ]   INFERENCE_PRECISION_HINT: <Type: 'float32'>
[ INFO ]   INFERENCE_NUM_THREADS: 2
[Step 10/11] Measuring performance (Start inference synchronously, limits: 1000 ms duration)
[ INFO ] Benchmarking in inference only mode (inputs filling are not included in measurement loop).
[ INFO ] First inference took 3.46 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            719 iterations
[ INFO ] Duration:         1001.71 ms
[ INFO ] Latency:
[ INFO ]    Median:        0.86 ms
[ INFO ]    Average:       1.34 ms
[ INFO ]    Min:           0.53 ms
[ INFO ]    Max:           56.20 ms
[ INFO ] Throughput:   717.77 FPS
"""


def test_parse_benchmark_app_report():
    assert benchmark_app.parse_benchmark_app(BENCHMARK_APP) == {
        "runs": 719, "duration_ms": 1001.71, "p50_ms": 0.86, "mean_ms": 1.34, "min_ms": 0.53,
        "max_ms": 56.20, "throughput_fps": 717.77, "first_ms": 3.46, "compile_ms": 286.35, "threads": 2,
    }  # fmt: skip


def test_parse_benchmark_app_converts_microseconds():
    tiny_model_report = """\
[ INFO ] Count:            24987 iterations
[ INFO ] Duration:         1000.34 ms
[ INFO ] Latency:
[ INFO ]    Median:        18.72 us
[ INFO ]    Average:       32.37 us
[ INFO ]    Min:           14.24 us
[ INFO ]    Max:           5390.64 us
[ INFO ] Throughput:   24978.43 FPS
"""
    result = benchmark_app.parse_benchmark_app(tiny_model_report)
    assert (result["p50_ms"], result["mean_ms"], result["min_ms"], result["max_ms"]) == pytest.approx(
        (0.01872, 0.03237, 0.01424, 5.39064)
    )
    assert result["duration_ms"] == 1000.34 and result["compile_ms"] is None and result["threads"] is None


@pytest.mark.slow
def test_benchmark_app_runs_for_real(models):
    result = benchmark_app.benchmark_app_tool(models["xml"], seconds=1, hint="latency", threads=1)
    assert result["tool"] == "benchmark_app" and result["runs"] > 0
    assert result["threads"] == 1  # as its compiled model reports it, with the latency hint kept
    assert 0 < result["min_ms"] <= result["p50_ms"] <= result["max_ms"]
    assert result["throughput_fps"] > 0


def test_benchmark_app_failure_carries_its_log(tmp_path):
    with pytest.raises(StepError, match="benchmark_app exited") as caught:
        benchmark_app.benchmark_app_tool(tmp_path / "absent.xml", seconds=1)
    assert any("absent.xml" in line for line in caught.value.log_tail)


# --- ours against the vendor tool ----------------------------------------------


def test_vs_tool_within_five_percent_needs_no_reason():
    assert vs_tool({"p50_ms": 2.09, "other_cpu_load": 0.7}, {"p50_ms": 2.0}) == {
        "p50_ratio": 1.045, "tool_field": "p50_ms", "within_5pct": True, "why": None,
    }  # fmt: skip


def test_vs_tool_says_why_when_apart():
    loaded = vs_tool({"p50_ms": 3.0, "other_cpu_load": 0.42}, {"p50_ms": 2.0})
    assert (loaded["p50_ratio"], loaded["within_5pct"]) == (1.5, False)
    assert loaded["why"] == "other processes used 42% of the CPUs while ours ran"
    emulated = vs_tool({"p50_ms": 1.0, "emulated": True, "other_cpu_load": 0.0}, {"p50_ms": 2.0})
    assert emulated["why"].startswith("emulated")
    quiet = vs_tool({"p50_ms": 3.0, "other_cpu_load": 0.01}, {"p50_ms": 2.0})
    assert quiet["why"] == "unexplained: other processes used only 1% of the CPUs"


def test_vs_tool_says_what_the_tool_leaves_out_of_its_timing():
    timer = benchmark_app.TIMER
    slower = vs_tool({"p50_ms": 2.1, "other_cpu_load": 0.01}, {"p50_ms": 1.9, "timer": timer})
    assert slower["why"] == f"the tool times {timer}; ours times the whole call"
    faster = vs_tool({"p50_ms": 1.7, "other_cpu_load": 0.01}, {"p50_ms": 1.9, "timer": timer})
    assert faster["why"].startswith("unexplained")  # leaving time out never makes the tool slower
