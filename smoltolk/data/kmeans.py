"""K-means units, the second half of the speech tokenizer (``smoltolk.data.speech_tokenizer``).

- ``KMeansQuantizer``: frame features -> unit ids (frames,) int64, centroids kept as plain ``.npy`` or
  safetensors (``save_centroids`` / ``load_centroids``; never a pickle);
- ``fit_kmeans`` learns them (scikit-learn MiniBatchKMeans, seeded);
- ``convert_joblib_kmeans`` turns a published (pickled) scikit-learn KMeans into plain centroids, as an
  explicit opt-in.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from smoltolk.errors import CheckpointError, ConfigError, InputError


def _check_centroids(centroids: Any, where: str) -> np.ndarray:
    centroids = np.asarray(centroids)
    if centroids.ndim != 2 or centroids.shape[0] < 1 or centroids.shape[1] < 1:
        raise CheckpointError(f"{where}: expected centroids of shape (K, dim), got {centroids.shape}")
    if not np.issubdtype(centroids.dtype, np.number) or not np.isfinite(centroids).all():
        raise CheckpointError(f"{where}: centroids must be finite numbers")
    return np.ascontiguousarray(centroids, dtype=np.float32)


def save_centroids(path: str | Path, centroids: np.ndarray) -> Path:
    """Write (K, dim) float32 centroids as ``.npy`` or ``.safetensors`` (key "centroids"), atomically."""
    path = Path(path)
    centroids = _check_centroids(centroids, str(path))
    if path.suffix not in (".npy", ".safetensors"):
        raise ConfigError(f"{path}: centroids are written as .npy or .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, centroids, allow_pickle=False)
    else:
        from safetensors.numpy import save_file

        save_file({"centroids": centroids}, str(tmp), metadata={"format": "smoltolk-kmeans"})
    os.replace(tmp, path)
    return path


def load_centroids(path: str | Path) -> np.ndarray:
    """(K, dim) float32 centroids from ``.npy`` or ``.safetensors``; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: centroid file not found (expected .npy or .safetensors)")
    if path.suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except ValueError as e:  # also: an object array, which would need a pickle
            raise CheckpointError(f"{path}: not a plain numeric .npy array ({e})") from None
    elif path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read safetensors ({e})") from None
        if "centroids" not in tensors and len(tensors) != 1:
            raise CheckpointError(f"{path}: expected a tensor named 'centroids', found {sorted(tensors)}")
        data = tensors.get("centroids", next(iter(tensors.values())))
    else:
        raise CheckpointError(f"{path}: expected a .npy or .safetensors centroid file; a pickled scikit-learn "
                              "KMeans must be converted first (smoltolk convert-kmeans)")
    return _check_centroids(data, str(path))


class KMeansQuantizer:
    """Frame features (frames, dim) -> index of the nearest centroid (squared euclidean), (frames,) int64."""

    def __init__(self, centroids: np.ndarray, source: str = "centroids", chunk_elements: int = 1 << 24):
        self.centroids = _check_centroids(centroids, source)  # (K, dim)
        self.source = source
        self._sq_norms = np.square(self.centroids).sum(axis=1)  # (K,)
        self.chunk_frames = max(1, chunk_elements // self.num_units)  # bounds the (chunk, K) distance block

    @classmethod
    def load(cls, path: str | Path) -> KMeansQuantizer:
        return cls(load_centroids(path), source=str(path))

    def save(self, path: str | Path) -> Path:
        return save_centroids(path, self.centroids)

    @property
    def num_units(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.centroids.tobytes()).hexdigest()[:16]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise InputError(f"features of shape {features.shape} do not fit the centroids of {self.source} "
                             f"(expected (frames, {self.dim}))")
        if not np.isfinite(features).all():
            raise InputError("features hold NaN or infinite values")
        units = np.empty(features.shape[0], dtype=np.int64)
        for s in range(0, features.shape[0], self.chunk_frames):
            x = features[s:s + self.chunk_frames]  # (n, dim)
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every centroid of a row
            units[s:s + len(x)] = np.argmin(self._sq_norms[None, :] - 2.0 * (x @ self.centroids.T), axis=1)
        return units


def fit_kmeans(features: Iterable[np.ndarray], k: int, *, max_frames: int | None = None, seed: int = 0,
               batch_size: int = 10_000, n_init: int = 3, max_iter: int = 100) -> np.ndarray:
    """Learn k centroids with scikit-learn's MiniBatchKMeans (k-means++, seeded): (k, dim) float32.

    ``features`` yields (frames, dim) arrays; reading stops once ``max_frames`` frames are in
    (the rest of the iterator is not consumed), so pass utterances in a random order.
    """
    if k < 1:
        raise ConfigError(f"k {k}: must be positive")
    parts, total = [], 0
    for part in features:
        part = np.asarray(part, dtype=np.float32)
        if part.ndim != 2 or (parts and part.shape[1] != parts[0].shape[1]):
            raise InputError(f"features of shape {part.shape}: expected (frames, "
                             f"{parts[0].shape[1] if parts else 'dim'})")
        if max_frames is not None:
            part = part[:max_frames - total]
        parts.append(part)
        total += len(part)
        if max_frames is not None and total >= max_frames:
            break
    if total < k:
        raise InputError(f"k-means with k={k} needs at least {k} frames, got {total}")
    data = np.concatenate(parts)  # (frames, dim)
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, init="k-means++", n_init=n_init, max_iter=max_iter,
                         batch_size=min(batch_size, len(data)), random_state=seed)
    km.fit(data)
    return km.cluster_centers_.astype(np.float32)


class UntrustedPickleWarning(UserWarning):
    """Loading a pickle runs whatever code the file's author put in it."""


def convert_joblib_kmeans(pkl_path: str | Path, out_path: str | Path) -> Path:
    """Turn a joblib-pickled scikit-learn KMeans (as published beside HuBERT models) into plain centroids.

    UNSAFE BY NATURE: unpickling executes code chosen by whoever made the file. Call this only on
    a file whose origin you trust; the output (``.npy`` / ``.safetensors``) is plain data that
    ``KMeansQuantizer.load`` reads without any pickle.
    """
    pkl_path = Path(pkl_path)
    if not pkl_path.is_file():
        raise InputError(f"{pkl_path}: pickle file not found")
    warnings.warn(f"{pkl_path}: loading a pickle executes code chosen by its author; do this only for a file "
                  "from a source you trust. The converted centroids are plain data.",
                  UntrustedPickleWarning, stacklevel=2)
    import joblib

    try:
        obj = joblib.load(pkl_path)
    except Exception as e:  # unpickling can fail in many ways (truncated file, missing classes, ...)
        raise InputError(f"{pkl_path}: cannot load the pickle ({type(e).__name__}: {e})") from None
    centers = getattr(obj, "cluster_centers_", None)
    if centers is None:
        raise InputError(f"{pkl_path}: holds a {type(obj).__name__}, expected a fitted scikit-learn KMeans "
                         "(with cluster_centers_)")
    return save_centroids(out_path, _check_centroids(centers, str(pkl_path)))


# ---------------------------------------------------------------------------------------------
