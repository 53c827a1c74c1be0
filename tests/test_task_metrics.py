"""A task's own agreement figures: mIoU of segmentation masks, PSNR of super-resolved images, CER of CTC
decodes; and a real segmentation run whose report carries mIoU against the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from builder.errors import StepError
from builder.host.cli import cli
from builder.records import load_results
from builder.stage.steps.measure import check_gates
from builder.stage.task_metrics import cer, ctc_greedy, detection, masks, miou, psnr_db, task_figures

RNG = np.random.default_rng(0)


def _logits(mask: np.ndarray, classes: int, channels_last: bool = True) -> np.ndarray:
    """(1, H, W, C) or (1, C, H, W) logits whose argmax is `mask`."""
    onehot = np.eye(classes, dtype=np.float32)[mask] * 5 + RNG.normal(0, 0.1, (*mask.shape, classes))
    out = onehot[None]
    return out if channels_last else out.transpose(0, 3, 1, 2)


def test_miou_of_argmax_masks_in_either_layout_and_of_a_one_channel_probability_map():
    ref = np.zeros((8, 8), np.int64)
    ref[2:6, 2:6] = 1
    cand = ref.copy()
    cand[2:6, 5] = 0  # 4 of the 16 foreground pixels lost
    expected = (48 / 52 + 12 / 16) / 2  # background: 48 of 52 pixels in either; foreground: 12 of 16
    for channels_last in (True, False):
        got = miou([_logits(ref, 21, channels_last)], [_logits(cand, 21, channels_last)])
        assert got == pytest.approx(expected)
    probability = [ref[None, :, :, None] * 0.9 + 0.05]  # (1, H, W, 1) in [0, 1]: thresholded at 0.5
    assert miou(probability, [cand[None, :, :, None] * 0.8 + 0.1]) == pytest.approx(expected)
    assert miou(probability, probability) == 1.0
    assert masks([ref[None]])[0].shape == (1, 8, 8)  # a mask output already


def test_psnr_uses_the_references_range_and_is_capped_when_identical():
    ref = [RNG.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(3)]
    noisy = [r + 0.01 for r in ref]
    peak = max(r.max() for r in ref) - min(r.min() for r in ref)
    assert psnr_db(ref, noisy) == pytest.approx(10 * np.log10(peak**2 / 1e-4), abs=1e-3)
    assert psnr_db(ref, ref) == 300.0


def test_cer_of_greedy_ctc_decodes_in_any_axis_order():
    steps = np.full((6, 10), -5.0, np.float32)  # 6 time steps, 10 classes (real ones have thousands)
    for t, c in enumerate([1, 1, 0, 2, 3, 3]):  # decodes to [1, 2, 3]
        steps[t, c] = 5.0
    assert ctc_greedy(steps[None]) == [1, 2, 3] == ctc_greedy(steps[:, None, :]) == ctc_greedy(steps.T[None])
    wrong = steps.copy()
    wrong[3] = -5.0
    wrong[3, 4] = 5.0  # 2 -> 4: one substitution of three
    assert cer([steps[None]], [wrong[None]]) == pytest.approx(1 / 3)
    assert cer([steps[None]], [steps[None]]) == 0.0
    with pytest.raises(StepError, match="OCR output"):
        ctc_greedy(np.zeros((2, 3, 4, 5)))


def test_task_gates_pass_and_fail_on_their_figures():
    mask = np.eye(8, dtype=np.int64)
    figures = task_figures("segmentation", [[_logits(mask, 2)]], [[_logits(mask, 2)]])  # per sample, its outputs
    assert figures == {"miou": 1.0}
    outcomes = check_gates({"min_miou": 0.9, "max_cer": 0.1}, figures | {"cer": 0.25})
    assert [(g["gate"], g["outcome"]) for g in outcomes] == [("min_miou", "pass"), ("max_cer", "fail")]
    assert task_figures("generic", [], []) == {}


def _postprocessed(boxes: list, classes: list, scores: list, slots: int = 10) -> list[np.ndarray]:
    """TFLite detection-op outputs: boxes (1, slots, 4), classes (1, slots), scores (1, slots), count (1,)."""
    out = [np.zeros((1, slots, 4), np.float32), np.zeros((1, slots), np.float32), np.zeros((1, slots), np.float32)]
    for i, (box, cls, score) in enumerate(zip(boxes, classes, scores)):
        out[0][0, i], out[1][0, i], out[2][0, i] = box, cls, score
    return [*out, np.array([len(boxes)], np.float32)]


def test_postprocessed_detections_are_matched_by_iou_and_class():
    person, dog = [0.1, 0.1, 0.5, 0.4], [0.5, 0.5, 0.9, 0.9]
    ref = _postprocessed([person, dog], [0, 17], [0.9, 0.8])
    shifted = [0.12, 0.1, 0.52, 0.4]  # IoU 0.114 / 0.126 with person
    same = _postprocessed([dog, shifted], [17, 0], [0.85, 0.7])  # another order: slots are by score
    figures = detection([ref], [same])
    assert figures["detection_f1"] == 1.0 and figures["box_iou"] == pytest.approx((1 + 0.114 / 0.126) / 2, rel=1e-4)
    relabeled = _postprocessed([person, dog], [0, 18], [0.9, 0.8])  # the dog is called something else
    missed = _postprocessed([person, dog], [0, 17], [0.9, 0.3])  # the dog below the detection score
    assert detection([ref], [relabeled])["detection_f1"] == 2 * 1 / (2 + 2)  # one of two found, of two given
    assert detection([ref], [missed])["detection_f1"] == pytest.approx(2 * 1 / (2 + 1))
    assert detection([ref, ref], [same, missed])["detection_f1"] == pytest.approx(2 * 3 / (4 + 3))


def test_per_anchor_detections_are_matched_by_anchor_with_logit_scores():
    anchors = 896
    boxes = RNG.uniform(10, 100, (1, anchors, 16)).astype(np.float32)  # centre x, y, size, keypoints (BlazeFace)
    scores = np.full((1, anchors, 1), -8.0, np.float32)
    scores[0, [3, 400]] = 4.0
    ref = [boxes, scores]
    nudged = boxes.copy()
    nudged[0, :, 0] += 1.0
    cand_scores = scores.copy()
    cand_scores[0, 400] = -1.0  # below 0.5 after the sigmoid
    figures = detection([ref], [[nudged, cand_scores]])
    assert figures["detection_f1"] == pytest.approx(2 / 3) and 0.9 < figures["box_iou"] < 1.0
    with pytest.raises(StepError, match="neither"):
        detection([[np.zeros((1, 10))]], [[np.zeros((1, 10))]])


@pytest.mark.slow
def test_a_detection_run_reports_detection_f1_and_map_for_every_variant(tmp_path):
    out = tmp_path / "out"
    recipe = Path(__file__).parent.parent / "recipes" / "face-detection.yaml"
    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", "x86-tflite", "--runner", "local", "--out", str(out),
                                      "--variant", "fp32", "--variant", "int8"])
    assert result.exit_code in (0, 1), result.output  # int8 may miss the recipe's cosine gate
    workdir = out / "face-detection" / "x86-tflite"
    fp32, int8 = load_results(workdir / "results.json").variants
    assert fp32.validation.detection_f1 == 1.0 and fp32.validation.source.detection_f1 == 1.0
    assert fp32.validation.box_iou == 1.0 and 0 <= int8.validation.detection_f1 <= 1
    assert fp32.validation.map50 >= 0.9 and int8.validation.map50 is not None  # against the recipe's labeled faces
    assert "| detection F1 | source detection F1 | mAP@.5 | mAP@.5:.95 |" in (workdir / "report.md").read_text()


@pytest.mark.slow
def test_a_segmentation_run_reports_miou_against_the_source(tmp_path):
    out = tmp_path / "out"
    recipe = Path(__file__).parent.parent / "recipes" / "selfie-segmentation.yaml"
    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", "x86-tflite", "--runner", "local", "--out", str(out)])
    assert result.exit_code == 0, result.output
    workdir = out / "selfie-segmentation" / "x86-tflite"
    fp32 = load_results(workdir / "results.json").variants[0]
    assert fp32.validation.miou == 1.0 and fp32.validation.source.miou > 0.99
    assert "| mIoU | source mIoU |" in (workdir / "report.md").read_text()
