"""Figures (matplotlib, PNG): layer weights along an utterance, their distribution, phi, per-layer curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


COLLAPSED = 1e-3  # a layer whose w stays within this of 1 everywhere: the selector has collapsed onto it


def collapsed_layer(weights: np.ndarray) -> int | None:
    """The layer (1-based) that takes all the weight at every position, or None (w: (positions, L))."""
    top = np.argmax(weights.mean(0))
    return int(top) + 1 if weights.size and np.all(weights[:, top] > 1 - COLLAPSED) else None


def _collapse_note(ax, weights: np.ndarray) -> None:
    layer = collapsed_layer(weights)
    if layer is not None:
        ax.text(0.5, 0.5, f"the selector has collapsed: layer {layer} takes w > {1 - COLLAPSED:g} everywhere\n"
                "(dynamic pooling acts as 'last layer' pooling here; no word structure to see)",
                transform=ax.transAxes, ha="center", va="center", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "gray"})


def _plain(ax) -> None:
    """Tick labels as plain numbers (no '1e-7+9.99e-1' offset notation)."""
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)


def plot_utterance_weights(weights: np.ndarray, boundaries: Sequence[int], path: str | Path, title: str = "",
                           peaks: Sequence[int] = ()) -> Path:
    """w across layers (heatmap) and the last layer's w (line) along one utterance (paper Fig. 5).

    weights: (N + 1, L) over ``[BOS, units...]``; boundaries: word boundaries in the same indexing
    (a boundary b sits before unit b, at sequence position b); peaks: predicted boundaries.
    """
    plt = _pyplot()
    steps, layers = weights.shape
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, steps * 0.08), 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    image = top.imshow(weights.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                       extent=(-0.5, steps - 0.5, 0.5, layers + 0.5), vmin=0, vmax=1)
    fig.colorbar(image, ax=[top, bottom], label="w", shrink=0.6, anchor=(0, 1))  # both panels narrow alike
    top.set_ylabel("layer")
    top.set_yticks(range(1, layers + 1) if layers <= 16 else range(1, layers + 1, max(1, layers // 8)))
    top.set_title(title or "dynamic layer weights", fontsize=10)
    bottom.plot(np.arange(steps), weights[:, -1], color="black", lw=1, label="last layer w")
    for ax in (top, bottom):
        for b in boundaries:
            ax.axvline(b, color="red", lw=0.8, alpha=0.8)
    if len(peaks):
        bottom.plot(peaks, weights[np.asarray(peaks), -1], "v", color="tab:blue", label="peaks")
    bottom.set_ylim(-0.02, 1.02)
    _plain(bottom)
    _collapse_note(top, weights[1:])
    bottom.set_xlabel("position (0 = BOS; red: word boundaries)")
    bottom.set_ylabel("w (last layer)")
    bottom.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_weight_distribution(weights: Sequence[np.ndarray], path: str | Path, title: str = "") -> Path:
    """Distribution of w per layer over all positions of all utterances (box plots)."""
    plt = _pyplot()
    stacked = np.concatenate([w for w in weights], axis=0)  # (positions, L)
    layers = stacked.shape[1]
    fig, ax = plt.subplots(figsize=(max(6.0, layers * 0.3), 3.5))
    ax.boxplot([stacked[:, layer] for layer in range(layers)], showfliers=False)
    ax.set_xticks(range(1, layers + 1), [str(k) for k in range(1, layers + 1)], fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    _plain(ax)
    _collapse_note(ax, stacked)
    ax.set_xlabel("layer")
    ax.set_ylabel("w")
    ax.set_title(title or "distribution of dynamic weights w per layer", fontsize=10)
    return _save(fig, path)


def plot_phi(phi: np.ndarray, path: str | Path, title: str = "") -> Path:
    """softmax(phi), the input-independent layer weights, as bars."""
    plt = _pyplot()
    layers = len(phi)
    fig, ax = plt.subplots(figsize=(max(6.0, layers * 0.3), 3.0))
    ax.bar(np.arange(1, layers + 1), phi, color="tab:green")
    ax.set_xticks(range(1, layers + 1) if layers <= 16 else range(1, layers + 1, max(1, layers // 8)))
    _plain(ax)
    ax.set_xlabel("layer")
    ax.set_ylabel("softmax(phi)")
    ax.set_title(title or "fixed layer weights phi (input-independent)", fontsize=10)
    return _save(fig, path)


def plot_per_layer(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, ylabel: str, title: str = "",
                   floor: float | None = None, floor_label: str = "random subspace (k/d)") -> Path:
    """Mean +- std per layer of several curves (layer 0 = the backbone's input); ``floor``: a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for label, (mean, std) in curves.items():
        x = np.arange(len(mean))
        ax.plot(x, mean, marker="o", ms=3, label=label)
        ax.fill_between(x, np.asarray(mean) - std, np.asarray(mean) + std, alpha=0.2)
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=1, label=floor_label)
    ax.set_xlabel("layer (0 = backbone input)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
