"""Speech-unit utilities: run-length collapse keeping durations, and word times -> unit indices."""

from __future__ import annotations

import numpy as np

from smoltolk.errors import InputError


def collapse(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse repeated consecutive units. Returns (collapsed units (N,), durations in frames (N,))."""
    units = np.asarray(units)
    if units.ndim != 1:
        raise InputError(f"units: expected a 1-D array, got shape {units.shape}")
    if units.size == 0:
        return units.copy(), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, units[1:] != units[:-1]])
    durations = np.diff(np.r_[starts, units.size])
    return units[starts], durations


def word_ends_to_collapsed(word_ends_s: np.ndarray, durations: np.ndarray, frame_rate: float,
                           where: str = "utterance") -> np.ndarray:
    """Map word end times (seconds) onto exclusive end indices into the collapsed units.

    A collapsed unit belongs to the word in which its first frame starts, so word ``i`` spans
    collapsed units ``[end[i-1], end[i])`` (the paper's "units from the previous word's end to
    this word's end"). Times must be non-decreasing and within the audio.
    """
    word_ends_s = np.asarray(word_ends_s, dtype=np.float64)
    n_frames = int(np.sum(durations))
    audio_s = n_frames / frame_rate
    if word_ends_s.size and np.any(np.diff(word_ends_s) < 0):
        i = int(np.flatnonzero(np.diff(word_ends_s) < 0)[0]) + 1
        raise InputError(f"{where}: word {i} ends at {word_ends_s[i]:.3f} s, before word {i - 1} "
                         f"({word_ends_s[i - 1]:.3f} s); word times must be non-decreasing")
    tolerance = 1.0 / frame_rate  # alignments may overshoot the last frame by less than a frame
    if word_ends_s.size and (word_ends_s[-1] > audio_s + tolerance or word_ends_s[0] < 0):
        bad = int(np.argmax(word_ends_s)) if word_ends_s[-1] > audio_s + tolerance else 0
        raise InputError(f"{where}: word {bad} ends at {word_ends_s[bad]:.3f} s, outside the audio "
                         f"(0 to {audio_s:.3f} s, {n_frames} frames at {frame_rate:g} Hz)")
    unit_start_frame = np.r_[0, np.cumsum(durations)[:-1]]  # (N,)
    end_frame = np.rint(word_ends_s * frame_rate)
    return np.searchsorted(unit_start_frame, end_frame, side="left").astype(np.int64)
