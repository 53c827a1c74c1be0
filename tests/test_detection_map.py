"""Detection mAP against the user's own boxes: the boxes file, its boxes carried into each sample's view, mAP
equal to pycocotools' on random detections, and a real face-detection run scored against hand-labeled faces."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from builder.config.boxes import Box
from builder.config.detection import Detection, SsdAnchors
from builder.config.recipe import InputSpec
from builder.errors import StepError
from builder.host.cli import cli
from builder.records import load_results
from builder.stage import datasets
from builder.stage.detection_map import mean_average_precision
from builder.stage.detections import Found, detections, ssd_anchors


def _site(package: str) -> Path:
    return Path(importlib.util.find_spec(package).submodule_search_locations[0])


PHOTOS = {  # name -> the photo, and its faces labeled by eye (xmin ymin xmax ymax of the original image)
    "astronaut.png": (_site("skimage") / "data" / "astronaut.png", [(172 / 512, 68 / 512, 282 / 512, 190 / 512)]),
    "grace_hopper.jpg": (_site("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg",
                         [(168 / 512, 135 / 600, 365 / 512, 335 / 600)]),
    "coffee.png": (_site("skimage") / "data" / "coffee.png", []),
    "chelsea.png": (_site("skimage") / "data" / "chelsea.png", []),
}


# --- mAP against pycocotools ---------------------------------------------------------------------------------

def _random_case(rng: np.random.Generator) -> tuple[list[list[Found]], list[list[Box]]]:
    """Ground truth in 3 classes over 8 images (one without any), and detections that find some of it (nudged),
    miss some, find some twice, and invent some; class 3 is only ever detected."""
    found, truth = [], []
    for image in range(8):
        boxes = []
        for _ in range(0 if image == 5 else rng.integers(1, 5)):
            x, y = rng.uniform(0, 0.7, 2)
            w, h = rng.uniform(0.05, 0.3, 2)
            boxes.append(Box(int(rng.integers(0, 3)), x, y, x + w, y + h))
        dets = []
        for b in boxes:
            for _ in range(rng.choice([0, 1, 1, 2])):  # missed, found, found twice
                jitter = rng.normal(0, 0.03, 4)
                corners = np.clip(np.array(b[1:]) + jitter, 0, 1)
                corners[2:] = np.maximum(corners[2:], corners[:2] + 0.01)
                cls = b.cls if rng.uniform() > 0.1 else int(rng.integers(0, 4))
                dets.append(Found(tuple(float(c) for c in corners), cls, float(rng.uniform())))
        for _ in range(rng.integers(0, 3)):  # false positives anywhere
            x, y = rng.uniform(0, 0.8, 2)
            dets.append(Found((x, y, x + 0.1, y + 0.15), int(rng.integers(0, 4)), float(rng.uniform())))
        found.append(dets)
        truth.append(boxes)
    return found, truth


def _coco(found: list[list[Found]], truth: list[list[Box]]) -> tuple[float, float]:
    """pycocotools' mAP (0.50:0.95) and AP50, classes being those of the ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    gt = COCO()
    annotations = [{"id": len(truth) * 100 + k, "image_id": i + 1, "category_id": b.cls + 1, "bbox": xywh(b[1:]),
                    "area": (b.xmax - b.xmin) * (b.ymax - b.ymin), "iscrowd": 0}
                   for i, boxes in enumerate(truth) for k, b in enumerate(boxes)]
    for n, a in enumerate(annotations):
        a["id"] = n + 1
    gt.dataset = {"images": [{"id": i + 1} for i in range(len(truth))], "annotations": annotations,
                  "categories": [{"id": c + 1} for c in sorted({b.cls for boxes in truth for b in boxes})]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": i + 1, "category_id": f.cls + 1, "bbox": xywh(f.box), "score": f.score}
                         for i, dets in enumerate(found) for f in dets])
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])


@pytest.mark.parametrize("seed", range(6))
def test_map_equals_pycocotools_on_random_detections(seed):
    found, truth = _random_case(np.random.default_rng(seed))
    ours = mean_average_precision(found, truth)
    coco_map, coco_map50 = _coco(found, truth)
    assert ours["map"] == pytest.approx(coco_map, abs=1e-6) and ours["map50"] == pytest.approx(coco_map50, abs=1e-6)
    assert 0 < ours["map"] < ours["map50"] < 1


def test_map_of_perfect_missing_and_unlabeled_detections():
    face = Box(0, 0.2, 0.2, 0.5, 0.6)
    perfect = [[Found(face[1:], 0, 0.9)], []]
    assert mean_average_precision(perfect, [[face], []]) == pytest.approx({"map50": 1.0, "map": 1.0})  # COCO's epsilon
    assert mean_average_precision([[], []], [[face], []]) == {"map50": 0.0, "map": 0.0}
    assert mean_average_precision(perfect, [[], []]) == {"map50": None, "map": None}  # nothing labeled


BLAZEFACE = Detection(anchors=SsdAnchors(num_layers=4, min_scale=0.1484375, max_scale=0.75, input_size_height=128,
                                         input_size_width=128, strides=[8, 16, 16, 16], fixed_anchor_size=True),
                      x_scale=128, y_scale=128, w_scale=128, h_scale=128)


def test_blazeface_anchors_and_decoding():
    anchors = ssd_anchors(BLAZEFACE.anchors)  # 16x16 cells of 2 anchors, then 8x8 cells of 6 (3 layers of stride 16)
    assert anchors.shape == (896, 4) and np.all(anchors[:, 2:] == 1.0)
    assert np.allclose(anchors[[0, 1, 2, 511, 512, 517, 518]],
                       [[1 / 32, 1 / 32, 1, 1], [1 / 32, 1 / 32, 1, 1], [3 / 32, 1 / 32, 1, 1], [31 / 32, 31 / 32, 1, 1],
                        [1 / 16, 1 / 16, 1, 1], [1 / 16, 1 / 16, 1, 1], [3 / 16, 1 / 16, 1, 1]])
    raw = np.zeros((1, 896, 16), np.float32)
    raw[0, 512, :4] = [6.4, -6.4, 32, 16]  # from anchor (1/16, 1/16): centre +0.05, -0.05; size 0.25 x 0.125
    raw[0, 513, :4] = [6.4, -6.4, 30, 16]  # the same face again, a little worse: suppressed
    logits = np.full((1, 896, 1), -9.0, np.float32)
    logits[0, 512], logits[0, 513], logits[0, 7] = 3.0, 2.0, -0.5  # anchor 7 below min_score 0.5
    (found,) = detections([[raw, logits]], BLAZEFACE)
    assert len(found) == 1 and found[0].cls == 0 and found[0].score == pytest.approx(1 / (1 + np.exp(-3)))
    assert np.allclose(found[0].box, (0.1125 - 0.125, 0.0125 - 0.0625, 0.1125 + 0.125, 0.0125 + 0.0625))
    with pytest.raises(StepError, match="needs their anchors"):
        detections([[raw, logits]], None)


# --- the boxes file ---------------------------------------------------------------------------------------

RECIPE = """
name: boxes-test
task: detection
source: {keras: {application: MobileNetV2, weights: none, alpha: 0.35}}
input: {shape: [1, 96, 96, 3], layout: NHWC, mean: 127.5, std: 127.5}
calibration: {synthetic: 2}
validation: {folder: photos, boxes: boxes.txt}
variants: {fp32: {}}
"""


def _folder(tmp_path: Path, boxes: str, recipe: str = RECIPE) -> Path:
    photos = tmp_path / "photos" / "people"
    photos.mkdir(parents=True)
    for name, (path, _) in PHOTOS.items():
        shutil.copy(path, (photos if name in ("astronaut.png", "grace_hopper.jpg") else photos.parent) / name)
    (tmp_path / "boxes.txt").write_text(boxes)
    (tmp_path / "recipe.yaml").write_text(recipe)
    return tmp_path / "recipe.yaml"


@pytest.mark.parametrize(("boxes", "problem"), [
    ("people/astronaut.png 0 0.3 0.1 0.5\n", "boxes.txt:1: expected an image path, a class id"),
    ("# faces\npeople/astronaut.png face 0.3 0.1 0.5 0.4\n", "boxes.txt:2: expected an image path, a class id"),
    ("people/astronaut.png 0 0.3 0.1 0.5 0.4\npeople/astronaut.png 0 0.3 0.1 1.5 0.4\n",
     "boxes.txt:2: coordinates 0.3 0.1 1.5 0.4 are not all within 0..1"),
    ("people/astronaut.png, 0, 0.5, 0.1, 0.3, 0.4\n", "boxes.txt:1: the box is empty"),
    ("people/astronaut.png 0 0.3 0.1 0.5 nan\n", "boxes.txt:1: expected an image path, a class id"),
    ("# none\n", "the boxes file has no box"),
])
def test_a_bad_boxes_file_is_refused_when_the_recipe_is_loaded(tmp_path, boxes, problem):
    result = CliRunner().invoke(cli, ["plan", str(_folder(tmp_path, boxes)), "-t", "x86-tflite"])
    assert result.exit_code == 2 and problem in result.output and "Traceback" not in result.output, result.output


def test_boxes_go_with_a_folder_only(tmp_path):
    recipe = RECIPE.replace("validation: {folder: photos, boxes: boxes.txt}", "validation: {npy: boxes.txt, boxes: boxes.txt}")
    result = CliRunner().invoke(cli, ["plan", str(_folder(tmp_path, "coffee.png 0 0.1 0.1 0.2 0.2\n", recipe)),
                                      "-t", "x86-tflite"])
    assert result.exit_code == 2 and "labels, boxes and sample go with folder" in result.output, result.output


def test_boxes_are_for_a_detector(tmp_path):
    recipe = _folder(tmp_path, "coffee.png 0 0.1 0.1 0.2 0.2\n", RECIPE.replace("task: detection", "task: classification"))
    result = CliRunner().invoke(cli, ["plan", str(recipe), "-t", "x86-tflite"])
    assert result.exit_code == 2 and "validation.boxes: boxes and their decoding are for task: detection" in result.output


@pytest.mark.parametrize(("boxes", "problem"), [
    ("[[0, 0.5, 0.1, 0.3, 0.4]]", "recipe.yaml:7: validation.files[0].boxes: boxes[0]: the box is empty"),
    ("[[0, 0.1, 0.1, 0.3, 1.4]]", "validation.files[0].boxes: boxes[0]: coordinates 0.1 0.1 0.3 1.4 are not all within"),
    ("[[-1, 0.1, 0.1, 0.3, 0.4]]", "validation.files[0].boxes[0][0]"),
    ("[[0, 0.1, 0.1, 0.3]]", "validation.files[0].boxes[0]"),
])
def test_a_files_entry_with_a_bad_box_is_refused(tmp_path, boxes, problem):
    photo = PHOTOS["astronaut.png"][0]
    recipe = RECIPE.replace("validation: {folder: photos, boxes: boxes.txt}",
                            f"validation: {{files: [{{file: {photo}, boxes: {boxes}}}]}}")
    result = CliRunner().invoke(cli, ["plan", str(_folder(tmp_path, "# none\n", recipe)), "-t", "x86-tflite"])
    assert result.exit_code == 2 and problem in result.output and "Traceback" not in result.output, result.output


def test_a_box_of_an_image_the_folder_lacks_is_refused_at_fetch(tmp_path):
    boxes = "people/astronaut.png 0 0.3 0.1 0.5 0.4\npeople/gone.png 0 0.1 0.1 0.2 0.2\n"
    result = CliRunner().invoke(cli, ["run", str(_folder(tmp_path, boxes)), "-t", "x86-tflite", "--runner", "local",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "has boxes of 1 image(s) not in" in result.output, result.output
    assert "people/gone.png" in result.output and "Traceback" not in result.output


# --- boxes in each sample's view -----------------------------------------------------------------------------

def _bright(sample: np.ndarray) -> tuple[float, float, float, float]:
    """The extent of the bright pixels of an HWC sample, normalized: xmin, ymin, xmax, ymax."""
    rows, cols = np.nonzero(sample.mean(axis=2) > 0.5)
    height, width = sample.shape[:2]
    return cols.min() / width, rows.min() / height, (cols.max() + 1) / width, (rows.max() + 1) / height


@pytest.mark.parametrize(("resize", "crops", "flips"), [("crop", 1, False), ("crop", 5, True), ("stretch", 1, True)])
def test_a_box_lands_where_its_pixels_land_in_every_view(tmp_path, resize, crops, flips):
    """A white rectangle on black, labeled by its box: in each sample, the box lands on the white pixels (the
    left corner crops cut it)."""
    pixels = np.zeros((300, 400, 3), np.uint8)
    pixels[82:205, 205:305] = 255  # x 205..305, y 82..205 of 400 x 300
    image = tmp_path / "rect.png"
    Image.fromarray(pixels).save(image)
    box = Box(3, 205 / 400, 82 / 300, 305 / 400, 205 / 300)
    spec = InputSpec(shape=[1, 64, 64, 3], mean=0.0, std=255.0, resize=resize)
    samples = datasets.image_samples(image, spec, crops=crops, flips=flips)
    made = datasets.views(400, 300, spec, crops=crops, flips=flips)
    assert len(made) == len(samples) == crops * (2 if flips else 1)
    for sample, view in zip(samples, made):
        (moved,) = datasets.view_boxes([box], view)
        assert moved.cls == 3 and np.allclose(moved[1:], _bright(sample), atol=2 / 64), (view, moved)


def test_a_box_cut_by_a_crop_is_clipped_or_dropped():
    spec = InputSpec(shape=[1, 64, 64, 3], resize="crop", crop_fraction=1.0)
    center, left = datasets.views(200, 100, spec, crops=2)  # resized to 128 x 64: x 32..96, then x 0..64
    assert center.size == (128, 64) and center.crop == (32, 0, 96, 64) and left.crop == (0, 0, 64, 64)
    inside, half_out, mostly_out, outside = (Box(0, 0.3, 0.25, 0.5, 0.75), Box(1, 0.2, 0.0, 0.35, 1.0),
                                             Box(2, 0.15, 0.0, 0.3, 1.0), Box(3, 0.0, 0.0, 0.2, 1.0))
    moved = datasets.view_boxes([inside, half_out, mostly_out, outside], center)
    assert [b.cls for b in moved] == [0, 1]  # 2 keeps a third of its area, 3 none
    assert np.allclose(moved[0][1:], (0.1, 0.25, 0.5, 0.75)) and np.allclose(moved[1][1:], (0, 0, 0.2, 1))
    (flipped,) = datasets.view_boxes([inside], center._replace(flip=True))
    assert np.allclose(flipped[1:], (0.5, 0.25, 0.9, 0.75))
    assert np.allclose(datasets.view_boxes([outside], left)[0][1:], (0, 0, 0.4, 1))


# --- a real run -----------------------------------------------------------------------------------------------

FACE_RECIPE = """
name: faces-map
task: detection
source: {file: MODEL}
input: {shape: [1, 128, 128, 3], layout: NHWC, mean: 127.5, std: 127.5, resize: crop}
calibration: {folder: calibration, augment: {crops: 4, flips: true}}
validation: {folder: photos, boxes: boxes.txt, augment: {crops: 3, flips: true}}
detection:  # face_detection_short_range.pbtxt's SsdAnchorsCalculator and TensorsToDetectionsCalculator options
  anchors: {num_layers: 4, min_scale: 0.1484375, max_scale: 0.75, input_size_height: 128, input_size_width: 128,
            anchor_offset_x: 0.5, anchor_offset_y: 0.5, strides: [8, 16, 16, 16], aspect_ratios: [1.0],
            fixed_anchor_size: true, interpolated_scale_aspect_ratio: 1.0}
  x_scale: 128
  y_scale: 128
  w_scale: 128
  h_scale: 128
  min_score: 0.5
  iou: 0.3
variants: {fp32: {}, int8: {}}
benchmark: {threads: 2, warmup: 1, runs: 3}
gates: {min_map50: 0.9}
"""


@pytest.mark.slow
def test_a_face_detection_run_scores_map_against_hand_labeled_faces(tmp_path, mediapipe_models):
    lines = [f"people/{name} 0 {' '.join(f'{c:.4f}' for c in face)}" for name, (_, faces) in PHOTOS.items()
             for face in faces]
    recipe = _folder(tmp_path, "\n".join(lines) + "\n",
                     FACE_RECIPE.replace("MODEL", str(mediapipe_models["face_detection_short_range"])))
    (tmp_path / "calibration").mkdir()  # other photos than validation's: a face (the cameraman) and none
    for photo in ("camera.png", "rocket.jpg"):
        shutil.copy(_site("skimage") / "data" / photo, tmp_path / "calibration" / photo)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", "x86-tflite", "--runner", "local", "--out", str(out)])
    assert result.exit_code in (0, 1), result.output  # int8 may miss the mAP gate
    workdir = out / "faces-map" / "x86-tflite"
    fp32, int8 = load_results(workdir / "results.json").variants
    assert fp32.validation.samples == 24 and fp32.validation.map50 >= 0.9 and 0 < fp32.validation.map <= fp32.validation.map50
    assert int8.validation.map50 is not None and np.isfinite(int8.validation.map50)
    assert [g.gate for g in fp32.validation.gates if g.gate == "min_map50"] == ["min_map50"]
    assert fp32.validation.detection_f1 == 1.0  # the figures against the fp32 artifact are still there
    boxes = json.loads((workdir / "work" / "data" / "validation_boxes.json").read_text())
    assert sum(len(b) for b in boxes) == 12  # two faces, 6 views each: none cut off by the crops
    assert "| detection F1 | source detection F1 | mAP@.5 | mAP@.5:.95 |" in (workdir / "report.md").read_text()
