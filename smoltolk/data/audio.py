"""Audio files in, 16 kHz mono float32 waveforms out (WAV, FLAC and whatever else libsndfile reads).

Every error names the file and what was expected: a missing file, a file libsndfile cannot
decode, a file without samples, non-finite samples, or a sample rate other than the target
when resampling is disabled.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from smoltolk.errors import InputError

SAMPLE_RATE = 16_000  # every speech encoder here (HuBERT, mHuBERT, LogMel) expects 16 kHz input


def _soundfile():
    import soundfile

    return soundfile


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: audio file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file (expected a WAV or FLAC audio file)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the audio file is empty (0 bytes)")
    if not os.access(path, os.R_OK):  # libsndfile would say "File does not exist"
        raise InputError(f"{path}: not readable (permission denied)")


def _unreadable(path: Path, e: Exception) -> InputError:
    reason = getattr(e, "error_string", None) or str(e)  # soundfile.LibsndfileError: the bare libsndfile reason
    return InputError(f"{path}: cannot read audio ({reason}); expected a WAV or FLAC file")


def audio_info(path: str | Path) -> tuple[int, int]:
    """(number of samples per channel, sample rate) from the file header, without decoding the audio."""
    path = Path(path)
    _check_exists(path)
    sf = _soundfile()
    try:
        info = sf.info(str(path))
    except (RuntimeError, ValueError, TypeError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise _unreadable(path, e) from None
    return int(info.frames), int(info.samplerate)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The file's samples mixed down to mono, at the file's own rate: ((samples,) float32, sample rate)."""
    path = Path(path)
    _check_exists(path)
    sf = _soundfile()
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    except (RuntimeError, ValueError, TypeError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise _unreadable(path, e) from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: the audio file holds no samples")
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise InputError(f"{path}: the audio holds NaN or infinite samples")
    return np.ascontiguousarray(wave), int(rate)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D waveform from ``orig_rate`` to ``target_rate`` Hz with a polyphase filter.

    The length becomes ``ceil(len(wave) * target_rate / orig_rate)`` (scipy.signal.resample_poly).
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise InputError(f"sample rates must be positive, got {orig_rate} -> {target_rate} Hz")
    if orig_rate == target_rate:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(int(orig_rate), int(target_rate))
    return resample_poly(wave, target_rate // g, orig_rate // g).astype(np.float32, copy=False)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, resample_to_rate: bool = True) -> np.ndarray:
    """A file as a mono (samples,) float32 waveform at ``sample_rate`` Hz.

    Multi-channel audio is averaged to mono. A file at another rate is resampled from its stated
    rate, or rejected when ``resample_to_rate`` is False.
    """
    path = Path(path)
    wave, rate = read_audio(path)
    if rate != sample_rate:
        if not resample_to_rate:
            raise InputError(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz "
                             f"(resampling is disabled; resample the file or allow resampling)")
        wave = resample(wave, rate, sample_rate)
    return wave
