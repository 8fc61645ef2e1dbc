"""GRIDE intrinsic dimension and subspace overlap on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_close

from smoltolk.analysis.intrinsic_dim import (
    clip_above_percentile,
    gride_mle,
    gride_scaling,
    neighbour_distances,
    plateau,
)
from smoltolk.analysis.overlap import explained_fraction, principal_directions, subspace_overlap
from smoltolk.errors import InputError


def embedded(n: int, intrinsic: int, ambient: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(ambient, ambient)))[0][:intrinsic]  # (k, D) orthonormal rows
    return rng.uniform(size=(n, intrinsic)) @ basis * 5 + rng.normal(size=ambient)


def test_gride_recovers_a_5d_manifold_in_50d():
    x = embedded(2000, 5, 50)
    curve = gride_scaling(x, range_max=32)
    assert curve["ranks"] == [2, 4, 8, 16, 32]
    k = plateau(curve["ids"])
    assert curve["ids"][k] == pytest.approx(5, rel=0.2)
    assert all(e > 0 for e in curve["errors"]) and curve["scales"] == sorted(curve["scales"])


def test_gride_on_a_curved_manifold():
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 2 * np.pi, size=(1500, 2))
    torus = np.stack([(2 + np.cos(t[:, 0])) * np.cos(t[:, 1]), (2 + np.cos(t[:, 0])) * np.sin(t[:, 1]),
                      np.sin(t[:, 0])], 1)
    lifted = torus @ np.linalg.qr(rng.normal(size=(20, 20)))[0][:3]
    ids = gride_scaling(lifted, range_max=16)["ids"]
    assert ids[plateau(ids)] == pytest.approx(2, rel=0.2)


def test_two_nn_closed_form():
    mus = np.random.default_rng(0).uniform(1.01, 3, size=500)
    d, err = gride_mle(mus, 1, 2)
    xatol = 1e-7  # gride_mle's bounded solver stops within this of the maximum
    assert d == pytest.approx(len(mus) / np.log(mus).sum(), abs=xatol)
    assert_close(err, d / math.sqrt(len(mus)), terms=len(mus), dtype=torch.float64)  # closed form at the found d


def test_duplicates_are_removed_and_neighbours_exclude_self():
    x = np.repeat(embedded(300, 3, 10), 2, axis=0)  # every point twice
    assert np.isfinite(gride_scaling(x, 8)["ids"]).all()
    d = neighbour_distances(np.array([[0.0], [1.0], [3.0]]), 2)
    assert d.tolist() == [[1.0, 3.0], [1.0, 2.0], [2.0, 3.0]]
    with pytest.raises(InputError, match="too few"):
        gride_scaling(np.zeros((5, 3)), 8)


def test_clipping_at_the_95th_percentile():
    x = np.arange(100, dtype=float).reshape(10, 10)
    clipped = clip_above_percentile(x, 95)
    assert clipped.max() == pytest.approx(np.percentile(x, 95)) and clipped.min() == 0
    assert (clipped[x < 94] == x[x < 94]).all()


def test_overlap_is_one_for_the_same_subspace():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 64)))[0][:8]
    text = rng.normal(size=(500, 8)) @ basis
    speech = rng.normal(size=(500, 8)) @ basis + 3.0  # other samples, same subspace, shifted (centring)
    out = subspace_overlap(text, speech, k=8)
    for key in ("speech_on_text", "text_on_speech"):  # an SVD and projections of 500 x 64 float64 data
        assert_close(out[key], 1.0, terms=500 * 64, dtype=torch.float64)
    assert out["random_floor"] == 8 / 64


def test_overlap_of_random_data_is_about_k_over_d():
    rng = np.random.default_rng(0)
    d, k = 200, 50
    out = subspace_overlap(rng.normal(size=(4000, d)), rng.normal(size=(4000, d)), k=k)
    for key in ("speech_on_text", "text_on_speech"):
        assert out[key] == pytest.approx(k / d, abs=0.03)  # sampling noise of 4000 points: about 0.01


def test_overlap_is_asymmetric_for_nested_subspaces():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(40, 40)))[0]
    text = rng.normal(size=(1000, 10)) @ basis[:10]  # 10-D
    speech = rng.normal(size=(1000, 5)) @ basis[:5]  # inside text's span
    out = subspace_overlap(text, speech, k=5)
    assert out["text_on_speech"] == pytest.approx(0.5, abs=0.05)  # 5 of 10 equal directions, up to sampling noise
    assert_close(explained_fraction(speech, principal_directions(text, 10)), 1.0, terms=1000 * 40, dtype=torch.float64)
    with pytest.raises(InputError, match="top-50"):
        principal_directions(text[:10], 50)
