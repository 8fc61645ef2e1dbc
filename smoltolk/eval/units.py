"""Speech units of benchmark audio: pre-computed files, or the speech tokenizer run on the wavs.

Benchmarks name their audio by file stem (``{stem}.wav``); the units of a stem come from, in order:

1. ``units`` given for the task (``tasks.<name>.units``):
   - a JSONL speech manifest such as the ``units.jsonl`` that ``smoltolk tokenize`` writes
     (``{"id": "<wav stem>", "units": [...], "durations": [...]}``; rows without
     ``durations`` hold frame-level units and are collapsed), or a folder holding one;
   - a folder of ``<stem>.npy`` (a 1-D integer array) or ``<stem>.txt`` (ids separated by
     spaces) files, frame-level or collapsed: repeats are collapsed either way;
2. otherwise the speech tokenizer (``--speech-tokenizer FEATURES CENTROIDS``) run over the
   task's wavs with :func:`smoltolk.data.speech_tokenizer.tokenize_manifest`; the output
   (``<out>/units/<task>/units.jsonl``) is resumable and can be given as ``units`` next time.

Units are collapsed (runs of one unit become one), as the model was trained.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from smoltolk.data.manifest import read_speech_manifest
from smoltolk.data.units import collapse
from smoltolk.errors import ConfigError, InputError
from smoltolk.files import read_text


class UnitStore:
    """Units (collapsed) by key (a wav stem or a manifest id), with the source named in errors."""

    def __init__(self, units: dict[str, np.ndarray], source: str) -> None:
        self.units, self.source = units, source

    def __contains__(self, key: str) -> bool:
        return key in self.units

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.units:
            raise InputError(f"{self.source}: no units for {key!r} (expected an entry keyed by the wav's stem)")
        return self.units[key]

    def __len__(self) -> int:
        return len(self.units)


def _collapsed(values: Iterable[int]) -> np.ndarray:
    return collapse(np.asarray(list(values), dtype=np.int64))[0]


def read_units_manifest(path: Path) -> dict[str, np.ndarray]:
    """id -> collapsed units of a speech manifest whose records carry ``units``."""
    out = {}
    for rec in read_speech_manifest(path):
        if rec.units is None:
            raise InputError(f"{path}: record {rec.id!r} has no 'units'")
        units = np.asarray(rec.units, dtype=np.int64)
        out[rec.id] = units if rec.durations is not None else collapse(units)[0]
    return out


def _read_unit_file(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"{path}: not a readable .npy array ({e})") from None
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"{path}: expected a 1-D integer array of units, got {arr.dtype} {arr.shape}")
        values = arr.tolist()
    else:
        text = read_text(path)
        try:
            values = [int(v) for v in text.split()]
        except ValueError:
            raise InputError(f"{path}: expected unit ids separated by spaces") from None
    if not values:
        raise InputError(f"{path}: no units")
    return _collapsed(values)


def load_unit_source(source: str | Path, stems: Iterable[str]) -> UnitStore:
    """Units for ``stems`` from a units JSONL, a folder holding ``units.jsonl``, or ``<stem>.npy/.txt`` files."""
    source = Path(source)
    stems = list(stems)
    if source.is_dir() and (source / "units.jsonl").is_file():
        source = source / "units.jsonl"
    if source.is_file():
        units = read_units_manifest(source)
        missing = [s for s in stems if s not in units]
        if missing:
            raise InputError(f"{source}: no units for {len(missing)} of {len(stems)} files, e.g. {missing[:3]} "
                             "(rows must be keyed by the wav's stem)")
        return UnitStore(units, str(source))
    if not source.is_dir():
        raise InputError(f"{source}: no such units file or folder")
    units = {}
    for stem in stems:
        path = next((p for p in (source / f"{stem}.npy", source / f"{stem}.txt") if p.is_file()), None)
        if path is None:
            raise InputError(f"{source}: no {stem}.npy or {stem}.txt (units of {stem}.wav)")
        units[stem] = _read_unit_file(path)
    return UnitStore(units, str(source))


def tokenize_audio(audio: dict[str, Path], out_dir: Path, tokenizer, progress: bool = True) -> UnitStore:
    """Run the speech tokenizer over ``{key: wav path}`` into ``out_dir`` (resumable) and read the units."""
    from smoltolk.data.speech_tokenizer import MERGED_NAME, tokenize_manifest

    if tokenizer is None:
        raise ConfigError("speech units are needed: give --speech-tokenizer FEATURES CENTROIDS, or pre-computed "
                          "units with tasks.<name>.units=FILE_OR_FOLDER")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "audio.jsonl"
    lines = [json.dumps({"id": key, "audio": str(Path(path).resolve())}) for key, path in sorted(audio.items())]
    text = "\n".join(lines) + "\n"
    if not manifest.is_file() or manifest.read_text() != text:
        manifest.write_text(text)
    tokenize_manifest(manifest, out_dir, tokenizer, progress=progress)
    return UnitStore(read_units_manifest(out_dir / MERGED_NAME), str(out_dir / MERGED_NAME))
