"""A validation set from a folder of the user's own images, with a labels file, sampled reproducibly."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.host import catalog
from builder.host.cli import cli
from builder.host.inputs import materialize
from builder.workdir import INPUTS

PHOTOS = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"
NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "horse.png"]

RECIPE = """
name: folder-test
task: classification
source: {keras: {application: MobileNetV2, weights: none, alpha: 0.35}}
input: {shape: [1, 96, 96, 3], layout: NHWC, mean: 127.5, std: 127.5}
calibration: {synthetic: 4}
validation: {folder: photos, labels: labels.txt, sample: SAMPLE, seed: SEED}
variants: {fp32: {}, int8: {}}
benchmark: {threads: 2, warmup: 1, runs: 3}
gates: {}
"""


def _setup(tmp_path: Path, labels: str, sample: int = 3, seed: int = 1) -> Path:
    photos = tmp_path / "photos" / "cats"
    photos.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(PHOTOS / name, (photos if name == "chelsea.png" else photos.parent) / name)
    (tmp_path / "labels.txt").write_text(labels)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.replace("SAMPLE", str(sample)).replace("SEED", str(seed)))
    return recipe


LABELS = "# file, class ids\ncats/chelsea.png 281,282,285\ncoffee.png\t967\nrocket.jpg, 657 812\n"


def _index(recipe: Path, workdir: Path) -> list[dict]:
    materialize(catalog.load_recipe(recipe), workdir)
    return json.loads((workdir / INPUTS / "validation" / "index.json").read_text())


def test_a_seeded_sample_is_the_same_every_time_and_spread_over_the_folder(tmp_path):
    recipe = _setup(tmp_path, LABELS)
    first, again = _index(recipe, tmp_path / "a"), _index(recipe, tmp_path / "b")
    assert first == again and len(first) == 3
    other = _setup(tmp_path / "other", LABELS, seed=2)
    picked = {e["file"].split("_", 1)[1] for e in first}
    assert picked != {e["file"].split("_", 1)[1] for e in _index(other, tmp_path / "c")}
    whole = _index(_setup(tmp_path / "all", LABELS, sample=100), tmp_path / "d")
    assert {e["file"].split("_", 1)[1]: e["label"] for e in whole} == {
        "astronaut.png": None, "chelsea.png": [281, 282, 285], "coffee.png": 967, "horse.png": None,
        "motorcycle_left.png": None, "rocket.jpg": [657, 812]}


@pytest.mark.parametrize(("labels", "problem"), [
    ("coffee.png\n", "labels.txt:1: expected an image path and class ids"),
    ("coffee.png 967\ncoffee.png 968\n", "labels.txt:2: coffee.png is labeled twice"),
    ("coffee.png -3\n", "labels.txt:1: expected an image path and class ids"),
    ("# nothing\n", "the labels file labels no image"),
])
def test_a_bad_labels_file_is_refused_when_the_recipe_is_loaded(tmp_path, labels, problem):
    result = CliRunner().invoke(cli, ["plan", str(_setup(tmp_path, labels)), "-t", "x86-tflite"])
    assert result.exit_code == 2 and problem in result.output and "Traceback" not in result.output, result.output


def test_a_label_for_an_image_the_folder_lacks_is_refused_at_fetch(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(_setup(tmp_path, "gone.png 1\n")), "-t", "x86-tflite",
                                      "--runner", "local", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "labels 1 image(s) not in" in result.output and "gone.png" in result.output


@pytest.mark.slow
def test_a_run_measures_accuracy_on_the_labeled_images_of_the_folder(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(_setup(tmp_path, LABELS, sample=6)), "-t", "x86-tflite",
                                      "--runner", "local", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "folder-test" / "x86-tflite" / "results.json").read_text())
    validation = results["variants"][0]["validation"]
    assert validation["samples"] == 6 and validation["top1_accuracy"] is not None
