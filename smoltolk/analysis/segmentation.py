"""Word segmentation from the last layer's dynamic pooling weight (paper Section 5.2, Table 3).

Boundaries are the peaks of w^(L)_t along a speech-only sequence (``scipy.signal.find_peaks``
with a prominence), scored against reference word boundaries with a tolerance of one token.

Conventions:

- A sequence is ``[speech EOS (BOS), u_0, ..., u_{n-1}]``; w at position k is computed from the
  inputs up to k and predicts unit k. A peak at k therefore marks a boundary *before unit k*,
  the same index as the exclusive end of the word that finishes at unit k-1. Reference
  boundaries are those word ends. Only internal boundaries count (0 < b < n): the
  utterance's start and end are given.
- Matching is **one-to-one and greedy**: pairs (reference, predicted) within the tolerance are
  taken closest first (ties: earlier first), each boundary used at most once. Counts are summed
  over the utterances of a split before the ratios are taken.
- P = hits / predicted, R (hit rate) = hits / reference, F1 = 2PR / (P + R),
  OS = R / P - 1 (= predicted / reference - 1), r1 = sqrt((1 - R)^2 + OS^2),
  r2 = (-OS + R - 1) / sqrt(2), R-value = 1 - (|r1| + |r2|) / 2 (Räsänen et al., 2009).
- The prominence is tuned over (0, 0.15] in steps of 0.01 to maximise the R-value on a dev
  split and reported on a test split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PROMINENCE_GRID = tuple(round(0.01 * k, 2) for k in range(1, 16))  # (0, 0.15] in steps of 0.01


@dataclass
class SegmentationScores:
    precision: float
    recall: float
    f1: float
    over_segmentation: float
    r_value: float
    hits: int
    reference: int
    predicted: int

    @classmethod
    def from_counts(cls, hits: int, reference: int, predicted: int) -> SegmentationScores:
        precision = hits / predicted if predicted else 0.0
        recall = hits / reference if reference else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        os_ = predicted / reference - 1 if reference else 0.0
        r1 = math.sqrt((1 - recall) ** 2 + os_ ** 2)
        r2 = (-os_ + recall - 1) / math.sqrt(2)
        return cls(precision, recall, f1, os_, 1 - (abs(r1) + abs(r2)) / 2, hits, reference, predicted)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def match_boundaries(reference: Sequence[int], predicted: Sequence[int], tolerance: int = 1) -> int:
    """Number of one-to-one matches between reference and predicted boundaries within ``tolerance``."""
    ref = np.unique(np.asarray(reference, dtype=np.int64))
    pred = np.unique(np.asarray(predicted, dtype=np.int64))
    if not ref.size or not pred.size:
        return 0
    dist = np.abs(ref[:, None] - pred[None, :])  # (R, P)
    r_idx, p_idx = np.nonzero(dist <= tolerance)
    order = np.lexsort((p_idx, r_idx, dist[r_idx, p_idx]))  # closest first, then earlier
    used_r, used_p, hits = set(), set(), 0
    for k in order:
        r, p = int(r_idx[k]), int(p_idx[k])
        if r not in used_r and p not in used_p:
            used_r.add(r)
            used_p.add(p)
            hits += 1
    return hits


def reference_boundaries(word_ends: Sequence[int], num_units: int) -> np.ndarray:
    """Internal boundaries (0 < b < num_units) from words' exclusive end indices into the units."""
    ends = np.unique(np.asarray(word_ends, dtype=np.int64))
    return ends[(ends > 0) & (ends < num_units)]


def peak_boundaries(last_layer_weight: np.ndarray, prominence: float) -> np.ndarray:
    """Boundaries predicted by the peaks of w^(L) over ``[BOS, u_0..u_{n-1}]`` (length n + 1)."""
    from scipy.signal import find_peaks

    w = np.asarray(last_layer_weight, dtype=np.float64)
    peaks, _ = find_peaks(w, prominence=prominence)
    n = len(w) - 1
    return peaks[(peaks > 0) & (peaks < n)]


def score_segmentation(weights: Sequence[np.ndarray], references: Sequence[np.ndarray], prominence: float,
                       tolerance: int = 1) -> SegmentationScores:
    """P/R/F1/R-value over a split.

    ``weights[i]``: w^(L) of utterance i (BOS first); ``references[i]``: its boundaries.
    """
    hits = n_ref = n_pred = 0
    for w, ref in zip(weights, references):
        pred = peak_boundaries(w, prominence)
        hits += match_boundaries(ref, pred, tolerance)
        n_ref += len(np.unique(ref))
        n_pred += len(pred)
    return SegmentationScores.from_counts(hits, n_ref, n_pred)


def tune_and_test(dev: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
                  test: tuple[Sequence[np.ndarray], Sequence[np.ndarray]], grid: Sequence[float] = PROMINENCE_GRID,
                  tolerance: int = 1) -> dict:
    """Pick the prominence with the best dev R-value (the smallest on a tie); score test with it."""
    curve = {p: score_segmentation(*dev, p, tolerance) for p in grid}
    best = max(grid, key=lambda p: (curve[p].r_value, -p))
    test_scores = score_segmentation(*test, best, tolerance)
    return {"prominence": best, "dev": curve[best].as_dict(), "test": test_scores.as_dict(),
            "dev_r_value_by_prominence": {f"{p:g}": curve[p].r_value for p in grid}, "tolerance": tolerance,
            "matching": "one-to-one, greedy (closest pairs first)"}
