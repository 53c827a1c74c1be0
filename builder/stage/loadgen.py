"""MLCommons LoadGen's scenarios around a loaded runtime session, and its figures read from its own log files.

LoadGen (`mlcommons-loadgen`, imported as `mlperf_loadgen`) decides when queries are issued, how many, and
whether a run is VALID by MLPerf's rules (enough queries, long enough, early stopping); our system under test
only runs the inference the session has prepared (the quick harness's, inputs bound once) and says when it
is done. Every query runs the same bound input, as the quick harness does. The figures are read back from the
files LoadGen writes (mlperf_log_summary.txt, mlperf_log_detail.txt), which the benchmark step keeps beside
the artifact. MLCommons publishes wheels for x86-64 only: an image without them says so, and its benchmark
gives the quick harness's figures alone.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import StepError
from builder.stage.runtimes import Session

MODULE = "mlperf_loadgen"
DISTRIBUTION = "mlcommons-loadgen"
SCENARIOS = {"single-stream": "SingleStream", "offline": "Offline"}  # ours -> LoadGen's
UNAVAILABLE = "loadgen unavailable on this image: quick harness figures"
SUMMARY, DETAIL = "mlperf_log_summary.txt", "mlperf_log_detail.txt"
NS_PER_MS = 1e6
HEADROOM = 2  # LoadGen is told inference takes half the quick harness's fastest: it sizes its schedule for
# min_duration at that pace, and a run that outpaces the schedule ends INVALID (single-stream: "ran out of
# generated queries"; offline: its one query ends before min_duration). The fastest of a few runs on a busy
# host is slower than an idle stretch of the run itself.


@dataclass(frozen=True)
class Settings:
    """The recipe's LoadGen settings (config.recipe.Benchmark)."""

    scenario: str  # single-stream | offline
    min_query_count: int
    min_duration_ms: int
    target_latency_percentile: float


def available() -> bool:
    """Whether LoadGen is installed here (its import is not tried: it loads a native library)."""
    return importlib.util.find_spec(MODULE) is not None


def unavailable(settings: Settings) -> dict:
    """The record of a scenario asked for where LoadGen is not installed: no figure of its own."""
    return {"scenario": settings.scenario, "available": False, "note": UNAVAILABLE}


def run(session: Session, settings: Settings, *, expected_ms: float, summary: Path, detail: Path) -> dict:
    """Run `settings.scenario` on the session's prepared inference, keep LoadGen's summary and detail logs at
    `summary` and `detail`, and return the figures read from them.

    `expected_ms`: a quick estimate of one inference (the quick harness's fastest), which LoadGen sizes its
    query schedule with, at HEADROOM times the pace (a slower run lasts longer, never shorter)."""
    import mlperf_loadgen as lg

    infer = session.prepared(session.example_inputs())
    failures: list[BaseException] = []

    def issue_queries(samples) -> None:  # single-stream: one sample a query; offline: all of them in one
        for _ in samples:
            if failures:
                break
            try:
                infer()
            except Exception as exc:  # each runtime raises its own types; LoadGen must still see the query end
                failures.append(exc)
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, 0, 0) for sample in samples])

    test = lg.TestSettings()
    test.scenario = getattr(lg.TestScenario, SCENARIOS[settings.scenario])
    test.mode = lg.TestMode.PerformanceOnly
    test.min_query_count = settings.min_query_count
    test.min_duration_ms = settings.min_duration_ms
    test.single_stream_target_latency_percentile = settings.target_latency_percentile
    test.single_stream_expected_latency_ns = max(1, round(expected_ms * NS_PER_MS / HEADROOM))
    test.offline_expected_qps = HEADROOM * 1000.0 / max(expected_ms, 1e-6)
    sut = lg.ConstructSUT(issue_queries, lambda: None)
    qsl = lg.ConstructQSL(1, 1, lambda indices: None, lambda indices: None)  # one input, bound once
    try:
        with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
            logs = lg.LogSettings()
            logs.log_output.outdir = tmp
            logs.log_output.copy_summary_to_stdout = False
            logs.enable_trace = False
            lg.StartTestWithLogSettings(sut, qsl, test, logs)
            for name, dest in ((SUMMARY, summary), (DETAIL, detail)):
                if not (Path(tmp) / name).is_file():
                    raise StepError(f"LoadGen wrote no {name}", hint="LoadGen's own messages are in the step's log")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / name, dest)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if failures:
        raise StepError(f"{session.runtime} inference failed under LoadGen: {failures[0]}") from failures[0]
    return parse(summary, detail)


# --- its log files ------------------------------------------------------------------------------------------

_MLLOG = ":::MLLOG "


def detail_entries(path: Path) -> dict:
    """mlperf_log_detail.txt's entries by key (one JSON object a line, after `:::MLLOG `); a key logged twice
    keeps its last value."""
    entries = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(_MLLOG):
            try:
                entry = json.loads(line[len(_MLLOG):])
            except json.JSONDecodeError:
                continue
            entries[entry["key"]] = entry["value"]
    return entries


def summary_entries(path: Path) -> dict[str, str]:
    """mlperf_log_summary.txt's `name : value` lines, by name (spaces around the colon vary)."""
    pairs = (re.match(r"^\s*([^:*]+?)\s*:\s*(.+?)\s*$", line) for line in path.read_text(errors="replace").splitlines())
    return {m.group(1): m.group(2) for m in pairs if m}


def _ms(ns) -> float | None:
    return None if ns is None else round(float(ns) / NS_PER_MS, 6)


def _percentile_words(fraction: float) -> str:
    return f"{fraction * 100:.1f}th percentile"


def parse(summary: Path, detail: Path) -> dict:
    """The figures of a LoadGen run from its own logs: validity and why, the latency at the target percentile
    and LoadGen's early-stopping estimate of it (single-stream), samples per second (offline), the query count,
    and the settings it used (its `effective_*` entries)."""
    for path in (summary, detail):
        if not path.is_file():
            raise StepError(f"LoadGen's {path.name} is missing: LoadGen did not run",
                            hint="the benchmark step writes it beside the artifact; rerun with --remeasure")
    facts, lines = detail_entries(detail), summary_entries(summary)
    validity = lines.get("Result is") or facts.get("result_validity")
    if validity not in ("VALID", "INVALID"):
        raise StepError(f"{summary.name} names no result (VALID or INVALID): LoadGen did not finish")
    scenario = {v: k for k, v in SCENARIOS.items()}.get(facts.get("effective_scenario"), facts.get("effective_scenario"))
    percentile = facts.get("effective_target_latency_percentile")
    result = {
        "scenario": scenario,
        "available": True,
        "valid": validity == "VALID",
        "validity": validity,
        "min_duration_met": facts.get("result_min_duration_met"),
        "min_queries_met": facts.get("result_min_queries_met"),
        "early_stopping_met": facts.get("early_stopping_met"),
        "invalid_reason": (facts.get("result_invalid_reason") or "").strip() or None,
        "query_count": facts.get("result_query_count"),
        "mean_ms": _ms(facts.get("result_mean_latency_ns")),
        "p50_ms": _ms(facts.get("result_50.00_percentile_latency_ns")),
        "p90_ms": _ms(facts.get("result_90.00_percentile_latency_ns")),
        "p99_ms": _ms(facts.get("result_99.00_percentile_latency_ns")),
        "errors": facts.get("num_errors"),
        "version": str(facts.get("loadgen_version", "")).split(" @ ")[0] or None,
        "settings": {
            "min_query_count": facts.get("effective_min_query_count"),
            "min_sample_count": facts.get("effective_min_sample_count"),
            "min_duration_ms": facts.get("effective_min_duration_ms"),
            "samples_per_query": facts.get("effective_samples_per_query"),
            "target_qps": facts.get("effective_target_qps"),
            "performance_sample_count": facts.get("effective_performance_sample_count"),
        },
        "logs": [summary.name, detail.name],
    }
    if scenario == "single-stream":
        words = _percentile_words(percentile)
        result |= {"target_latency_percentile": percentile,
                   "percentile_latency_ms": _ms(lines.get(f"{words} latency (ns)")),
                   "early_stopping_ms": _ms(facts.get("early_stopping_latency_ss")),
                   "qps": facts.get("result_qps_without_loadgen_overhead")}
        result["settings"]["target_latency_percentile"] = percentile
        if result["percentile_latency_ms"] is None:
            raise StepError(f"{summary.name} has no {words} latency", hint="LoadGen's summary changed its words")
    else:
        per_second = lines.get("Samples per second") or facts.get("result_samples_per_second")
        result["samples_per_second"] = None if per_second is None else float(per_second)
    return result
