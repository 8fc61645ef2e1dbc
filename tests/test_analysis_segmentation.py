"""Word segmentation from peaks: one-to-one matching, P/R/F1/R-value with known values, tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smoltolk.analysis.segmentation import (
    PROMINENCE_GRID,
    SegmentationScores,
    match_boundaries,
    peak_boundaries,
    reference_boundaries,
    score_segmentation,
    tune_and_test,
)


def test_prominence_grid_is_the_papers():
    assert PROMINENCE_GRID[0] == 0.01 and PROMINENCE_GRID[-1] == 0.15 and len(PROMINENCE_GRID) == 15


def test_perfect_segmentation():
    s = SegmentationScores.from_counts(hits=3, reference=3, predicted=3)
    assert (s.precision, s.recall, s.f1, s.over_segmentation, s.r_value) == (1, 1, 1, 0, 1)


def test_known_values_under_segmentation():
    # reference {5, 10}, predicted {5}: HR 0.5, P 1, OS -0.5, r1 = sqrt(0.5), r2 = 0
    hits = match_boundaries([5, 10], [5])
    s = SegmentationScores.from_counts(hits, 2, 1)
    assert s.precision == 1 and s.recall == 0.5 and s.f1 == pytest.approx(2 / 3)
    assert s.r_value == pytest.approx(1 - math.sqrt(0.5) / 2)


def test_over_segmentation_raises_recall_and_lowers_the_r_value():
    ref = [5, 10, 15]
    exact = SegmentationScores.from_counts(match_boundaries(ref, [5, 10]), 3, 2)
    everywhere = list(range(1, 20))
    over = SegmentationScores.from_counts(match_boundaries(ref, everywhere), 3, len(everywhere))
    assert over.recall == 1 > exact.recall
    assert over.r_value < exact.r_value
    # hand computed: HR 1, OS 19/3 - 1 = 16/3, r1 = 16/3, r2 = -(16/3)/sqrt(2)
    os_ = 16 / 3
    assert over.over_segmentation == pytest.approx(os_)
    assert over.r_value == pytest.approx(1 - (os_ + os_ / math.sqrt(2)) / 2)


def test_matching_is_one_to_one_within_one_token():
    assert match_boundaries([5], [4, 5, 6]) == 1  # one reference takes one prediction
    assert match_boundaries([5, 6], [5]) == 1
    assert match_boundaries([5, 7], [6]) == 1
    assert match_boundaries([5, 7], [6, 8]) == 2  # greedy keeps 6 for 5 or 7, 8 takes 7
    assert match_boundaries([5], [7]) == 0
    assert match_boundaries([10, 20], [11, 19], tolerance=0) == 0
    assert match_boundaries([], [1]) == 0


def test_reference_boundaries_are_internal_word_ends():
    assert reference_boundaries([3, 3, 7, 12], 12).tolist() == [3, 7]


def test_peaks_become_boundaries_before_the_unit():
    w = np.full(13, 0.1)  # [BOS, 12 units]
    w[[4, 8]] = 0.6
    w[12] = 0.9  # the last position is an edge: never a peak
    assert peak_boundaries(w, 0.1).tolist() == [4, 8]
    assert peak_boundaries(w, 0.6).tolist() == []


def test_tuning_picks_a_prominence_above_the_noise():
    rng = np.random.default_rng(0)

    def utterance(n=60):
        w = 0.2 + 0.04 * rng.random(n + 1)  # small bumps everywhere
        bounds = np.sort(rng.choice(np.arange(4, n - 2, 4), 6, replace=False))  # words of 4+ units
        w[bounds] += 0.3
        return w, bounds

    dev = list(zip(*[utterance() for _ in range(8)]))
    test = list(zip(*[utterance() for _ in range(8)]))
    result = tune_and_test(dev, test)
    assert result["prominence"] >= 0.02  # above the noise bumps
    assert result["test"]["r_value"] > 0.95 and result["test"]["recall"] > 0.95
    low = score_segmentation(*test, 0.01)
    assert low.recall >= result["test"]["recall"] - 1e-9 and low.r_value < result["test"]["r_value"]
    assert set(result["dev_r_value_by_prominence"]) == {f"{p:g}" for p in PROMINENCE_GRID}
