"""The speech tokenizer: 16 kHz audio -> frame features -> nearest k-means centroid -> speech units.

The paper tokenizes speech with mHuBERT-base at 25 Hz (layer 11 features, 500 k-means
centroids) and collapses repeated units, keeping their durations. The pieces:

- ``FeatureExtractor``: a 16 kHz waveform (samples,) -> frame features (frames, dim) float32.
  ``HubertFeatures`` reads a local Hugging Face HuBERT directory (any frame rate; 50 Hz for
  HuBERT-base, 25 Hz for mHuBERT-25Hz); ``LogMelFeatures`` is the weights-free log-mel
  filterbank baseline of GSLM, so the whole audio path runs without a checkpoint.
- ``KMeansQuantizer``: frame features -> unit ids (frames,) int64, centroids kept as plain
  ``.npy`` or safetensors; ``fit_kmeans`` learns them; ``convert_joblib_kmeans`` turns a
  published (pickled) scikit-learn KMeans into plain centroids, as an explicit opt-in.
- ``SpeechTokenizer``: both together, plus run-length collapse with durations.
- ``tokenize_manifest``: a JSONL manifest of utterances -> resumable JSONL shards of units.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoltolk.data.audio import SAMPLE_RATE, audio_info, load_audio
from smoltolk.data.manifest import SpeechRecord, _rows, parse_speech_record
from smoltolk.data.units import collapse
from smoltolk.errors import CheckpointError, ConfigError, InputError, SmolTolkError
from smoltolk.files import read_lines, require_safetensors
from smoltolk.model.io import file_sha256

# ---------------------------------------------------------------------------------------------
# Frame features
# ---------------------------------------------------------------------------------------------


class FeatureExtractor(ABC):
    """A 16 kHz mono waveform (samples,) -> frame features (frames, dim) float32."""

    @property
    @abstractmethod
    def frame_rate(self) -> float:
        """Frames per second of the output."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Feature dimension."""

    @abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """How many frames a waveform of ``num_samples`` samples gives (0 if too short for one)."""

    @abstractmethod
    def _extract(self, wave: np.ndarray) -> np.ndarray:
        """Features of one checked waveform."""

    def describe(self) -> dict[str, Any]:
        """What the features are (recorded beside tokenized output so runs cannot get mixed)."""
        return {"kind": type(self).__name__, "frame_rate": self.frame_rate, "dim": self.dim}

    @property
    def min_samples(self) -> int:
        """The shortest waveform that gives one frame."""
        lo, hi = 1, 1
        while self.num_frames(hi) < 1:
            lo, hi = hi, hi * 2
        while lo < hi:  # smallest n with num_frames(n) >= 1
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if self.num_frames(mid) < 1 else (lo, mid)
        return lo

    def check_wave(self, wave: np.ndarray, where: str = "waveform") -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise InputError(f"{where}: expected a 1-D mono waveform (samples,), got shape {wave.shape}")
        if wave.size < self.min_samples:
            raise InputError(f"{where}: {wave.size} samples ({wave.size / SAMPLE_RATE * 1000:.1f} ms) is too short; "
                             f"{type(self).__name__} needs at least {self.min_samples} samples at {SAMPLE_RATE} Hz "
                             "for one frame")
        return wave

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """(samples,) at 16 kHz -> (num_frames(samples), dim) float32."""
        return self._extract(self.check_wave(wave))

    def batch(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Features of several waveforms; the same as calling one by one (up to float rounding)."""
        return [self(w) for w in waves]


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("HuBERT features need the transformers package: pip install transformers "
                          "(or use --features logmel, which needs no checkpoint)") from None
    return transformers


class HubertFeatures(FeatureExtractor):
    """Hidden states of one transformer layer of a local Hugging Face HuBERT checkpoint.

    ``layer`` counts transformer layers from 1 (``hidden_states[layer]``; 0 would be the input
    to the first layer), as fairseq's ``output_layer`` does: the paper's mHuBERT uses layer 11.
    The frame rate is 16000 / prod(conv_stride): 50 Hz for HuBERT-base, 25 Hz for mHuBERT-25Hz.
    Nothing is downloaded: ``directory`` must hold ``config.json`` and the weights.

    Waveforms are normalised to zero mean and unit variance first when ``normalize`` is True;
    None reads ``do_normalize`` from the directory's ``preprocessor_config.json`` (False without one,
    as for HuBERT-base). Batches are padded only when the model allows it (see ``pads_safely``).
    """

    def __init__(self, directory: str | Path, layer: int = 11, device: str | torch.device = "cpu",
                 normalize: bool | None = None, max_batch_samples: int = 16 * SAMPLE_RATE * 10):
        directory = Path(directory)
        config_file = directory / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{directory}: no config.json; expected a local Hugging Face HuBERT directory "
                                  "(config.json + model.safetensors)")
        try:
            meta = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
        if meta.get("model_type") != "hubert":
            raise CheckpointError(f"{config_file}: model_type is {meta.get('model_type')!r}, expected 'hubert'")
        transformers = _import_transformers()
        try:
            config = transformers.HubertConfig.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"{config_file}: not a valid HuBERT config ({e})") from None
        num_layers = int(config.num_hidden_layers)
        if not 1 <= layer <= num_layers:
            raise ConfigError(f"layer {layer}: {directory} has transformer layers 1..{num_layers}")
        require_safetensors(directory, "a HuBERT model")
        try:
            model, info = transformers.HubertModel.from_pretrained(str(directory), config=config, use_safetensors=True,
                                                                   local_files_only=True, output_loading_info=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{directory}: cannot load the HuBERT model ({e})") from None
        missing = [k for k in info.get("missing_keys", ()) if "masked_spec_embed" not in k]  # training-only
        if missing:
            raise CheckpointError(f"{directory}: the weights lack {len(missing)} tensor(s) of a HuBERT model "
                                  f"(e.g. {missing[:3]}); they would be random")
        cfg = model.config
        if not cfg.do_stable_layer_norm:
            # Post-norm encoder: hidden_states[layer] is the raw output of layer `layer`, so the
            # layers above it are never needed. (Pre-norm: keep them; the versions differ on where
            # the final norm lands.)
            model.encoder.layers = model.encoder.layers[:layer]
        self.model = model.float().eval().to(device)
        self.device = torch.device(device)
        self.layer = layer
        self.directory = directory
        self.max_batch_samples = max_batch_samples
        self._kernels = tuple(int(k) for k in cfg.conv_kernel)
        self._strides = tuple(int(s) for s in cfg.conv_stride)
        self._dim = int(cfg.hidden_size)
        self._num_layers = num_layers
        if normalize is None:
            pre = directory / "preprocessor_config.json"
            normalize = bool(json.loads(pre.read_text()).get("do_normalize", False)) if pre.is_file() else False
        self.normalize = normalize

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / math.prod(self._strides)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def pads_safely(self) -> bool:
        """Whether a padded batch gives the same features as one utterance at a time.

        Group-norm feature encoders (HuBERT-base, mHuBERT) normalise each channel over the
        whole utterance, so padding changes every frame: those run unpadded, one by one.
        A layer-norm encoder normalises each frame on its own and the attention mask hides the
        padding; a batch-norm positional convolution would turn the zeroed padding into non-zero
        input, so it runs one by one too.
        """
        cfg = self.model.config
        return cfg.feat_extract_norm == "layer" and not getattr(cfg, "conv_pos_batch_norm", False)

    def num_frames(self, num_samples: int) -> int:
        n = num_samples
        for k, s in zip(self._kernels, self._strides):  # each conv: no padding
            n = (n - k) // s + 1
            if n < 1:
                return 0
        return n

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layer": self.layer, "num_layers": self._num_layers, "normalize": self.normalize}

    def _prepare(self, wave: np.ndarray) -> np.ndarray:
        if self.normalize:  # per utterance, as transformers' Wav2Vec2FeatureExtractor(do_normalize=True)
            wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        return wave.astype(np.float32, copy=False)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        out = self.model(x.to(self.device), attention_mask=None if attention_mask is None
                         else attention_mask.to(self.device), output_hidden_states=True)
        return out.hidden_states[self.layer].float().cpu()  # (B, frames, dim)

    def _extract(self, wave: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(self._prepare(wave))[None]  # (1, samples)
        return self._run(x, None)[0].numpy()

    def batch(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        waves = [self.check_wave(w, f"waveform {i} of the batch") for i, w in enumerate(waves)]
        if not self.pads_safely or len(waves) < 2:
            return [self._extract(w) for w in waves]
        out: list[np.ndarray | None] = [None] * len(waves)
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))  # similar lengths share a batch
        start = 0
        while start < len(order):
            end = start + 1  # grow while the padded batch stays under max_batch_samples
            while end < len(order) and (end - start + 1) * len(waves[order[end]]) <= self.max_batch_samples:
                end += 1
            group = order[start:end]
            longest = len(waves[group[-1]])
            x = torch.zeros(len(group), longest)  # (B, samples), right-padded with zeros
            mask = torch.zeros(len(group), longest, dtype=torch.long)
            for row, i in enumerate(group):
                x[row, :len(waves[i])] = torch.from_numpy(self._prepare(waves[i]))
                mask[row, :len(waves[i])] = 1
            hidden = self._run(x, mask)  # (B, frames, dim)
            for row, i in enumerate(group):
                out[i] = hidden[row, :self.num_frames(len(waves[i]))].numpy()
            start = end
        return out


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE, fmin: float = 20.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular filters equally spaced on the mel scale (HTK formula): (n_fft // 2 + 1, n_mels) float32."""
    fmax = sample_rate / 2 if fmax is None else fmax

    def hz_to_mel(f):
        return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)

    def mel_to_hz(m):
        return 700.0 * np.expm1(np.asarray(m, dtype=np.float64) / 1127.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (n_mels + 2,) Hz
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft  # (F,) Hz
    rising = (bins[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])  # (F, n_mels)
    falling = (edges[None, 2:] - bins[:, None]) / (edges[2:] - edges[1:-1])
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


class LogMelFeatures(FeatureExtractor):
    """Log mel filterbank energies: GSLM's weights-free "LogMel" baseline.

    Frames of ``max(25 ms, hop)`` with a Hann window, one every ``16000 / frame_rate`` samples
    (no padding: a frame never reaches past the audio), power spectrum, ``n_mels`` mel filters
    from ``fmin`` to 8 kHz, natural log with a floor. At 50 Hz the frame count equals HuBERT-base's.
    """

    def __init__(self, n_mels: int = 80, frame_rate: float = 50.0, fmin: float = 20.0, log_floor: float = 1e-6):
        hop = SAMPLE_RATE / frame_rate if frame_rate > 0 else 0
        if frame_rate <= 0 or hop != int(hop):
            raise ConfigError(f"LogMel frame_rate {frame_rate:g} Hz: the hop {SAMPLE_RATE} / frame_rate must be a "
                              "whole number of samples (e.g. 100, 50 or 25 Hz)")
        if n_mels < 1:
            raise ConfigError(f"LogMel n_mels {n_mels}: must be positive")
        self.hop = int(hop)
        self.win = max(400, self.hop)  # 25 ms, or the hop if longer, so that no sample is skipped
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.n_mels = n_mels
        self.log_floor = log_floor
        self._frame_rate = float(frame_rate)
        self.window = torch.hann_window(self.win, periodic=False)  # (win,)
        self.filters = torch.from_numpy(mel_filterbank(n_mels, self.n_fft, SAMPLE_RATE, fmin))  # (F, n_mels)

    @property
    def frame_rate(self) -> float:
        return self._frame_rate

    @property
    def dim(self) -> int:
        return self.n_mels

    def num_frames(self, num_samples: int) -> int:
        return max(0, (num_samples - self.win) // self.hop + 1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "win": self.win, "n_fft": self.n_fft}

    @torch.inference_mode()
    def _extract(self, wave: np.ndarray) -> np.ndarray:
        frames = torch.from_numpy(wave).unfold(0, self.win, self.hop) * self.window  # (T, win)
        power = torch.fft.rfft(frames, n=self.n_fft).abs().square()  # (T, F)
        return torch.log(power @ self.filters + self.log_floor).numpy()  # (T, n_mels)


def make_features(spec: str, layer: int = 11, device: str = "cpu") -> FeatureExtractor:
    """``hubert:DIR`` (layer ``layer`` of a local HuBERT directory) or ``logmel[:FRAME_RATE]``."""
    kind, _, arg = spec.partition(":")
    if kind == "hubert" and arg:
        return HubertFeatures(arg, layer=layer, device=device)
    if kind == "logmel":
        try:
            return LogMelFeatures(frame_rate=float(arg) if arg else 50.0)
        except ValueError:
            pass
    raise ConfigError(f"features {spec!r}: expected 'hubert:DIR' (a local Hugging Face HuBERT directory) "
                      "or 'logmel' / 'logmel:FRAME_RATE' (e.g. logmel:25)")


# ---------------------------------------------------------------------------------------------
# K-means units
# ---------------------------------------------------------------------------------------------


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
# The tokenizer
# ---------------------------------------------------------------------------------------------


class SpeechTokenizer:
    """Features + k-means: 16 kHz waveforms -> speech units, collapsed with durations."""

    def __init__(self, features: FeatureExtractor, quantizer: KMeansQuantizer):
        if features.dim != quantizer.dim:
            raise ConfigError(f"{quantizer.source}: centroids are {quantizer.dim}-dimensional but the "
                              f"{type(features).__name__} features are {features.dim}-dimensional")
        self.features = features
        self.quantizer = quantizer

    @property
    def frame_rate(self) -> float:
        return self.features.frame_rate

    def describe(self) -> dict[str, Any]:
        return {"features": self.features.describe(), "num_units": self.quantizer.num_units,
                "centroids_sha256": self.quantizer.fingerprint()}

    def encode(self, wave: np.ndarray) -> np.ndarray:
        """(samples,) 16 kHz -> one unit per frame, (frames,) int64 (not collapsed)."""
        return self.quantizer(self.features(wave))

    def encode_batch(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [self.quantizer(f) for f in self.features.batch(waves)]

    def collapsed(self, units: np.ndarray) -> dict[str, Any]:
        """{"units": (N,) collapsed units, "durations": (N,) frames per unit, "frame_rate": Hz}."""
        collapsed, durations = collapse(units)
        return {"units": collapsed, "durations": durations, "frame_rate": self.frame_rate}

    def encode_file(self, path: str | Path, resample: bool = True) -> dict[str, Any]:
        """An audio file -> {"units", "durations", "frame_rate"} (units collapsed)."""
        wave = load_audio(path, resample_to_rate=resample)
        return self.collapsed(self.encode(self.features.check_wave(wave, str(path))))


def load_speech_tokenizer(features: str, kmeans: str | Path, layer: int = 11, device: str = "cpu") -> SpeechTokenizer:
    """A tokenizer from a features spec (``hubert:DIR`` / ``logmel[:RATE]``) and a centroid file."""
    return SpeechTokenizer(make_features(features, layer=layer, device=device), KMeansQuantizer.load(kmeans))


# ---------------------------------------------------------------------------------------------
# Manifests -> shards
# ---------------------------------------------------------------------------------------------

SHARD_NAME = "shard-{:05d}.jsonl"
RUN_FILE = "tokenize.json"
MERGED_NAME = "units.jsonl"  # all shards in one speech manifest, the input of `smoltolk prepare`


@dataclass
class AudioRecord:
    where: str  # "manifest.jsonl:12 (id 'x')", for errors
    record: SpeechRecord
    audio: Path  # resolved against the manifest's folder


def read_audio_manifest(manifest: str | Path) -> list[AudioRecord]:
    """The records of a speech manifest (JSONL or Parquet) that all name an audio file; ids unique."""
    manifest = Path(manifest)
    records, seen = [], {}
    for where, raw in _rows(manifest):
        rec = parse_speech_record(raw, where)
        here = f"{where} (id {rec.id!r})"
        if rec.id in seen:
            raise InputError(f"{here}: duplicate id (first at {seen[rec.id]})")
        if rec.audio is None:
            raise InputError(f"{here}: no 'audio' path to tokenize")
        seen[rec.id] = where
        audio = Path(rec.audio)
        records.append(AudioRecord(here, rec, audio if audio.is_absolute() else manifest.parent / audio))
    if not records:
        raise InputError(f"{manifest}: the manifest holds no records")
    return records


def _in_context(where: str, e: SmolTolkError) -> SmolTolkError:
    return type(e)(f"{where}: {e}")


def _load_record(r: AudioRecord, features: FeatureExtractor, resample: bool) -> np.ndarray:
    try:
        return features.check_wave(load_audio(r.audio, resample_to_rate=resample), str(r.audio))
    except SmolTolkError as e:
        raise _in_context(r.where, e) from None


def _encode_records(records: list[AudioRecord], tokenizer: SpeechTokenizer, batch_size: int, resample: bool,
                    bar) -> list[dict[str, Any]]:
    """One output row per record, in manifest order; batches group utterances of similar length."""
    seconds = []
    for r in records:
        try:
            n, rate = audio_info(r.audio)
        except SmolTolkError as e:
            raise _in_context(r.where, e) from None
        seconds.append(n / rate)
    order = sorted(range(len(records)), key=lambda i: seconds[i])
    rows: list[dict[str, Any] | None] = [None] * len(records)
    for start in range(0, len(order), batch_size):
        group = order[start:start + batch_size]
        waves = [_load_record(records[i], tokenizer.features, resample) for i in group]
        try:
            units = tokenizer.encode_batch(waves)
        except SmolTolkError as e:
            raise _in_context(", ".join(records[i].where for i in group), e) from None
        for i, u in zip(group, units):
            out = tokenizer.collapsed(u)
            rec = records[i].record
            row = {"id": rec.id, "units": out["units"].tolist(), "durations": out["durations"].tolist(),
                   "frame_rate": out["frame_rate"]}
            if rec.text is not None:
                row["text"] = rec.text
            if rec.words is not None:
                row["words"] = [asdict(w) for w in rec.words]
            rows[i] = row
        bar.update(len(group))
    return rows


def _write_shard(path: Path, rows: list[dict[str, Any]]) -> None:
    """Temp name + rename: a shard file under its final name is always complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _start_run(out_dir: Path, run: dict[str, Any]) -> None:
    """Record what the shards in ``out_dir`` are made of; refuse to resume a different run there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        try:
            before = json.loads(run_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{run_file}: not valid JSON; delete the output folder to start over") from None
        changed = sorted(k for k in set(run) | set(before) if run.get(k) != before.get(k))
        if changed:
            raise InputError(f"{run_file}: the shards in {out_dir} come from another run ({', '.join(changed)} "
                             "changed); use a new output folder, or delete this one to start over")
        return
    if any(out_dir.glob("shard-*.jsonl")):
        raise InputError(f"{out_dir}: holds shard files but no {RUN_FILE}; use a new output folder")
    tmp = out_dir / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(run, indent=2) + "\n")
    os.replace(tmp, run_file)


def tokenize_manifest(manifest: str | Path, out_dir: str | Path, tokenizer: SpeechTokenizer, *,
                      shard_size: int = 1000, batch_size: int = 8, resample: bool = True,
                      progress: bool = True) -> dict[str, Any]:
    """Tokenize every utterance of a manifest into JSONL shards; resumable.

    Input records: ``{"id": ..., "audio": path}`` (relative paths resolved against the
    manifest's folder; other speech-record fields allowed, see ``smoltolk.data.manifest``).
    Output: ``out_dir/shard-00000.jsonl`` holding records ``shard_size * i ...`` in manifest
    order, one line each: ``{"id", "units", "durations", "frame_rate"}`` (units collapsed,
    durations in frames) plus ``text`` / ``words`` when the input had them; ``tokenize.json``
    describing the run; and, once every shard is done, ``units.jsonl``: all rows in one speech
    manifest (``smoltolk.data.manifest``). A re-run skips finished shards; it refuses if the
    manifest, shard size or tokenizer changed. Returns a summary (shards computed and skipped).
    """
    from tqdm.auto import tqdm

    if shard_size < 1 or batch_size < 1:
        raise ConfigError(f"shard_size {shard_size} and batch_size {batch_size} must be positive")
    manifest, out_dir = Path(manifest), Path(out_dir)
    records = read_audio_manifest(manifest)
    run = {"manifest_sha256": file_sha256(manifest), "records": len(records), "shard_size": shard_size,
           "tokenizer": tokenizer.describe()}
    _start_run(out_dir, run)
    for stale in out_dir.glob(".shard-*.jsonl.tmp"):  # left by a killed run
        stale.unlink()
    n_shards = math.ceil(len(records) / shard_size)
    todo = [i for i in range(n_shards) if not (out_dir / SHARD_NAME.format(i)).is_file()]
    done = len(records) - sum(len(records[i * shard_size:(i + 1) * shard_size]) for i in todo)
    with tqdm(total=len(records), initial=done, unit="utt", desc="tokenize", disable=not progress) as bar:
        for i in todo:
            rows = _encode_records(records[i * shard_size:(i + 1) * shard_size], tokenizer, batch_size, resample, bar)
            _write_shard(out_dir / SHARD_NAME.format(i), rows)
    merged = out_dir / MERGED_NAME
    if todo or not merged.is_file():
        _write_shard(merged, read_shards(out_dir))
    return {"out": str(out_dir), "utterances": len(records), "shards": n_shards, "computed": todo,
            "skipped": n_shards - len(todo), "frame_rate": tokenizer.frame_rate, "manifest": str(merged)}


def read_shards(out_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of a finished ``tokenize_manifest`` output folder, in manifest order."""
    out_dir = Path(out_dir)
    run_file = out_dir / RUN_FILE
    if not run_file.is_file():
        raise InputError(f"{out_dir}: no {RUN_FILE}; not a tokenize_manifest output folder")
    run = json.loads(run_file.read_text())
    n_shards = math.ceil(run["records"] / run["shard_size"])
    rows = []
    for i in range(n_shards):
        path = out_dir / SHARD_NAME.format(i)
        if not path.is_file():
            raise InputError(f"{path}: missing; the run is unfinished (run tokenize again to resume)")
        rows.extend(json.loads(line) for line in read_lines(path) if line.strip())
    return rows


def manifest_features(manifest: str | Path, features: FeatureExtractor, *, seed: int = 0, batch_size: int = 8,
                      resample: bool = True, progress: bool = True) -> Iterator[np.ndarray]:
    """Features (frames, dim) of each utterance of a manifest, in a seeded random order (for ``fit_kmeans``)."""
    from tqdm.auto import tqdm

    records = read_audio_manifest(manifest)
    order = np.random.default_rng(seed).permutation(len(records))
    with tqdm(total=len(records), unit="utt", desc="features", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            group = [records[i] for i in order[start:start + batch_size]]
            waves = [_load_record(r, features, resample) for r in group]
            yield from features.batch(waves)
            bar.update(len(group))
