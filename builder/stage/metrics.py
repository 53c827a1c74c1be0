"""Agreement between a reference model's outputs and a converted model's outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from builder.errors import ConfigError, StepError

# SNR reported when the candidate equals the reference exactly (float32 rounding
# alone stays below ~150 dB, so this value only ever means "identical").
MAX_SNR_DB = 300.0


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """Cosine similarity, absolute errors and SNR over all paired arrays.

    Each list holds arrays paired by position (outputs, or batches of
    samples). Cosine is taken per sample (the first axis of each array;
    a 0-d or 1-d array is one sample), then averaged ("cosine") and its
    minimum kept ("cosine_min"); two all-zero samples count as 1.0, one
    all-zero sample against a non-zero one as 0.0. Errors are over all
    elements. `snr_db` = 10*log10(sum(ref^2) / sum((ref-cand)^2)) over
    everything, clipped to +-MAX_SNR_DB (so identical outputs give 300.0
    and the dict stays JSON-safe).
    """
    if len(reference) != len(candidate) or not reference:
        raise StepError(f"cannot compare {len(reference)} reference arrays with {len(candidate)} candidate arrays")
    cosines, errors, signal, noise = [], [], 0.0, 0.0
    for i, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        ref, cand = _paired(np.asarray(ref, np.float64), np.asarray(cand, np.float64), i)
        rows_r, rows_c = _rows(ref), _rows(cand)
        cosines.append(_row_cosines(rows_r, rows_c))
        diff = np.abs(ref - cand).ravel()
        errors.append(diff)
        signal += float(np.sum(ref * ref))
        noise += float(np.sum(diff * diff))
    cos = np.concatenate(cosines)
    err = np.concatenate(errors)
    return {
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "snr_db": _snr_db(signal, noise),
    }


def _paired(ref: np.ndarray, cand: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    if ref.shape == cand.shape:
        return ref, cand
    if ref.size == cand.size and np.squeeze(ref).shape == np.squeeze(cand).shape:
        return ref, cand.reshape(ref.shape)  # e.g. (1, 4) against (4,): only singleton dims differ
    raise StepError(f"output {index}: reference shape {ref.shape} differs from candidate shape {cand.shape}")


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(1, -1) if x.ndim < 2 else x.reshape(x.shape[0], -1)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (na * nb)
    cos[(na == 0) & (nb == 0)] = 1.0
    cos[(na == 0) ^ (nb == 0)] = 0.0
    return np.clip(cos, -1.0, 1.0)


def _snr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return MAX_SNR_DB
    if signal == 0.0:
        return -MAX_SNR_DB
    return float(np.clip(10.0 * np.log10(signal / noise), -MAX_SNR_DB, MAX_SNR_DB))


def topk_agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray, k: int = 1) -> float:
    """Fraction of samples where the reference's top-1 class is in the candidate's top-k.

    So k=1 is plain argmax agreement, and k=5 asks whether the candidate still
    ranks the reference's answer among its five best. Inputs are (N, classes)
    or (classes,) for one sample.
    """
    ref, cand = _logits(reference_logits), _logits(candidate_logits)
    if ref.shape != cand.shape:
        raise StepError(f"reference logits {ref.shape} and candidate logits {cand.shape} differ in shape")
    return _hit_rate(cand, ref.argmax(axis=1), k)


def accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among the k highest logits (top-k accuracy)."""
    scores = _logits(logits)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != scores.shape[0]:
        raise StepError(f"{scores.shape[0]} samples of logits but {labels.shape[0]} labels")
    return _hit_rate(scores, labels, k)


def _logits(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)


def _hit_rate(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    classes = scores.shape[1]
    if not 1 <= k <= classes:
        raise ConfigError(f"top-k needs 1 <= k <= {classes} (the number of classes), got k={k}")
    if scores.shape[0] == 0:
        raise StepError("no samples to score")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == targets[:, None], axis=1)))


_LAYOUTS = ((0, 2, 3, 1), (0, 3, 1, 2), (0, 2, 1))  # NCHW->NHWC, NHWC->NCHW, (N, C, L)->(N, L, C)


def align_outputs(reference: list[np.ndarray], candidate: list[np.ndarray]) -> list[tuple[int, tuple | None]]:
    """For each reference output, (candidate output index, axes to transpose it by or None).

    A converter may reorder outputs (some order them by name) and change their layout
    (ONNX to TensorFlow makes NCHW outputs NHWC); outputs are matched by shape, in order where
    that fits, then through a layout transpose. One sample's outputs are enough to decide.
    """
    if len(reference) != len(candidate):
        raise StepError(f"the source has {len(reference)} outputs, the artifact {len(candidate)}")
    free = list(range(len(candidate)))
    pairs = []
    for i, ref in enumerate(reference):
        shape = np.squeeze(ref).shape
        order = ([i] if i in free else []) + [j for j in free if j != i]
        match = next(((j, None) for j in order if np.squeeze(candidate[j]).shape == shape), None)
        match = match or next(((j, axes) for j in order for axes in _LAYOUTS if candidate[j].ndim == len(axes)
                               and np.squeeze(candidate[j].transpose(_inverse(axes))).shape == shape), None)
        if match is None:
            raise StepError(f"source output {i} {list(ref.shape)} matches no artifact output "
                            f"({', '.join(str(list(candidate[j].shape)) for j in free)})")
        free.remove(match[0])
        pairs.append(match)
    return pairs


def _inverse(axes: tuple) -> tuple:
    return tuple(int(a) for a in np.argsort(axes))


def aligned(candidate: list[np.ndarray], pairs: list[tuple[int, tuple | None]]) -> list[np.ndarray]:
    """The candidate's outputs in the reference's order and layout."""
    return [candidate[j] if axes is None else np.ascontiguousarray(candidate[j].transpose(_inverse(axes)))
            for j, axes in pairs]


Z95 = 1.959964  # two-sided 95%


def wilson_interval(rate: float, samples: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion measured on `samples` samples (sound near 0 and 1)."""
    if samples <= 0:
        return 0.0, 1.0
    centre = (rate + z * z / (2 * samples)) / (1 + z * z / samples)
    half = z * np.sqrt(rate * (1 - rate) / samples + z * z / (4 * samples * samples)) / (1 + z * z / samples)
    # the interval holds the rate; rounding alone put 1.0 just above 0.9999999999999999
    return float(min(rate, max(0.0, centre - half))), float(max(rate, min(1.0, centre + half)))


def per_photo(hits: np.ndarray, photos: np.ndarray) -> np.ndarray:
    """Each photo's share of its samples that hit (its crops and flips are one photo, not several samples)."""
    _, which = np.unique(photos, return_inverse=True)
    return np.bincount(which, weights=hits.astype(np.float64)) / np.bincount(which)


def rate_interval(rate: float, photos: int) -> tuple[float, float]:
    """95% interval of a rate measured on the samples of `photos` distinct photos.

    Wilson's interval over the photos, not the samples: the per-photo shares of hits lie in [0, 1] with
    variance at most rate * (1 - rate), so this never claims more certainty than the distinct photos give,
    however many crops each gave."""
    return wilson_interval(rate, photos)


@dataclass(frozen=True)
class KeptAccuracy:
    """A variant's labeled accuracy as a share of the reference's on the same photos (MLPerf's relative gate).

    `lost` is the mean per-photo share of samples the reference had right and the variant wrong, `gained` the
    reverse, so variant accuracy = reference - lost + gained. The interval combines Wilson intervals (over
    photos) of lost, gained and the reference's accuracy, each at 95%: conservative, never degenerate."""

    reference: float
    lost: float
    gained: float

    @classmethod
    def of(cls, reference_hits: np.ndarray, candidate_hits: np.ndarray, photos: np.ndarray) -> KeptAccuracy:
        ref, cand = reference_hits.astype(np.float64), candidate_hits.astype(np.float64)
        return cls(reference=float(per_photo(ref, photos).mean()),
                   lost=float(per_photo(np.maximum(ref - cand, 0), photos).mean()),
                   gained=float(per_photo(np.maximum(cand - ref, 0), photos).mean()))

    @property
    def ratio(self) -> float | None:
        return None if self.reference == 0 else 1 - (self.lost - self.gained) / self.reference

    def interval(self, photos: int) -> tuple[float, float] | None:
        if self.reference == 0:
            return None
        ref_lo, ref_hi = wilson_interval(self.reference, photos)
        lost_lo, lost_hi = wilson_interval(self.lost, photos)
        gained_lo, gained_hi = wilson_interval(self.gained, photos)
        worst, best = lost_hi - gained_lo, lost_lo - gained_hi  # the net loss at its largest and its smallest
        if ref_lo <= 0:
            return 0.0, max(self.ratio, 1 - best / ref_hi)
        # a net loss weighs most against the smallest plausible reference accuracy, a net gain least
        low = 1 - worst / (ref_lo if worst > 0 else ref_hi)
        high = 1 - best / (ref_hi if best > 0 else ref_lo)
        return max(0.0, min(self.ratio, low)), max(self.ratio, high)


def photos_to_decide(bounds_at: Callable[[int], tuple[float, float]], threshold: float, photos: int) -> int | None:
    """About how many distinct photos, with the figures as measured, put the interval clear of `threshold`;
    None if no number would (the figure equals the threshold)."""
    n = max(photos, 1)
    while n < 10**7:
        lo, hi = bounds_at(n)
        if not lo <= threshold <= hi:
            return n
        n = int(n * 1.1) + 1
    return None
