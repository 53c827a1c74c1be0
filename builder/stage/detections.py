"""A detection model's outputs for one sample -> its detections (box, class, score), boxes as xmin, ymin, xmax, ymax
normalized to the model's input.

Outputs are either the four of an SSD post-processing op (boxes (1, N, 4) as ymin, xmin, ymax, xmax; classes;
scores; count), or raw per anchor, decoded as mediapipe's TensorsToDetectionsCalculator does with the recipe's
`detection:` options (SSD anchors, scales, a score threshold, then non-maximum suppression).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from builder.config.detection import Detection as Decoding
from builder.config.detection import SsdAnchors
from builder.errors import StepError

SCORE_CLIP = 100.0  # mediapipe's score_clipping_thresh: logits beyond it are clipped before the sigmoid


class Found(NamedTuple):
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax
    cls: int
    score: float


def postprocessed(outs: list[np.ndarray]) -> list[Found] | None:
    """Every detection (up to count) of an SSD post-processing op's outputs, or None if these are not such."""
    shapes = [np.shape(o) for o in outs]
    if len(outs) != 4 or len(shapes[0]) != 3 or shapes[0][-1] != 4 or np.size(outs[3]) != 1:
        return None
    boxes, classes, scores = (np.asarray(o, np.float64).reshape(-1, *np.shape(o)[2:]) for o in outs[:3])
    count = min(int(np.asarray(outs[3]).reshape(-1)[0]), len(scores))
    return [Found((b[1], b[0], b[3], b[2]), int(classes[i]), float(scores[i])) for i, b in enumerate(boxes[:count])]


def _scale(options: SsdAnchors, index: int) -> float:
    if len(options.strides) == 1:
        return (options.min_scale + options.max_scale) / 2
    return options.min_scale + (options.max_scale - options.min_scale) * index / (len(options.strides) - 1)


def ssd_anchors(options: SsdAnchors) -> np.ndarray:
    """(A, 4) anchors as centre x, y, width, height, in SsdAnchorsCalculator's order: layers of one stride
    merged, then per feature-map cell (rows, then columns), each of its anchors."""
    anchors = []
    layer = 0
    while layer < options.num_layers:
        ratios, scales = [], []
        last = layer
        while last < len(options.strides) and options.strides[last] == options.strides[layer]:
            scale = _scale(options, last)
            if last == 0 and options.reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                ratios += options.aspect_ratios
                scales += [scale] * len(options.aspect_ratios)
                if options.interpolated_scale_aspect_ratio > 0:
                    following = 1.0 if last == len(options.strides) - 1 else _scale(options, last + 1)
                    ratios.append(options.interpolated_scale_aspect_ratio)
                    scales.append(np.sqrt(scale * following))
            last += 1
        rows = int(np.ceil(options.input_size_height / options.strides[layer]))
        cols = int(np.ceil(options.input_size_width / options.strides[layer]))
        for y in range(rows):
            for x in range(cols):
                for ratio, scale in zip(ratios, scales):
                    w, h = (1.0, 1.0) if options.fixed_anchor_size else (scale * np.sqrt(ratio), scale / np.sqrt(ratio))
                    anchors.append(((x + options.anchor_offset_x) / cols, (y + options.anchor_offset_y) / rows, w, h))
        layer = last
    return np.array(anchors, np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner boxes (xmin, ymin, xmax, ymax): (N, 4) with (M, 4) -> (N, M)."""
    low, high = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices kept, best first: each box overlapping a kept one by more than `threshold` is dropped (plain NMS,
    where mediapipe's face detection averages the overlapping boxes instead)."""
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if not kept or iou(boxes[i : i + 1], boxes[kept]).max() <= threshold:
            kept.append(int(i))
    return kept


def decode(boxes: np.ndarray, scores: np.ndarray, decoding: Decoding, anchors: np.ndarray) -> list[Found]:
    """Raw boxes (A, >=4) and logits (A, C) of one sample -> its detections above min_score, after NMS per class."""
    if len(boxes) != len(anchors):
        raise StepError(f"the model has {len(boxes)} anchors, the recipe's detection.anchors make {len(anchors)}",
                        hint="copy the model's SsdAnchorsCalculator options into detection.anchors")
    probs = 1 / (1 + np.exp(-np.clip(scores, -SCORE_CLIP, SCORE_CLIP)))
    best, classes = probs.max(axis=1), probs.argmax(axis=1)
    cx = boxes[:, 0] / decoding.x_scale * anchors[:, 2] + anchors[:, 0]
    cy = boxes[:, 1] / decoding.y_scale * anchors[:, 3] + anchors[:, 1]
    w = boxes[:, 2] / decoding.w_scale * anchors[:, 2]
    h = boxes[:, 3] / decoding.h_scale * anchors[:, 3]
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    found = []
    for cls in np.unique(classes[best >= decoding.min_score]):
        chosen = np.flatnonzero((best >= decoding.min_score) & (classes == cls))
        for i in nms(corners[chosen], best[chosen], decoding.iou):
            found.append(Found(tuple(float(c) for c in corners[chosen[i]]), int(cls), float(best[chosen[i]])))
    return found


def per_anchor(outs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """Boxes (A, >=4) and scores (A, C) of per-anchor outputs, or None if the outputs are not such."""
    box = next((i for i, o in enumerate(outs) if np.ndim(o) == 3 and np.shape(o)[-1] >= 4), None)
    if box is None:
        return None
    boxes = np.asarray(outs[box], np.float64)[0]
    score = next((i for i, o in enumerate(outs) if i != box and np.ndim(o) in (2, 3) and np.shape(o)[1] == len(boxes)),
                 None)
    return None if score is None else (boxes, np.asarray(outs[score], np.float64)[0].reshape(len(boxes), -1))


def detections(outputs: list[list[np.ndarray]], decoding: Decoding | None) -> list[list[Found]]:
    """Each sample's detections."""
    anchors = ssd_anchors(decoding.anchors) if decoding else None
    found = []
    for outs in outputs:
        if (post := postprocessed(outs)) is not None:
            found.append(post)
        elif (raw := per_anchor(outs)) is not None:
            if decoding is None:
                raise StepError("mAP of raw per-anchor outputs needs their anchors and decoding",
                                hint="add `detection:` to the recipe (anchors and x/y/w/h_scale, as the model's "
                                     "mediapipe graph sets them)")
            found.append(decode(*raw, decoding, anchors))
        else:
            raise StepError("detection outputs are neither the post-processed four (boxes, classes, scores, count) "
                            "of an SSD post-processing op nor per-anchor boxes and scores", hint="use task: generic")
    return found
