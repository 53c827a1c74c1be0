"""builder.stage.metrics on hand-computed arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from builder.errors import ConfigError, StepError
from builder.stage.metrics import MAX_SNR_DB, accuracy, compare, topk_agreement


def test_compare_per_sample_cosine_errors_and_snr():
    reference = [np.array([[3.0, 4.0], [1.0, 0.0]])]
    candidate = [np.array([[3.0, 4.0], [0.0, 1.0]])]
    assert compare(reference, candidate) == pytest.approx(
        {
            "cosine": 0.5,  # rows: 1.0 and 0.0
            "cosine_min": 0.0,
            "max_abs_error": 1.0,
            "mean_abs_error": 0.5,  # |diffs| 0, 0, 1, 1
            "snr_db": 10 * math.log10(26 / 2),  # signal 9+16+1, noise 1+1
        }
    )


def test_compare_pools_outputs_and_allows_squeezed_shapes():
    reference = [np.array([[1.0, 2.0, 2.0]]), np.array([-1.0, 0.0])]
    candidate = [np.array([1.0, 2.0, 2.3]), np.array([1.0, 0.0])]  # (3,) against (1, 3)
    result = compare(reference, candidate)
    assert result["cosine"] == pytest.approx((9.6 / (3 * math.sqrt(10.29)) + -1.0) / 2)
    assert result["cosine_min"] == pytest.approx(-1.0)
    assert result["max_abs_error"] == pytest.approx(2.0)
    assert result["mean_abs_error"] == pytest.approx((0.3 + 2.0) / 5)
    assert result["snr_db"] == pytest.approx(10 * math.log10(10 / (0.09 + 4)))


def test_compare_identical_and_zero_outputs_stay_json_safe():
    same = compare([np.ones((2, 3), np.float32)], [np.ones((2, 3), np.float32)])
    assert same == {"cosine": 1.0, "cosine_min": 1.0, "max_abs_error": 0.0, "mean_abs_error": 0.0, "snr_db": MAX_SNR_DB}
    json.dumps(same, allow_nan=False)
    zeros = compare([np.zeros(4)], [np.zeros(4)])
    assert zeros["cosine"] == 1.0 and zeros["snr_db"] == MAX_SNR_DB
    lost = compare([np.zeros(4)], [np.ones(4)])
    assert lost["cosine"] == 0.0 and lost["snr_db"] == -MAX_SNR_DB
    json.dumps(lost, allow_nan=False)


def test_compare_rejects_mismatched_outputs():
    with pytest.raises(StepError, match=r"reference shape \(2, 3\) differs from candidate shape \(3, 2\)"):
        compare([np.zeros((2, 3))], [np.zeros((3, 2))])
    with pytest.raises(StepError, match="1 reference arrays with 2 candidate"):
        compare([np.zeros(2)], [np.zeros(2), np.zeros(2)])


REFERENCE = np.array([[0.1, 0.7, 0.2], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])  # top-1: 1, 0, 2, 0
CANDIDATE = np.array([[0.2, 0.6, 0.2], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1], [0.8, 0.1, 0.1]])  # top-1: 1, 1, 0, 0


def test_topk_agreement_counts_reference_top1_in_candidate_topk():
    assert topk_agreement(REFERENCE, CANDIDATE, k=1) == 0.5
    assert topk_agreement(REFERENCE, CANDIDATE, k=2) == 0.75  # sample 1's class 0 is the candidate's 2nd
    assert topk_agreement(REFERENCE, CANDIDATE, k=3) == 1.0
    assert topk_agreement(REFERENCE[0], CANDIDATE[0]) == 1.0  # one sample as a 1-d vector
    with pytest.raises(ConfigError, match="k=4"):
        topk_agreement(REFERENCE, CANDIDATE, k=4)
    with pytest.raises(StepError, match="differ in shape"):
        topk_agreement(REFERENCE, CANDIDATE[:2])


def test_accuracy_top1_and_top2():
    labels = np.array([1, 0, 1, 2])
    assert accuracy(CANDIDATE, labels) == 0.25
    assert accuracy(CANDIDATE, labels, k=2) == 0.75
    with pytest.raises(StepError, match="4 samples of logits but 3 labels"):
        accuracy(CANDIDATE, labels[:3])


def test_wilson_interval_of_the_quickstart_gate_on_50_samples_straddles_it():
    from builder.stage.metrics import photos_to_decide, wilson_interval

    low, high = wilson_interval(0.92, 50)
    assert 0.80 < low < 0.82 and 0.96 < high < 0.97  # 0.90 lies inside: 50 samples cannot tell
    assert wilson_interval(1.0, 8)[0] > 0.6 and wilson_interval(1.0, 8)[1] == 1.0
    for samples in range(1, 1001):  # the interval holds the rate, whatever rounding does at the ends
        assert wilson_interval(1.0, samples)[1] == 1.0 and wilson_interval(0.0, samples)[0] == 0.0
    needed = photos_to_decide(lambda n: wilson_interval(0.92, n), 0.90, 50)
    assert 600 < needed < 1000 and wilson_interval(0.92, needed)[0] > 0.9
    assert photos_to_decide(lambda n: wilson_interval(0.9, n), 0.9, 50) is None


def test_a_gate_inside_the_interval_is_undecided_not_passed():
    from builder.stage.steps.measure import add_intervals, check_gates

    result = {"samples": 50, "photos": 50, "top1_agreement": 0.92, "cosine": 0.99}
    add_intervals(result)
    gates = {g["gate"]: g for g in check_gates({"min_top1_agreement": 0.9, "min_cosine": 0.95}, result)}
    assert gates["min_top1_agreement"]["outcome"] == "undecided" and not gates["min_top1_agreement"]["passed"]
    assert 600 < gates["min_top1_agreement"]["photos_needed"] < 1000
    assert gates["min_cosine"]["outcome"] == "pass"
    add_intervals(result := {"top1_agreement": 0.99, "photos": 2000})
    assert check_gates({"min_top1_agreement": 0.9}, result)[0]["outcome"] == "pass"
    add_intervals(result := {"top1_agreement": 0.5, "photos": 2000})
    assert check_gates({"min_top1_agreement": 0.9}, result)[0]["outcome"] == "fail"


def test_crops_of_one_photo_do_not_narrow_the_interval():
    """500 samples cut from 50 photos are as certain as 50 samples: the interval counts the photos."""
    from builder.stage.steps.measure import add_intervals, check_gates

    many_crops = {"samples": 500, "photos": 50, "top1_agreement": 0.92}
    add_intervals(many_crops)
    assert many_crops["top1_agreement_interval"][0] < 0.82  # as wide as 50 samples give
    assert check_gates({"min_top1_agreement": 0.9}, many_crops)[0]["outcome"] == "undecided"
    distinct = {"samples": 500, "photos": 500, "top1_agreement": 0.92}
    add_intervals(distinct)
    assert distinct["top1_agreement_interval"][0] > 0.89


def test_kept_accuracy_pairs_the_photos_and_never_claims_certainty_it_lacks():
    from builder.stage.metrics import KeptAccuracy

    photos = np.repeat(np.arange(100), 2)  # two crops of each of 100 photos
    ref = np.array([True] * 160 + [False] * 40)  # fp32 right on 80 photos
    same = KeptAccuracy.of(ref, ref.copy(), photos)
    assert same.ratio == 1.0 and same.lost == 0 and same.gained == 0
    low, high = same.interval(100)
    assert 0.94 < low < 0.96 and high > 1.0  # nothing lost on 100 photos still leaves ~4% of them possible
    worse = ref.copy()
    worse[:8] = False  # both crops of 4 photos fp32 had right
    kept = KeptAccuracy.of(ref, worse, photos)
    assert kept.lost == pytest.approx(0.04) and kept.ratio == pytest.approx(0.95)
    low, high = kept.interval(100)
    assert low < 0.95 < high and low < 0.9  # conservative: lost 4 of 100 is no proof of keeping 90%
    assert kept.interval(10_000)[0] > 0.93  # the same shares on many more photos decide it
    half = ref.copy()
    half[::2] = False  # one of two crops of every photo wrong: each photo half lost, no photo wholly
    assert KeptAccuracy.of(ref, half, photos).lost == pytest.approx(0.4)


def test_nan_figures_fail_the_variant():
    from builder.errors import StepError
    from builder.stage.steps.measure import check_finite

    check_finite({"cosine": 0.9, "source": {"cosine": 1.0}})
    with pytest.raises(StepError, match="cosine=nan"):
        check_finite({"cosine": float("nan")})
    with pytest.raises(StepError, match="source.max_abs_error=inf"):
        check_finite({"cosine": 1.0, "source": {"max_abs_error": float("inf")}})


def test_an_emulated_validation_subset_spans_every_image():
    from builder.stage.steps.measure import spread

    chosen = spread(50, 10)  # 10 photos x 5 crops: every photo, not the crops of the first two
    assert len(chosen) == 10 and chosen[0] == 0 and chosen[-1] == 49
    assert {i // 5 for i in chosen} == set(range(10))
    assert spread(4, 10) == (0, 1, 2, 3)
