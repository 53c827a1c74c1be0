"""Agreement in a task's own terms, between a reference's outputs and a candidate's, over all samples.

- detection: F1 of the detections both find (score >= 0.5), and the mean IoU of their boxes. Outputs are
  either post-processed as an SSD post-processing op makes them (boxes (1, N, 4) as y1, x1, y2, x2; classes;
  scores; count), matched by IoU >= 0.5 and class, or raw per anchor (boxes (1, A, >=4) starting with
  centre x, y, width, height; scores (1, A) or (1, A, C), logits or probabilities), matched by anchor;
- segmentation: mIoU of the class masks (argmax over the class axis; one channel: above 0.5 for
  probabilities, above 0 for logits, decided from the reference);
- super-resolution: PSNR, with the reference's value range as the peak;
- OCR: character error rate of greedy CTC decodes (argmax per step, repeats merged, blank 0 dropped),
  as edit distance over the reference's length.

Each takes, per sample, the list of its outputs (batch of one).
"""

from __future__ import annotations

import numpy as np

from builder.errors import StepError
from builder.stage.detections import per_anchor, postprocessed
from builder.stage.metrics import MAX_SNR_DB


def _class_axis(shape: tuple[int, ...]) -> int:
    """A (1, H, W, C) or (1, C, H, W) output's class axis: beside the two equal ones (H = W, as masks mostly
    are), else the smaller of the first and last."""
    _, a, b, c = shape
    if a == b or b == c:
        return 3 if a == b else 1
    return 1 if a < c else 3


def masks(outputs: list[np.ndarray], reference: np.ndarray | None = None) -> list[np.ndarray]:
    """Class masks of segmentation outputs; a 3-d output is a mask already. `reference` (the reference's
    outputs) decides a one-channel threshold."""
    first = np.asarray(outputs[0])
    if first.ndim == 3:
        return [np.asarray(o).astype(np.int64) for o in outputs]
    if first.ndim != 4:
        raise StepError(f"a segmentation output is (1, H, W, C), (1, C, H, W) or (1, H, W), not {first.shape}")
    axis = _class_axis(first.shape)
    if first.shape[axis] == 1:
        seen = np.stack(reference if reference is not None else outputs)
        threshold = 0.5 if seen.min() >= 0 and seen.max() <= 1 else 0.0
        return [(np.asarray(o) > threshold).squeeze(axis).astype(np.int64) for o in outputs]
    return [np.asarray(o).argmax(axis=axis) for o in outputs]


def miou(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """Mean over classes (those in either mask) of intersection over union, summed over every sample."""
    ref, cand = masks(reference), masks(candidate, reference)
    ref_all, cand_all = np.concatenate([m.ravel() for m in ref]), np.concatenate([m.ravel() for m in cand])
    if ref_all.shape != cand_all.shape:
        raise StepError(f"segmentation masks differ in size: {ref[0].shape} vs {cand[0].shape}")
    ious = []
    for c in np.union1d(ref_all, cand_all):
        r, k = ref_all == c, cand_all == c
        ious.append(np.sum(r & k) / np.sum(r | k))
    return float(np.mean(ious))


def psnr_db(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    ref = np.stack([np.asarray(o, np.float64) for o in reference])
    cand = np.stack([np.asarray(o, np.float64).reshape(np.shape(r)) for o, r in zip(candidate, reference)])
    mse = float(np.mean((ref - cand) ** 2))
    peak = float(ref.max() - ref.min())
    if mse == 0.0:
        return MAX_SNR_DB
    return float(np.clip(10.0 * np.log10(peak * peak / mse), -MAX_SNR_DB, MAX_SNR_DB)) if peak else -MAX_SNR_DB


def ctc_greedy(output: np.ndarray) -> list[int]:
    """The label sequence of a CTC output ((1, T, C), (T, 1, C) or (T, C): the larger axis holds classes)."""
    steps = np.asarray(output).squeeze()
    if steps.ndim != 2:
        raise StepError(f"an OCR output is (T, C) logits per time step, not {np.shape(output)}")
    if steps.shape[0] > steps.shape[1]:
        steps = steps.T
    best = steps.argmax(axis=1)
    merged = [int(c) for i, c in enumerate(best) if i == 0 or c != best[i - 1]]
    return [c for c in merged if c != 0]


def _edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def cer(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """Character error rate of the candidate's decodes against the reference's."""
    pairs = [(ctc_greedy(r), ctc_greedy(c)) for r, c in zip(reference, candidate)]
    length = sum(len(r) for r, _ in pairs)
    errors = sum(_edit_distance(r, c) for r, c in pairs)
    return errors / length if length else float(errors > 0)


DETECTED = 0.5  # score (probability) of a detection
MATCHED = 0.5  # IoU of two post-processed boxes that are one detection


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two corner boxes (both x1, y1, x2, y2 or both y1, x1, y2, x2)."""
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(np.clip(a[2:] - a[:2], 0, None)) + np.prod(np.clip(b[2:] - b[:2], 0, None)) - inter
    return float(inter / union) if union > 0 else 0.0


def _corners(centre_size: np.ndarray) -> np.ndarray:
    cx, cy, w, h = centre_size[:4]
    return np.array([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])


def _postprocessed(outs: list[np.ndarray]) -> list[tuple[np.ndarray, int]] | None:
    """(corner box, class) of each detection of an SSD post-processing op's outputs, or None if these are not such."""
    found = postprocessed(outs)
    return None if found is None else [(np.array(f.box), f.cls) for f in found if f.score >= DETECTED]


def _detected(boxes: np.ndarray, scores: np.ndarray, logits: bool) -> dict[int, tuple[np.ndarray, int]]:
    """Anchor -> (corner box, class) of each anchor whose best score is a detection."""
    if logits:
        scores = 1 / (1 + np.exp(-np.clip(scores, -50, 50)))
    best, classes = scores.max(axis=1), scores.argmax(axis=1)
    return {int(a): (_corners(boxes[a]), int(classes[a])) for a in np.flatnonzero(best >= DETECTED)}


def detection(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict:
    found = ref_total = cand_total = 0
    ious: list[float] = []
    anchors = [(per_anchor(r), per_anchor(c)) for r, c in zip(reference, candidate)]
    ref_scores = [r[1] for r, _ in anchors if r is not None]
    logits = bool(ref_scores) and bool(min(x.min() for x in ref_scores) < 0 or max(x.max() for x in ref_scores) > 1)
    for (ref, cand), (ref_anchors, cand_anchors) in zip(zip(reference, candidate), anchors):
        r, c = _postprocessed(ref), _postprocessed(cand)
        if r is not None and c is not None:
            pairs = _match(r, c)
        elif ref_anchors is not None and cand_anchors is not None:
            r, c = _detected(*ref_anchors, logits), _detected(*cand_anchors, logits)
            pairs = [(r[a][0], c[a][0]) for a in r.keys() & c.keys() if r[a][1] == c[a][1]]
        else:
            raise StepError("detection outputs are neither the post-processed four (boxes, classes, scores, "
                            "count) of an SSD post-processing op nor per-anchor boxes and scores", hint="use task: generic")
        found += len(pairs)
        ref_total, cand_total = ref_total + len(r), cand_total + len(c)
        ious += [_iou(a, b) for a, b in pairs]
    f1 = 2 * found / (ref_total + cand_total) if ref_total + cand_total else 1.0
    return {"detection_f1": f1, "box_iou": float(np.mean(ious)) if ious else None}


def _match(ref: list[tuple[np.ndarray, int]], cand: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Greedy one-to-one matching of same-class boxes by IoU >= MATCHED, best pairs first."""
    scored = sorted(((_iou(a, b), i, j) for i, (a, ka) in enumerate(ref) for j, (b, kb) in enumerate(cand) if ka == kb),
                    reverse=True)
    used_r, used_c, pairs = set(), set(), []
    for iou, i, j in scored:
        if iou >= MATCHED and i not in used_r and j not in used_c:
            used_r.add(i)
            used_c.add(j)
            pairs.append((ref[i][0], cand[j][0]))
    return pairs


FIRST_OUTPUT = {  # task -> its figure of the first output: (name, function)
    "segmentation": ("miou", miou),
    "super_resolution": ("psnr_db", psnr_db),
    "ocr": ("cer", cer),
}


def task_figures(task: str, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict:
    if task == "detection":
        return detection(reference, candidate)
    if task not in FIRST_OUTPUT:
        return {}
    name, figure = FIRST_OUTPUT[task]
    return {name: figure([outs[0] for outs in reference], [outs[0] for outs in candidate])}
