"""Intrinsic dimension with GRIDE (Denti et al., 2022), implemented here.

``dadapy`` (the implementation the paper used) pins ``numpy<2`` and JAX, which clash with this
project's environment, so smoltolk carries its own estimator (numpy / scipy / torch only), written
from the paper's likelihood and checked against dadapy's numbers on synthetic data.

For each point, r_k is the distance to its k-th nearest neighbour. At the scale (n1, n2 = 2 n1)
the ratio mu = r_{n2} / r_{n1} has, for locally uniform data of dimension d, the density

    f(mu) = d (mu^d - 1)^(n2 - n1 - 1) / (B(n2 - n1, n1) mu^(d (n2 - 1) + 1)),   mu > 1

and the ID is its maximum-likelihood d over the points (n1 = 1, n2 = 2 is TwoNN). The error is
1 / sqrt(Fisher information). :func:`gride_scaling` repeats this at n1 = 1, 2, 4, ... while
n2 <= ``range_max`` (as ``dadapy.Data.return_id_scaling_gride``); the ID is read where the curve
plateaus (:func:`plateau`). Duplicate points are removed first (their distance is 0).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import betaln

from smoltolk.errors import InputError


def clip_above_percentile(x: np.ndarray, q: float = 95.0) -> np.ndarray:
    """Clip every activation above the q-th percentile of all activations of ``x`` (paper App. C.1)."""
    return np.minimum(x, np.percentile(x, q))


def deduplicate(x: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(x), axis=0)


def neighbour_distances(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """(N, k) distances from each point to its 1st..k-th nearest other point (float64, ascending)."""
    data = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    n = data.shape[0]
    if k >= n:
        raise InputError(f"intrinsic dimension: {n} distinct points are too few for {k} neighbours")
    sq = (data * data).sum(1)
    out = torch.empty(n, k, dtype=torch.float64)
    for start in range(0, n, chunk):
        block = data[start:start + chunk]  # (c, D)
        d2 = sq[start:start + chunk, None] + sq[None, :] - 2 * block @ data.T  # (c, N)
        d2[torch.arange(block.shape[0]), torch.arange(start, start + block.shape[0])] = float("inf")  # not itself
        out[start:start + chunk] = d2.clamp_min(0).topk(k, dim=1, largest=False).values.sqrt()
    return out.numpy()


def gride_mle(mus: np.ndarray, n1: int, n2: int, d_max: float = 1000.0) -> tuple[float, float]:
    """Maximum-likelihood ID (and its error) from distance ratios ``mus`` = r_{n2} / r_{n1}."""
    mus = np.asarray(mus, dtype=np.float64)
    mus = mus[np.isfinite(mus) & (mus > 1.0)]
    if mus.size < 2:
        raise InputError("intrinsic dimension: fewer than two usable neighbour-distance ratios")
    log_mu = np.log(mus)
    n = mus.size
    gap = n2 - n1 - 1

    def neg_loglik(d: float) -> float:
        # log(mu^d - 1) computed stably as d log mu + log(1 - mu^-d)
        body = gap * (d * log_mu + np.log(-np.expm1(-d * log_mu))) if gap else 0.0
        ll = n * math.log(d) - n * betaln(n2 - n1, n1) + np.sum(body - (d * (n2 - 1) + 1) * log_mu)
        return -float(ll)

    res = minimize_scalar(neg_loglik, bounds=(1e-3, d_max), method="bounded", options={"xatol": 1e-7})
    d = float(res.x)
    # Fisher information: n / d^2 + gap * sum (log mu)^2 mu^d / (mu^d - 1)^2
    t = np.exp(-d * log_mu)  # mu^-d
    info = n / d ** 2 + gap * float(np.sum(log_mu ** 2 * t / (1 - t) ** 2))
    return d, 1.0 / math.sqrt(info)


def gride_scaling(x: np.ndarray, range_max: int = 64) -> dict[str, list[float]]:
    """IDs at scales n2 = 2, 4, ..., <= range_max (duplicates removed first).

    Returns ``ids``, ``errors``, ``ranks`` (n2 of each estimate) and ``scales`` (the mean of the
    n1-th and n2-th neighbour distances, dadapy's "rs").
    """
    x = deduplicate(x)
    range_max = min(range_max, x.shape[0] - 1)
    steps = int(math.log2(range_max)) if range_max >= 2 else 0
    if steps < 1:
        raise InputError(f"intrinsic dimension: {x.shape[0]} distinct points are too few")
    dist = neighbour_distances(x, 2 ** steps)  # column j = (j+1)-th neighbour
    ids, errors, ranks, scales = [], [], [], []
    for i in range(steps):
        n1, n2 = 2 ** i, 2 ** (i + 1)
        r1, r2 = dist[:, n1 - 1], dist[:, n2 - 1]
        d, err = gride_mle(r2 / r1, n1, n2)
        ids.append(d)
        errors.append(err)
        ranks.append(n2)
        scales.append(float(np.mean((r1 + r2) / 2)))
    return {"ids": ids, "errors": errors, "ranks": ranks, "scales": scales}


def plateau(ids: list[float]) -> int:
    """Index of the estimate where the ID curve is flattest (smallest relative change to the next scale)."""
    if len(ids) < 2:
        return 0
    change = [abs(ids[i + 1] - ids[i]) / max(abs(ids[i + 1] + ids[i]) / 2, 1e-12) for i in range(len(ids) - 1)]
    return int(np.argmin(change))
