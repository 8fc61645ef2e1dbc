"""The speech tokenizer: 16 kHz audio -> frame features -> nearest k-means centroid -> speech units.

The paper tokenizes speech with mHuBERT-base at 25 Hz (layer 11 features, 500 k-means
centroids) and collapses repeated units, keeping their durations. The pieces:

- frame features (``smoltolk.data.features``: HuBERT, log-mel) and k-means units
  (``smoltolk.data.kmeans``), both importable from here too;
- ``SpeechTokenizer``: both together, plus run-length collapse with durations;
- ``tokenize_manifest``: a JSONL manifest of utterances -> resumable JSONL shards of units.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smoltolk.data.audio import audio_info, load_audio
from smoltolk.data.features import (  # noqa: F401  (re-exported: the tokenizer's public surface)
    FeatureExtractor,
    HubertFeatures,
    LogMelFeatures,
    make_features,
    mel_filterbank,
)
from smoltolk.data.kmeans import (  # noqa: F401
    KMeansQuantizer,
    UntrustedPickleWarning,
    convert_joblib_kmeans,
    fit_kmeans,
    load_centroids,
    save_centroids,
)
from smoltolk.data.manifest import SpeechRecord, _rows, parse_speech_record
from smoltolk.data.units import collapse
from smoltolk.errors import ConfigError, InputError, SmolTolkError
from smoltolk.files import file_sha256, read_lines

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
    from smoltolk.progress import progress_bar

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
    with progress_bar(total=len(records), initial=done, unit="utt", desc="tokenize", disable=not progress) as bar:
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
    from smoltolk.progress import progress_bar

    records = read_audio_manifest(manifest)
    order = np.random.default_rng(seed).permutation(len(records))
    with progress_bar(total=len(records), unit="utt", desc="features", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            group = [records[i] for i in order[start:start + batch_size]]
            waves = [_load_record(r, features, resample) for r in group]
            yield from features.batch(waves)
            bar.update(len(group))
