"""The mini-world read aloud: espeak-ng speaks world stories to WAV with exact word times, and the
part-2 speech tokenizer (log-mel features + k-means) turns the audio into units.

This is the audio route end to end on a machine without any speech model: the stories come from
the world's speech corpus (``speech.jsonl``), and the output is a unit manifest like any other,
ready for ``smoltolk prepare``. Only stories on heard topics are read: the corpus's carrier
utterances of held-out words are left out, since a subset would bring them closer together than
the split allows (:func:`smoltolk.world.world.split_violations`), so no held-out word is spoken.

Each distinct (word, voice) pair is synthesised once with espeak-ng (one subprocess call, no
shell), trimmed of its leading and trailing silence and resampled to 16 kHz; an utterance is its
words' waveforms joined by short seeded pauses, so every word's start and end is known to the
sample. Layout under ``out_dir``::

    wavs/{id}.wav        16 kHz mono 16-bit PCM, one per story
    audio.jsonl          SpeechRecords (audio, text, words in seconds): the input of fit-kmeans / tokenize
    kmeans.npy           the k-means centroids fitted on these utterances' features
    units/               ``tokenize_manifest`` output; ``units/units.jsonl`` is the unit manifest
    audio.json           what came through: utterances, hours, units, k-means fit statistics
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smoltolk.data.audio import SAMPLE_RATE, audio_info, read_audio, resample
from smoltolk.data.manifest import SpeechRecord, Word, read_speech_manifest, write_manifest
from smoltolk.defaults import DEFAULT_NUM_UNITS
from smoltolk.errors import ConfigError, InputError

ESPEAK = "espeak-ng"
INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"
FEATURES = "logmel:25"  # the world's pseudo-speech and the paper's mHuBERT units are 25 Hz
MIN_FRAMES_PER_UNIT = 20  # k-means gets at most frames / 20 clusters, so each centroid sees enough frames
_WORD = re.compile(r"[a-z']+")


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker: voice (``-v``, with an optional ``+variant``), pitch (``-p``) and speed (``-s``)."""

    name: str
    pitch: int = 50  # 0..99
    speed: int = 160  # words per minute


VOICES = (Voice("en-us", 50, 165), Voice("en-us+f3", 60, 155), Voice("en-gb", 40, 175),
          Voice("en-gb-x-rp+f2", 55, 160))


def find_espeak() -> str:
    """The path of the espeak-ng program; a ConfigError saying how to install it when it is missing."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise ConfigError(f"the audio path needs the {ESPEAK} program, which is not on PATH; {INSTALL_HINT}")
    return path


def trim_silence(wave: np.ndarray, threshold: float = 1e-3, margin: int = 80) -> np.ndarray:
    """``wave`` without leading and trailing samples quieter than ``threshold`` (keeping ``margin`` samples)."""
    loud = np.flatnonzero(np.abs(wave) > threshold)
    if loud.size == 0:
        return wave[:0]
    return wave[max(0, loud[0] - margin):loud[-1] + 1 + margin]


class WordSynthesizer:
    """Single words -> trimmed 16 kHz mono float32 waveforms (samples,); each (word, voice) is spoken once."""

    def __init__(self, workdir: str | Path):
        self.exe = find_espeak()
        self.workdir = Path(workdir)
        self.cache: dict[tuple[str, Voice], np.ndarray] = {}

    def __call__(self, word: str, voice: Voice) -> np.ndarray:
        key = (word, voice)
        if key not in self.cache:
            self.cache[key] = self._speak(word, voice)
        return self.cache[key]

    def _speak(self, word: str, voice: Voice) -> np.ndarray:
        if not _WORD.fullmatch(word):
            raise InputError(f"{word!r}: espeak-ng speaks world words only (letters a-z and apostrophes)")
        path = self.workdir / "word.wav"
        cmd = [self.exe, "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.speed), "-z", "-w", str(path),
               word]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not path.is_file():
            raise InputError(f"{ESPEAK} failed on the word {word!r} with voice {voice.name!r} "
                             f"(exit {done.returncode}): {done.stderr.strip() or 'no output file'}")
        wave, rate = read_audio(path)
        wave = trim_silence(resample(wave, rate, SAMPLE_RATE))
        if wave.size == 0:
            raise InputError(f"{ESPEAK} produced only silence for the word {word!r} with voice {voice.name!r}")
        return wave


def speak_words(words: list[str], path: str | Path, voice: Voice = VOICES[0]) -> float:
    """Say ``words`` with espeak-ng into a 16 kHz WAV at ``path`` (atomically); returns its seconds."""
    from smoltolk.vocoder import write_wav

    if not words:
        raise InputError(f"{path}: nothing to say (no words)")
    with tempfile.TemporaryDirectory(prefix="smoltolk-espeak-") as tmp:
        synth = WordSynthesizer(tmp)
        gap = np.zeros(int(0.06 * SAMPLE_RATE), dtype=np.float32)
        wave = np.concatenate([x for w in words for x in (synth(w, voice), gap)])
    write_wav(path, wave, SAMPLE_RATE)
    return wave.size / SAMPLE_RATE


@dataclass
class Utterance:
    id: str  # "audio-" + the id of the world story it reads
    voice: Voice
    words: list[str]


def held_out_words(world_dir: str | Path) -> set[str]:
    """The words of the world's held-out topics, from its ``world.json``."""
    path = Path(world_dir) / "world.json"
    try:
        split = json.loads(path.read_text(encoding="utf-8"))["split"]
        return {w for ws in split["held_out_words"].values() for w in ws}
    except FileNotFoundError:
        raise InputError(f"{path}: not found; expected a world written by smoltolk.world.build_world") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: expected split.held_out_words (topic -> words), got an error: {e!r}") from None


def choose_stories(world_dir: str | Path, n: int, seed: int = 0, voices: tuple[Voice, ...] = VOICES
                   ) -> list[Utterance]:
    """``n`` stories of the world's speech corpus without held-out words (no carrier utterances),
    drawn by ``seed``, in corpus order; voices take turns."""
    manifest = Path(world_dir) / "speech.jsonl"
    held = held_out_words(world_dir)
    records = [r for r in read_speech_manifest(manifest) if held.isdisjoint((r.text or "").split())]
    if not 1 <= n <= len(records):
        raise ConfigError(f"audio stories {n}: must be between 1 and the {len(records)} stories of {manifest} "
                          "without held-out words")
    if not voices:
        raise ConfigError("audio voices: give at least one espeak-ng voice")
    chosen = np.sort(np.random.default_rng([seed, 3]).choice(len(records), size=n, replace=False))
    out = []
    for k, i in enumerate(chosen):
        rec = records[int(i)]
        words = (rec.text or "").split()
        bad = [w for w in words if not _WORD.fullmatch(w)]
        if not words or bad:
            raise InputError(f"{manifest} (id {rec.id!r}): expected a transcript of lowercase words, "
                             f"got {rec.text!r}")
        out.append(Utterance(f"audio-{rec.id}", voices[k % len(voices)], words))
    return out


def render(utt: Utterance, synth: WordSynthesizer, rng: np.random.Generator,
           pause: tuple[float, float] = (0.03, 0.09), edge: float = 0.1) -> tuple[np.ndarray, list[Word]]:
    """One utterance: (16 kHz waveform (samples,), word times). ``edge`` seconds of silence lead and trail;
    words are separated by pauses drawn uniformly from ``pause`` seconds."""
    pieces = [np.zeros(round(edge * SAMPLE_RATE), dtype=np.float32)]
    at = pieces[0].size  # samples so far
    words = []
    for i, w in enumerate(utt.words):
        if i:
            pieces.append(np.zeros(round(rng.uniform(*pause) * SAMPLE_RATE), dtype=np.float32))
            at += pieces[-1].size
        wave = synth(w, utt.voice)
        words.append(Word(w, at / SAMPLE_RATE, (at + wave.size) / SAMPLE_RATE))
        pieces.append(wave)
        at += wave.size
    pieces.append(np.zeros(round(edge * SAMPLE_RATE), dtype=np.float32))
    return np.concatenate(pieces), words


def speak_stories(utterances: list[Utterance], out_dir: str | Path, seed: int = 0, progress: bool = True) -> Path:
    """Write ``wavs/{id}.wav`` and the audio manifest ``audio.jsonl`` (audio, text, words) under ``out_dir``."""
    import soundfile as sf

    from smoltolk.progress import progress_bar

    out_dir = Path(out_dir)
    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)
    pairs = sorted({(w, u.voice) for u in utterances for w in u.words}, key=lambda p: (p[1].name, p[0]))
    records = []
    with tempfile.TemporaryDirectory(prefix="smoltolk-espeak-") as tmp:
        synth = WordSynthesizer(tmp)
        for word, voice in progress_bar(pairs, desc=f"{ESPEAK} words", unit="word", disable=not progress):
            synth(word, voice)
        for utt in progress_bar(utterances, desc="speak stories", unit="utt", disable=not progress):
            wave, words = render(utt, synth, np.random.default_rng([seed, 4, zlib.crc32(utt.id.encode())]))
            rel = f"wavs/{utt.id}.wav"
            sf.write(out_dir / rel, wave, SAMPLE_RATE, subtype="PCM_16")
            records.append(SpeechRecord(utt.id, audio=rel, text=" ".join(utt.words), words=words))
    return write_manifest(out_dir / "audio.jsonl", records)


def tokenize_audio(manifest: str | Path, out_dir: str | Path, num_units: int = DEFAULT_NUM_UNITS, seed: int = 0,
                   features: str = FEATURES, progress: bool = True) -> dict[str, Any]:
    """Fit k-means on the manifest's features and tokenize it (part 2's code); returns the fit statistics.

    The number of clusters is ``num_units``, or ``frames // MIN_FRAMES_PER_UNIT`` when there is too
    little audio for that many. The units land in ``out_dir/units`` (started afresh each call).
    """
    from smoltolk.data.speech_tokenizer import (
        KMeansQuantizer,
        SpeechTokenizer,
        fit_kmeans,
        make_features,
        manifest_features,
        read_audio_manifest,
        save_centroids,
        tokenize_manifest,
    )

    out_dir = Path(out_dir)
    extractor = make_features(features)
    frames = sum(extractor.num_frames(audio_info(r.audio)[0]) for r in read_audio_manifest(manifest))
    k = min(num_units, frames // MIN_FRAMES_PER_UNIT)
    if k < 2:
        raise InputError(f"{manifest}: {frames} feature frames are too few to fit k-means "
                         f"(need at least {2 * MIN_FRAMES_PER_UNIT}); speak more stories")
    t0 = time.time()
    centroids = fit_kmeans(manifest_features(manifest, extractor, seed=seed, progress=progress), k, seed=seed)
    fit_seconds = time.time() - t0
    kmeans = save_centroids(out_dir / "kmeans.npy", centroids)
    shutil.rmtree(out_dir / "units", ignore_errors=True)  # a fresh run: the centroids may be new
    tokenizer = SpeechTokenizer(extractor, KMeansQuantizer(centroids, source=str(kmeans)))
    result = tokenize_manifest(manifest, out_dir / "units", tokenizer, progress=progress)
    return {"k": k, "frames": frames, "dim": int(centroids.shape[1]), "features": extractor.describe(),
            "fit_seconds": round(fit_seconds, 2), "centroids": str(kmeans), "manifest": result["manifest"]}


def unit_stats(unit_manifest: str | Path) -> dict[str, Any]:
    """Utterances, hours, words, collapsed units and unit usage of a tokenized manifest."""
    records = read_speech_manifest(unit_manifest)
    frames = sum(sum(r.durations or []) for r in records)
    seconds = sum(sum(r.durations or []) / r.frame_rate for r in records)
    units = np.concatenate([np.asarray(r.units) for r in records])  # (N,) collapsed units
    words = sum(len(r.words or []) for r in records)
    p = np.bincount(units) / units.size
    p = p[p > 0]
    return {"utterances": len(records), "seconds": round(seconds, 1), "hours": round(seconds / 3600, 4),
            "words": words, "frames": int(frames), "units": int(units.size),
            "units_per_second": round(units.size / seconds, 2), "units_per_word": round(units.size / max(words, 1), 2),
            "clusters_used": int(p.size), "unit_perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 1)}


def speak_world(world_dir: str | Path, out_dir: str | Path, n: int, seed: int = 0, num_units: int = DEFAULT_NUM_UNITS,
                features: str = FEATURES, progress: bool = True) -> dict[str, Any]:
    """Speak ``n`` of the world's speech-corpus stories, fit k-means on them and tokenize them.

    Writes the layout in the module docstring and returns (and writes as ``audio.json``) the
    statistics: utterances, hours, words, units, unit usage, the k-means fit and timings.
    ``result["manifest"]`` is the unit manifest (``units/units.jsonl``) for ``smoltolk prepare``.
    Deterministic given ``seed`` (and the installed espeak-ng).
    """
    find_espeak()
    out_dir = Path(out_dir)
    t0 = time.time()
    utterances = choose_stories(world_dir, n, seed)
    manifest = speak_stories(utterances, out_dir, seed, progress)
    t1 = time.time()
    kmeans = tokenize_audio(manifest, out_dir, num_units=num_units, seed=seed, features=features, progress=progress)
    unit_manifest = kmeans.pop("manifest")
    summary = {**unit_stats(unit_manifest), "voices": [asdict(v) for v in VOICES], "kmeans": kmeans,
               "manifest": unit_manifest, "audio_manifest": str(manifest),
               "speak_seconds": round(t1 - t0, 1), "tokenize_seconds": round(time.time() - t1, 1)}
    (out_dir / "audio.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
