"""Subspace overlap between modalities (paper Fig. 4).

Paired text and speech representations of the same words, one layer at a time: centre each
modality; U = the top-k principal directions of one modality; the fraction of the other
modality's variance those directions explain is ||X U||_F^2 / ||X||_F^2. Both directions are
reported. A random k-dimensional subspace of R^d explains about k / d of any variance: the floor.
"""

from __future__ import annotations

import numpy as np

from smoltolk.errors import InputError


def principal_directions(x: np.ndarray, k: int) -> np.ndarray:
    """(d, k) orthonormal top-k principal directions of the rows of ``x`` (centred here)."""
    x = np.asarray(x, dtype=np.float64)
    if k > min(x.shape):
        raise InputError(f"subspace overlap: top-{k} directions need at least {k} samples and dimensions, "
                         f"got {x.shape}")
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return vt[:k].T


def explained_fraction(x: np.ndarray, directions: np.ndarray) -> float:
    """Fraction of the (centred) variance of ``x`` that lies in the span of ``directions`` (d, k)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    total = float(np.sum(x * x))
    return float(np.sum((x @ directions) ** 2) / total) if total > 0 else float("nan")


def subspace_overlap(text: np.ndarray, speech: np.ndarray, k: int = 50) -> dict[str, float]:
    """Overlap of paired text and speech representations (N, d) at one layer, both directions."""
    if text.shape[1] != speech.shape[1]:
        raise InputError(f"subspace overlap: text is {text.shape[1]}-dimensional, speech {speech.shape[1]}")
    return {"speech_on_text": explained_fraction(speech, principal_directions(text, k)),
            "text_on_speech": explained_fraction(text, principal_directions(speech, k)),
            "random_floor": k / text.shape[1]}


def paired_retrieval(speech: np.ndarray, text: np.ndarray) -> dict[str, float]:
    """Word-level alignment of paired representations (N, d) at one layer: row i of each is word i. Each
    modality is centred; a spoken word is retrieved correctly when its own written word is the most
    cosine-similar of the N (``speech_to_text``), and back (``text_to_speech``); ``pair_margin``: the mean
    cosine of a word's two forms minus its mean cosine to the other words' forms; chance accuracy 1 / N."""
    if speech.shape != text.shape or speech.shape[0] < 2:
        raise InputError(f"paired retrieval: expected two (N >= 2, d) arrays of one shape, got {speech.shape} and "
                         f"{text.shape}")

    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(0)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sim = unit(speech) @ unit(text).T  # (N spoken, N written)
    n = sim.shape[0]
    gold = np.arange(n)
    off = (sim.sum(1) - np.diag(sim)) / (n - 1)
    return {"speech_to_text": float((sim.argmax(1) == gold).mean()),
            "text_to_speech": float((sim.argmax(0) == gold).mean()),
            "pair_margin": float((np.diag(sim) - off).mean()), "chance": 1.0 / n}
