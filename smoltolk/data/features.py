"""Frame features of 16 kHz audio, the first half of the speech tokenizer (``smoltolk.data.speech_tokenizer``).

- ``FeatureExtractor``: a 16 kHz waveform (samples,) -> frame features (frames, dim) float32.
- ``HubertFeatures`` reads a local Hugging Face HuBERT directory (any frame rate; 50 Hz for
  HuBERT-base, 25 Hz for mHuBERT-25Hz); ``LogMelFeatures`` is the weights-free log-mel filterbank
  baseline of GSLM, so the whole audio path runs without a checkpoint.
- ``make_features``: either, from a spec string (``hubert:DIR``, ``logmel[:RATE]``).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoltolk.data.audio import SAMPLE_RATE
from smoltolk.errors import CheckpointError, ConfigError, InputError
from smoltolk.files import require_safetensors


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
