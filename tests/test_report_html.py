"""The recommendation (report.md, results.json) and the HTML pages (report.html, status.html, compare --html),
opened in a real headless chromium: no console errors, nothing fetched from outside, every plot drawn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_compare import results, slower, variant, write_run

from builder.host import html_report
from builder.host.cli import cli
from builder.host.matrix import write_status
from builder.host.report import recommendation, recommendation_lines
from builder.host.run import Outcome
from builder.records import Results, VariantResult, load_results

CHROMIUM = "/usr/bin/chromium"  # Debian's package (apt-get install chromium); Playwright's own download is not used


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, path: Path):
    """The page, once loaded, with its console errors and every request that left the file."""
    page = browser.new_page()
    errors, outside = [], []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: outside.append(req.url) if req.url != path.as_uri() else None)
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, outside


def drawn_plots(page) -> list[dict]:
    """Per plot: its caption, its size on screen and how many shapes and texts its SVG draws."""
    return page.eval_on_selector_all("figure.plot", """figs => figs.map(f => {
        const svg = f.querySelector('svg'), box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
        return {caption: f.querySelector('figcaption').textContent, width: box.width, height: box.height,
                shapes: svg ? svg.querySelectorAll('path, use, rect').length : 0,
                texts: svg ? Array.from(svg.querySelectorAll('text')).map(t => t.textContent) : []};
    })""")


def assert_clean(errors: list[str], outside: list[str]) -> None:
    assert errors == [], errors
    assert outside == [], f"the page fetched {outside}: it must open with no network"


@pytest.mark.slow
def test_a_run_writes_report_html_beside_report_md_with_every_plot_drawn(tiny_x86_tflite_run, browser):
    page, errors, outside = open_page(browser, tiny_x86_tflite_run / "report.html")
    assert_clean(errors, outside)
    plots = drawn_plots(page)
    assert [p["caption"] for p in plots] == ["Latency per variant: p50, with p90 and p99",
                                             "top1 agreement against p50 latency (ms)", "top1 agreement against size (KB)"]
    for p in plots:
        assert p["width"] > 200 and p["height"] > 150 and p["shapes"] > 10, p
    for name in ("fp32", "fp16", "dynamic", "int8", "int8-uint8"):  # a bar and a point each, labelled
        assert name in plots[0]["texts"] and name in plots[1]["texts"]
    assert "Pareto front" in plots[1]["texts"]
    assert "per-layer" not in page.content()  # no result of this run carries per-layer error


@pytest.mark.slow
def test_the_report_opens_with_the_recommendation_also_in_results_json(tiny_x86_tflite_run):
    payload = json.loads((tiny_x86_tflite_run / "results.json").read_text())
    rec = payload["recommendation"]
    timed = {v["name"]: v["benchmark"]["p50_ms"] for v in payload["variants"]}
    assert rec["variant"] == min(timed, key=timed.get) and rec["baseline"] == "fp32"
    assert rec["speedup_vs_fp32"] == pytest.approx(timed["fp32"] / timed[rec["variant"]])
    report = (tiny_x86_tflite_run / "report.md").read_text()
    assert report.split("\n")[2:5] == ["## Recommendation", "", report.split("\n")[4]]
    assert report.split("\n")[4].startswith(f"**Ship `{rec['variant']}`**: p50 ")


def test_recommendation_picks_the_fastest_variant_within_every_gate_and_flags_the_rest():
    gate_failed = variant("int8", 2.0, precision="int8", size=1_800_000, status="gate-failed")
    variants = [variant("fp32", 10.0), variant("fp16", 6.0, precision="fp16", size=3_300_000),
                variant("dynamic", 19.6, precision="dynamic", size=1_800_000), gate_failed,
                variant("int8-bad", 1.0, precision="int8", status="failed")]
    variants[-1]["benchmark"] = None
    rec = recommendation([VariantResult.model_validate(v) for v in variants])
    assert rec.variant == "fp16" and rec.speedup_vs_fp32 == pytest.approx(10 / 6)
    assert rec.size_vs_fp32 == pytest.approx(3_300_000 / 6_684_500)
    assert rec.flags == {"dynamic": ["slower than fp32 (p50 19.600 ms vs 10.000 ms)"], "int8": ["fails a gate"],
                            "int8-bad": ["failed"]}


def test_a_faster_variant_whose_only_problem_is_an_undecided_gate_is_recommended_provisionally():
    undecided = {"gate": "min_top1_agreement", "metric": "top1_agreement", "threshold": 0.9, "value": 0.94,
                 "outcome": "undecided", "passed": False, "interval": [0.84, 0.98], "photos_needed": 212}
    int8 = variant("int8", 4.0, precision="int8", status="gate-undecided")
    int8["validation"] = {"reference": "m_fp32.tflite", "samples": 100, "photos": 50, "gates": [undecided]}
    rec = recommendation([VariantResult.model_validate(v) for v in (variant("fp32", 10.0), int8)])
    assert (rec.variant, rec.provisional, rec.photos_needed, rec.otherwise) == ("int8", True, 212, "fp32")
    lines = recommendation_lines(rec)
    assert lines[2].startswith("**Ship `int8` provisionally**: p50 4.000 ms") and "2.50x the speed of fp32" in lines[2]
    assert "about 212 distinct validation photos would decide them" in lines[3] and "is `fp32`" in lines[3]
    slower = variant("int8", 12.0, precision="int8", status="gate-undecided")  # not faster: fp32 stands, decided
    assert not recommendation([VariantResult.model_validate(v) for v in (variant("fp32", 10.0), slower)]).provisional


def test_slower_within_the_benchmarks_noise_is_said_so_and_nothing_passing_is_said_too():
    noisy = [variant("fp32", 10.0, spread=5.0, runs=10), variant("dynamic", 11.0, spread=5.0, runs=10, status="gate-failed")]
    rec = recommendation([VariantResult.model_validate(v) for v in noisy[1:] + [noisy[0] | {"status": "gate-failed"}]])
    assert rec.variant is None and "speedup_vs_fp32" not in rec.model_fields_set
    assert rec.flags["dynamic"] == ["fails a gate",
                                       "maybe slower than fp32 (p50 11.000 ms vs 10.000 ms, within the benchmarks' noise)"]


def test_per_layer_error_is_plotted_for_the_variants_that_have_it(tmp_path, browser):
    int8 = variant("int8", 4.0, precision="int8", size=1_886_880, top1=0.97)
    int8["layer_errors"] = {"metric": "rmse", "layers": [{"name": f"conv_{i}", "value": i / 40} for i in range(40)]}
    payload = Results.model_validate(results(variant("fp32", 10.0), int8))
    payload.recommendation = recommendation(payload.variants)
    page_file = tmp_path / "report.html"
    page_file.write_text(html_report.run_page(payload))
    page, errors, outside = open_page(browser, page_file)
    assert_clean(errors, outside)
    plots = drawn_plots(page)
    assert len(plots) == 4 and all(p["shapes"] > 10 and p["width"] > 200 for p in plots), plots
    layers = plots[3]
    assert layers["caption"] == "int8: per-layer quantization error (the 25 largest of 40)"
    assert "conv_39" in layers["texts"] and "conv_14" not in layers["texts"] and "rmse" in layers["texts"]
    assert "Ship int8" in page.inner_text(".rec")


def test_a_matrix_writes_status_html_a_grid_of_status_and_speed_up(tmp_path, browser):
    tflite = write_run(tmp_path, results(variant("fp32", 10.0), variant("int8", 4.0, precision="int8")))
    (tflite / "report.html").write_text(html_report.run_page(Results.model_validate_json((tflite / "results.json").read_text())))
    onnx = [variant("fp32", 8.0), variant("int8", 16.0, precision="int8", status="gate-failed")]
    outcomes = [Outcome(recipe="tiny-mobilenet", target="x86-tflite", workdir=tflite,
                        results=load_results(tflite / "results.json").variants),
                Outcome(recipe="tiny-mobilenet", target="x86-onnx", workdir=tmp_path / "tiny-mobilenet" / "x86-onnx",
                        results=[VariantResult.model_validate(v) for v in onnx]),
                Outcome(recipe="other", target="x86-tflite", workdir=tmp_path, error="the model could not be fetched")]
    write_status(outcomes, tmp_path)
    page, errors, outside = open_page(browser, tmp_path / "status.html")
    assert_clean(errors, outside)
    grid = page.eval_on_selector_all("tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))")
    assert grid == [["recipe / target", "fp32", "int8"],
                    ["tiny-mobilenet / x86-tflite", "ok\n1.00x", "ok\n2.50x"],
                    ["tiny-mobilenet / x86-onnx", "ok\n1.00x", "gate-failed\n0.50x"],
                    ["other / x86-tflite", "failed", "failed"]]
    page.click("text=tiny-mobilenet / x86-tflite")  # the run's own report, beside it
    assert page.url == (tflite / "report.html").as_uri() and page.locator("figure.plot svg").count() == 3


def test_compare_html_shows_the_deltas_and_the_baseline_on_the_new_runs_plots(tmp_path, browser):
    old = results(variant("fp32", 10.0), variant("int8", 4.0, precision="int8", size=1_886_880, top1=0.97))
    page_file = tmp_path / "compare.html"
    result = CliRunner().invoke(cli, ["compare", str(write_run(tmp_path / "old", old)),
                                      str(write_run(tmp_path / "new", slower(old, 1.3, "int8"))), "--html", str(page_file)])
    assert result.exit_code == 0, result.output
    page, errors, outside = open_page(browser, page_file)
    assert_clean(errors, outside)
    plots = drawn_plots(page)
    assert len(plots) == 3 and all(p["shapes"] > 10 for p in plots)
    assert "baseline p50" in plots[0]["texts"]
    row = page.eval_on_selector_all("tr", "rows => rows.map(r => r.innerText)")[2]
    assert "tiny-mobilenet / x86-tflite / int8" in row and "+30.0%" in row and "regression" in row


def test_the_page_says_what_the_verdicts_stand_on_distinct_images_and_accuracy_kept():
    int8 = variant("int8", 4.0, precision="int8", top1=0.97)
    int8["calibrated_on"] = {"samples": 520, "images": 130}
    int8["validation"] |= {"photos": 125, "top1_accuracy": 0.84, "labeled_photos": 25, "reference_accuracy": 0.84,
                           "accuracy_lost": 0.0, "accuracy_gained": 0.0, "accuracy_ratio": 1.0,
                           "accuracy_ratio_interval": [0.81, 1.2]}
    payload = Results.model_validate(results(variant("fp32", 10.0), int8)
                                     | {"data": {"calibration": {"samples": 520, "images": 130},
                                                 "validation": {"samples": 125, "images": 125, "labeled": True}}})
    page = html_report.run_page(payload)
    assert "calibration: 130 distinct images (520 samples); validation: 125 distinct images (125 samples)" in page
    assert "<td>130 images</td>" in page and "1.0000 [0.810, 1.200]" in page and "accuracy kept" in page
