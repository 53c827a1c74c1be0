"""mAP of detections against ground-truth boxes, as COCO's evaluation computes it (pycocotools' COCOeval, bbox,
every area, at most 100 detections per image and class):

- per class and IoU threshold, each image's detections, best score first, take the best-overlapping ground truth
  not yet taken (IoU >= the threshold); over all images, best score first, precision is made non-increasing and
  read at recalls 0, 0.01, ..., 1 (101 points; 0 beyond the last recall reached);
- `map50`: that at IoU 0.5, averaged over the classes the ground truth has; `map`: averaged over IoU 0.50, 0.55,
  ..., 0.95 too. A class without ground truth is left out; one with ground truth and no detection counts 0.
"""

from __future__ import annotations

import numpy as np

from builder.config.boxes import Box
from builder.stage.detections import Found, iou

THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALLS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100


def _matches(found: list[Found], truth: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """One image and class: its detections' scores (best first, at most MAX_DETECTIONS) and, per threshold,
    whether each matched a ground-truth box."""
    order = np.argsort([-f.score for f in found], kind="mergesort")[:MAX_DETECTIONS]
    scores = np.array([found[i].score for i in order])
    matched = np.zeros((len(THRESHOLDS), len(order)), bool)
    if not len(order) or not truth:
        return scores, matched
    overlaps = iou(np.array([found[i].box for i in order]), np.array([t[1:] for t in truth]))
    for t, threshold in enumerate(THRESHOLDS):
        taken = np.zeros(len(truth), bool)
        for d in range(len(order)):
            best, chosen = min(threshold, 1 - 1e-10), -1
            for g in range(len(truth)):  # COCO's rule: the last of equally good boxes wins
                if not taken[g] and overlaps[d, g] >= best:
                    best, chosen = overlaps[d, g], g
            if chosen >= 0:
                taken[chosen] = matched[t, d] = True
    return scores, matched


def _precisions(scores: np.ndarray, matched: np.ndarray, positives: int) -> np.ndarray:
    """(thresholds, recall points) interpolated precision of one class over every image."""
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
    out = np.zeros((len(THRESHOLDS), len(RECALLS)))
    for t in range(len(THRESHOLDS)):
        recall = tp[t] / positives
        precision = np.maximum.accumulate((tp[t] / (tp[t] + fp[t] + np.spacing(1)))[::-1])[::-1]
        at = np.searchsorted(recall, RECALLS, side="left")
        reached = at < len(precision)
        out[t, reached] = precision[at[reached]]
    return out


def mean_average_precision(found: list[list[Found]], truth: list[list[Box]]) -> dict[str, float | None]:
    """`map50` and `map` of each sample's detections against its ground truth; None without any ground truth."""
    classes = sorted({b.cls for boxes in truth for b in boxes})
    per_class = []
    for cls in classes:
        pairs = [_matches([f for f in dets if f.cls == cls], [b for b in boxes if b.cls == cls])
                 for dets, boxes in zip(found, truth)]
        positives = sum(b.cls == cls for boxes in truth for b in boxes)
        scores = np.concatenate([s for s, _ in pairs])
        matched = np.concatenate([m for _, m in pairs], axis=1)
        per_class.append(_precisions(scores, matched, positives))
    if not per_class:
        return {"map50": None, "map": None}
    table = np.stack(per_class)  # (classes, thresholds, recalls)
    return {"map50": float(table[:, 0].mean()), "map": float(table.mean())}
