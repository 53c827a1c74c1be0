"""The `openvino` target end to end with the local runner: the quickstart model through
ONNX to OpenVINO IR (fp32, fp16, NNCF int8), and NNCF with accuracy control from a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from builder.host.cli import cli

RECIPES = Path(__file__).parent.parent / "recipes"

pytestmark = pytest.mark.slow


def _run(recipe: Path, out: Path):
    return CliRunner().invoke(cli, ["run", str(recipe), "-t", "openvino", "--runner", "local", "--out", str(out)])


def _variants(workdir: Path) -> dict[str, dict]:
    return {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("openvino")
    result = _run(RECIPES / "efficientnet-lite0.yaml", out)
    assert result.exit_code == 0, result.output
    workdir = out / "efficientnet-lite0" / "openvino"
    return workdir, _variants(workdir)


def test_fp32_fp16_and_nncf_int8_ir_are_built(quickstart):
    workdir, variants = quickstart
    assert set(variants) == {"fp32", "fp16", "int8"}
    sizes = {}
    for name, v in variants.items():
        xml = workdir / v["artifact"]
        assert v["status"] == "ok" and v["format"] == "openvino" and xml.suffix == ".xml"
        sizes[name] = xml.with_suffix(".bin").stat().st_size
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"]
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert {a["variant"] for a in manifest["artifacts"]} >= {"fp32", "fp16", "int8"}
    report = (workdir / "report.md").read_text()
    assert "dynamic" in report and "does not produce dynamic" in report  # skipped, with the reason


def test_int8_agrees_with_fp32_on_the_packaged_photos(quickstart):
    _, variants = quickstart
    for name in ("fp16", "int8"):
        validation = variants[name]["validation"]
        low, high = validation["top1_agreement_interval"]  # over 125 distinct photos: decided
        assert validation["photos"] == 125 and 0.9 < low < validation["top1_agreement"] <= high, name
        assert {g["outcome"] for g in validation["gates"]} == {"pass"}, validation["gates"]
    assert variants["fp16"]["validation"]["cosine"] > 0.999
    assert variants["int8"]["calibrated_on"]["images"] == 130


def test_int8_beats_fp32_async_throughput(quickstart):
    _, variants = quickstart
    fps = {name: v["benchmark"]["async"]["throughput_fps"] for name, v in variants.items()}
    assert all(v["benchmark"]["async"]["requests"] >= 1 for v in variants.values())
    assert fps["int8"] > fps["fp32"], fps
    assert variants["int8"]["benchmark"]["p50_ms"] > 0 and variants["int8"]["benchmark"]["runtime"] == "openvino"


def _accuracy_control_recipe(folder: Path) -> Path:
    """The real rapidocr classifier with an int8 variant quantized under accuracy control."""
    data = yaml.safe_load((RECIPES / "ppocr-cls.yaml").read_text())
    data["validation"]["augment"] = {"crops": 8}  # NNCF evaluates the set once per layer it ranks
    data |= {"name": "ppocr-cls-ac", "task": "generic", "gates": {},
             "variants": {"fp32": {}, "int8": {"nncf": {"max_accuracy_drop": 0.02}}}}
    path = folder / "ppocr-cls-ac.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_nncf_accuracy_control_keeps_top1_agreement_within_the_drop(tmp_path):
    from builder.stage.runtimes import load

    result = _run(_accuracy_control_recipe(tmp_path), tmp_path / "out")
    assert result.exit_code == 0, result.output
    workdir = tmp_path / "out" / "ppocr-cls-ac" / "openvino"
    record = json.loads(next((workdir / "work" / "records").glob("*quantize.nncf-int8.json")).read_text())
    assert record["result"]["quantization"]["max_drop"] == 0.02
    variants = _variants(workdir)
    samples = np.load(workdir / "work" / "data" / "validation.npy")
    fp32, int8 = (load(workdir / variants[v]["artifact"]) for v in ("fp32", "int8"))
    agreement = np.mean([fp32.run([s])[0].argmax() == int8.run([s])[0].argmax() for s in samples])
    assert agreement >= 0.98
    assert variants["int8"]["status"] == "ok"
