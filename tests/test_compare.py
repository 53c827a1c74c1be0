"""builder compare: per recipe/target/variant deltas, noise, --fail-on-regression, --html, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from click.testing import CliRunner

from builder.host.cli import cli
from builder.host.compare import compare, load
from builder.records import Results


def variant(name: str, p50: float, *, precision: str = "fp32", size: int = 6_684_500, top1: float = 1.0,
            status: str = "ok", spread: float = 0.2, runs: int = 50) -> dict:
    """One results.json variant entry with the keys a real x86-tflite run writes."""
    return {
        "name": name, "artifact": f"tiny-mobilenet_{name}.tflite", "format": "tflite", "precision": precision,
        "io_dtype": "float32", "status": status,
        "benchmark": {"runtime": "litert", "threads": 2, "warmup": 5, "runs": runs, "mean_ms": p50 + spread / 2,
                      "std_ms": spread, "min_ms": p50 - spread, "max_ms": p50 + 3 * spread, "p50_ms": p50,
                      "p90_ms": p50 + spread, "p99_ms": p50 + 2 * spread, "throughput_fps": 1000 / p50,
                      "peak_rss_mb": 40.0, "init_ms": 3.0, "emulated": False, "on_target": True, "size_bytes": size,
                      "device": {"device": "host", "engine": "local", "emulated": False, "on_target": True}},
        "validation": {"reference": "tiny-mobilenet_fp32.tflite", "samples": 200, "emulated": False, "cosine": 0.999,
                       "top1_agreement": top1, "top5_agreement": 1.0,
                       "top1_agreement_interval": [max(0.0, top1 - 0.03), min(1.0, top1 + 0.02)], "gates": []},
        "conversion": None,
    }


def results(*variants: dict, recipe: str = "tiny-mobilenet", target: str = "x86-tflite") -> dict:
    return {"recipe": recipe, "target": target, "recommendation": {}, "variants": list(variants), "skipped": {},
            "warnings": []}


BASE = results(variant("fp32", 10.0), variant("int8", 4.0, precision="int8", size=1_886_880, top1=0.97))


def write_run(root: Path, payload: dict) -> Path:
    """<root>/<recipe>/<target>/results.json, as `builder run --out root` lays it out."""
    folder = root / payload["recipe"] / payload["target"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(payload, indent=2))
    return folder


def slower(payload: dict, factor: float, variant_name: str | None = None) -> dict:
    """The same results with every latency figure of one variant (or all) multiplied by `factor`."""
    out = copy.deepcopy(payload)
    for v in out["variants"]:
        if variant_name in (None, v["name"]):
            for key in ("mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms"):
                v["benchmark"][key] *= factor
    return out


def run_compare(*args: str):
    result = CliRunner().invoke(cli, ["compare", *args])
    return result.exit_code, result.output


def test_a_run_made_30_percent_slower_on_purpose_is_flagged_and_exits_1(tmp_path):
    old = write_run(tmp_path / "old", BASE)
    new = write_run(tmp_path / "new", slower(BASE, 1.3, "int8"))
    code, output = run_compare(str(old), str(new), "--fail-on-regression", "10")
    assert code == 1, output
    assert "1 regression(s) beyond 10%" in output and "tiny-mobilenet/x86-tflite/int8: p50_ms +30.0%" in output
    assert "fp32" not in output.split("regression(s)")[1]  # the unchanged variant is not blamed


def test_the_same_regression_below_the_threshold_passes(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(BASE))
    new.write_text(json.dumps(slower(BASE, 1.3, "int8")))
    code, output = run_compare(str(old), str(new), "--fail-on-regression", "40")
    assert code == 0, output
    assert "+30.0%" in output


def test_a_change_within_the_benchmarks_noise_is_marked_and_not_a_regression():
    noisy = results(variant("fp32", 10.0, spread=4.0, runs=10))
    rows = compare(load_payload(noisy), load_payload(slower(noisy, 1.15)), 5)
    p50 = next(f for f in rows[0]["figures"] if f["name"] == "p50_ms")
    # 2 * sqrt(4^2/10 + 4.6^2/10) = 3.9 ms of noise; the change is 1.5 ms
    assert p50["noise"] and not p50["worse"] and rows[0]["regression"] == []
    tight = results(variant("fp32", 10.0, spread=0.2, runs=50))
    rows = compare(load_payload(tight), load_payload(slower(tight, 1.15)), 5)
    assert rows[0]["regression"] == ["p50_ms +15.0%"]


def load_payload(payload: dict) -> dict:
    return {(payload["recipe"], payload["target"]): Results.model_validate(payload)}


def test_accuracy_outside_the_old_interval_regresses_and_inside_it_is_noise():
    old = results(variant("int8", 4.0, top1=0.97))
    inside = results(variant("int8", 4.0, top1=0.95))
    outside = results(variant("int8", 4.0, top1=0.80))
    [row] = compare(load_payload(old), load_payload(inside), 1)
    assert row["regression"] == [] and next(f for f in row["figures"] if f["name"] == "top1_agreement")["noise"]
    [row] = compare(load_payload(old), load_payload(outside), 1)
    assert row["regression"] == ["top1_agreement -17.5%"]


def test_a_smaller_faster_new_run_is_no_regression_and_size_is_compared(tmp_path):
    better = copy.deepcopy(slower(BASE, 0.5))
    better["variants"][1]["benchmark"]["size_bytes"] = 1_000_000
    code, output = run_compare(str(write_run(tmp_path / "a", BASE)), str(write_run(tmp_path / "b", better)),
                               "--fail-on-regression", "0", "--json")
    assert code == 0, output
    rows = json.loads(output)
    size = next(f for f in rows[1]["figures"] if f["name"] == "size_bytes")
    assert size["change_pct"] < -40 and not size["worse"]


def test_a_variant_that_was_ok_and_now_misses_a_gate_regresses():
    new = copy.deepcopy(BASE)
    new["variants"][1]["status"] = "gate-failed"
    rows = compare(load_payload(BASE), load_payload(new), 50)
    assert rows[1]["regression"] == ["status ok -> gate-failed"]


def test_matrix_folders_are_compared_run_by_run(tmp_path):
    other = results(variant("fp32", 20.0), target="x86-onnx")
    for side, factor in (("old", 1.0), ("new", 2.0)):
        write_run(tmp_path / side, BASE)
        write_run(tmp_path / side, slower(other, factor))
        (tmp_path / side / "status.md").write_text("# Build status\n")
    rows = compare(load(tmp_path / "old"), load(tmp_path / "new"), 10)
    assert {(r["target"], r["variant"]): r["regression"] for r in rows} == {
        ("x86-tflite", "fp32"): [], ("x86-tflite", "int8"): [], ("x86-onnx", "fp32"): ["p50_ms +100.0%"]}


def test_a_run_missing_from_new_is_a_regression_and_one_only_in_new_is_not(tmp_path):
    rows = compare(load_payload(BASE), load_payload(results(variant("fp32", 10.0), recipe="other")), 0)
    assert {(r["recipe"], r["variant"]): r["regression"] for r in rows} == {
        ("tiny-mobilenet", "fp32"): ["status ok -> missing"], ("tiny-mobilenet", "int8"): ["status ok -> missing"],
        ("other", "fp32"): []}


def test_html_comparison_page_is_written(tmp_path):
    page = tmp_path / "cmp.html"
    code, output = run_compare(str(write_run(tmp_path / "a", BASE)), str(write_run(tmp_path / "b", slower(BASE, 1.3))),
                               "--html", str(page))
    assert code == 0, output  # no --fail-on-regression: the regression is shown, not fatal
    html = page.read_text()
    assert "+30.0%" in html and "regression" in html and "baseline p50" in html


def test_bad_inputs_are_config_errors(tmp_path):
    code, output = run_compare(str(tmp_path / "nope"), str(tmp_path))
    assert code == 2 and "no such file or folder" in output and "results.json" in output
    code, output = run_compare(str(tmp_path), str(tmp_path))
    assert code == 2 and "holds no results.json" in output
    (tmp_path / "results.json").write_text('{"recipe": "r", "target": "t", "variants": [{"status": "ok"}]}')
    code, output = run_compare(str(tmp_path), str(tmp_path))
    assert code == 2 and "not a results.json written by `builder run`" in output
    assert "Traceback" not in output
