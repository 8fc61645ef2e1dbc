"""Unit vocoders: speech units -> waveform, and WAV files.

smoltolk ships no vocoder weights. :class:`UnitVocoder` is the interface generation output goes
through; point :func:`load_vocoder` at a local model of your own (for example a unit HiFi-GAN
exported to one file), or implement the two-member protocol in Python.

Files :func:`load_vocoder` reads:

* ``*.pt2``: a ``torch.export`` program (``torch.export.save``);
* anything else: a TorchScript module (``torch.jit.save``; deprecated by PyTorch but widespread).

Either is called as ``module(units)`` with ``units`` a LongTensor (T,) and must return a float
waveform (S,) or (1, S) in [-1, 1] (``.pt2`` programs run on the CPU). The sample rate comes from
the ``sample_rate`` argument or, for TorchScript, the module's ``sample_rate`` attribute.
**Load only files you trust**: both formats carry code and pickled data that run when loaded.
"""

from __future__ import annotations

import os
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from smoltolk.errors import CheckpointError, InputError


@runtime_checkable
class UnitVocoder(Protocol):
    """Anything that turns speech units (ids 0..num_units-1) into a mono waveform."""

    def synthesize(self, units: Sequence[int]) -> tuple[np.ndarray, int]:
        """(waveform (S,) float32 in [-1, 1], sample rate in Hz)."""
        ...


class ModuleVocoder:
    """A :class:`UnitVocoder` around a callable torch module: ``module(LongTensor (T,)) -> (S,) or (1, S)``."""

    def __init__(self, module: torch.nn.Module, sample_rate: int, device: str | torch.device = "cpu",
                 where: str = "vocoder") -> None:
        if sample_rate <= 0:
            raise InputError(f"{where}: sample rate must be positive, got {sample_rate}")
        self.module, self.sample_rate, self.device, self.where = module, int(sample_rate), torch.device(device), where

    def synthesize(self, units: Sequence[int]) -> tuple[np.ndarray, int]:
        units = [int(u) for u in units]
        if not units:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        with torch.inference_mode():
            wav = self.module(torch.tensor(units, dtype=torch.long, device=self.device))
        if not isinstance(wav, torch.Tensor):
            raise CheckpointError(f"{self.where}: returned {type(wav).__name__}, expected a waveform tensor")
        if wav.dim() == 2 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.dim() != 1:
            raise CheckpointError(f"{self.where}: returned shape {tuple(wav.shape)}, expected (S,) or (1, S)")
        return wav.float().cpu().numpy(), self.sample_rate


OVERLAP = 4  # synthesis frames per analysis frame (Griffin-Lim needs overlapping windows)


class CentroidVocoder:
    """Log-mel k-means units -> audio with no vocoder weights (a :class:`UnitVocoder`).

    Each unit becomes its centroid, a log-mel frame, held for ``frames_per_unit`` frames (generated
    units carry no durations; the mini-world's last 1-3 frames); mel energies go back to a linear
    power spectrum through the filterbank's pseudo-inverse, and Griffin-Lim finds a phase. Intelligible
    at best for clear units; it shows what the units encode, not what a trained vocoder would make.
    """

    def __init__(self, centroids: np.ndarray, features, frames_per_unit: int = 2, iterations: int = 32,
                 seed: int = 0) -> None:
        from smoltolk.data.features import LogMelFeatures

        if not isinstance(features, LogMelFeatures):
            raise InputError("the centroid vocoder inverts log-mel units only (features logmel[:RATE]); "
                             "HuBERT units need a trained unit vocoder (--vocoder)")
        centroids = np.asarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or centroids.shape[1] != features.n_mels:
            raise InputError(f"centroids of shape {centroids.shape}: expected (K, {features.n_mels}) log-mel frames")
        if frames_per_unit < 1 or iterations < 1:
            raise InputError("frames_per_unit and iterations must be positive")
        self.centroids, self.features = centroids, features
        self.frames_per_unit, self.iterations, self.seed = frames_per_unit, iterations, seed
        self.sample_rate = 16000
        self.inverse = torch.linalg.pinv(features.filters.double()).float()  # (n_mels, F)

    def synthesize(self, units: Sequence[int]) -> tuple[np.ndarray, int]:
        units = [int(u) for u in units if 0 <= int(u) < len(self.centroids)]  # EOS / PAD / switch: no sound
        if not units:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        f = self.features
        hop = f.hop // OVERLAP  # synthesis frames overlap (the analysis hop may equal its window at 25 Hz)
        repeat = self.frames_per_unit * OVERLAP
        log_mel = torch.from_numpy(self.centroids[units]).repeat_interleave(repeat, 0)  # (T, n_mels)
        mel_power = (log_mel.exp() - f.log_floor).clamp(min=0)
        magnitude = (mel_power @ self.inverse).clamp(min=0).sqrt().T.contiguous()  # (F, T)
        window = torch.hann_window(f.win)
        length = (magnitude.shape[1] - 1) * hop  # so that the STFT of the wave has T frames again
        stft = {"n_fft": f.n_fft, "hop_length": hop, "win_length": f.win, "window": window, "center": True}
        gen = torch.Generator().manual_seed(self.seed)
        phase = torch.exp(2j * torch.pi * torch.rand(magnitude.shape, generator=gen))
        for _ in range(self.iterations):
            wave = torch.istft(magnitude * phase, length=length, **stft)
            spec = torch.stft(wave, return_complex=True, **stft)
            phase = spec / spec.abs().clamp(min=1e-8)
        wave = torch.istft(magnitude * phase, length=length, **stft)
        peak = float(wave.abs().max())
        return (wave / peak * 0.9 if peak > 0 else wave).numpy().astype(np.float32), self.sample_rate


def load_vocoder(path: str | Path, sample_rate: int | None = None, device: str | torch.device = "cpu") -> UnitVocoder:
    """A :class:`UnitVocoder` from a local, trusted TorchScript (``torch.jit.save``) or ``torch.export``
    (``.pt2``) file; see the module doc for the calling convention."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected a TorchScript or torch.export vocoder file)")
    try:
        if path.suffix == ".pt2":
            module = torch.export.load(str(path)).module()
        else:
            import warnings

            with warnings.catch_warnings():  # the user chose the format; PyTorch's deprecation notice is noise
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.14 words it so
                module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # torch raises RuntimeError, ValueError, zipfile errors, ...
        raise CheckpointError(f"{path}: cannot load a vocoder ({type(e).__name__}: {e})") from None
    if sample_rate is None:
        sample_rate = getattr(module, "sample_rate", None)
    if not isinstance(sample_rate, int):
        raise CheckpointError(f"{path}: no sample rate (give one, or store an int 'sample_rate' on the module)")
    return ModuleVocoder(module, sample_rate, device if path.suffix != ".pt2" else "cpu", str(path))


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write a mono waveform (S,) (float in [-1, 1], clipped; or int16) as 16-bit PCM WAV, atomically."""
    path = Path(path)
    wav = np.asarray(waveform)
    if wav.ndim == 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.ndim != 1:
        raise InputError(f"{path}: expected a mono waveform (S,), got shape {wav.shape}")
    if wav.dtype != np.int16:
        wav = np.round(np.clip(wav.astype(np.float64), -1.0, 1.0) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        with wave.open(tmp, "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(int(sample_rate))
            f.writeframes(wav.astype("<i2").tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
