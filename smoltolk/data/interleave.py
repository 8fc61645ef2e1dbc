"""Word-aligned speech corpora as flat arrays, and interleaved text-speech samples built on the fly
exactly as the paper does (Section 4.3; after Nguyen et al., 2024).

A sample starts at a random word of a random utterance, in text or speech with probability 1/2,
and alternates spans of 10-30 text words and 5-15 speech words (inclusive; configurable). A
spoken word is the units from the previous word's end to this word's end. When a span reaches
the end of an utterance the stream emits that modality's EOS and continues with the next
utterance. SWT (a text token) marks every switch of modality.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from smoltolk.errors import ConfigError, InputError


@dataclass
class AlignedCorpus:
    """Utterances with collapsed speech units, the text tokens of their words and the alignment.

    units:         (N,)   collapsed speech units of all utterances, concatenated
    utt_units:     (U+1,) offsets of each utterance's units in ``units``
    tokens:        (M,)   text tokens of every word, concatenated in reading order
    word_tokens:   (W+1,) offsets of each word's tokens in ``tokens`` (a word may have 1+ tokens)
    word_unit_end: (W,)   exclusive end of each word's units, as an index into ``units``
    utt_words:     (U+1,) offsets of each utterance's words
    """

    units: np.ndarray
    utt_units: np.ndarray
    tokens: np.ndarray
    word_tokens: np.ndarray
    word_unit_end: np.ndarray
    utt_words: np.ndarray

    def __post_init__(self) -> None:
        # start of each word's units: the previous word's end, or its utterance's first unit
        utt_of_word = np.repeat(np.arange(self.num_utterances), np.diff(self.utt_words))
        start = np.r_[0, self.word_unit_end[:-1]] if self.num_words else np.zeros(0, dtype=np.int64)
        first = self.utt_words[:-1][np.diff(self.utt_words) > 0]
        start[first] = self.utt_units[utt_of_word[first]]
        self.word_unit_start = start.astype(np.int64)

    @classmethod
    def from_words(cls, utterances: list[list[tuple[list[int], list[int]]]]) -> AlignedCorpus:
        """Build from Python lists: each utterance a list of words, each word (text tokens, speech units)."""
        units, tokens, word_tokens, word_unit_end, utt_units, utt_words = [], [], [0], [], [0], [0]
        for utt in utterances:
            for word_toks, word_units in utt:
                tokens += word_toks
                word_tokens.append(len(tokens))
                units += word_units
                word_unit_end.append(len(units))
            utt_units.append(len(units))
            utt_words.append(len(word_unit_end))
        arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
        return cls(arr(units), arr(utt_units), arr(tokens), arr(word_tokens), arr(word_unit_end), arr(utt_words))

    @property
    def num_utterances(self) -> int:
        return len(self.utt_words) - 1

    @property
    def num_words(self) -> int:
        return len(self.word_unit_end)

    def validate(self, num_units: int, where: str = "corpus") -> None:
        """Raise a clear error for empty utterances, words without tokens, out-of-range units,
        or word alignments that run backwards or beyond their utterance."""
        if self.num_utterances == 0:
            raise InputError(f"{where}: no utterances")
        empty = np.flatnonzero(np.diff(self.utt_words) == 0)
        if empty.size:
            raise InputError(f"{where}: utterance {int(empty[0])} has no words")
        if self.units.size and (self.units.min() < 0 or self.units.max() >= num_units):
            i = int(np.flatnonzero((self.units < 0) | (self.units >= num_units))[0])
            utt = int(np.searchsorted(self.utt_units, i, side="right") - 1)
            raise InputError(f"{where}: utterance {utt} has unit {int(self.units[i])}, outside [0, {num_units})")
        no_tokens = np.flatnonzero(np.diff(self.word_tokens) <= 0)
        if no_tokens.size:
            raise InputError(f"{where}: word {int(no_tokens[0])} has no text tokens")
        utt_of_word = np.repeat(np.arange(self.num_utterances), np.diff(self.utt_words))
        lo, hi = self.utt_units[utt_of_word], self.utt_units[utt_of_word + 1]
        bad = (self.word_unit_end < self.word_unit_start) | (self.word_unit_end > hi) | (self.word_unit_end < lo)
        if bad.any():
            w = int(np.flatnonzero(bad)[0])
            raise InputError(f"{where}: word {w} (utterance {int(utt_of_word[w])}) ends at unit "
                             f"{int(self.word_unit_end[w])}, outside its utterance's units "
                             f"[{int(lo[w])}, {int(hi[w])}] or before the previous word's end")


@dataclass
class InterleaveConfig:
    text_span: tuple[int, int] = (10, 30)  # words per text span, inclusive
    speech_span: tuple[int, int] = (5, 15)  # words per speech span, inclusive
    p_speech_first: float = 0.5

    def __post_init__(self) -> None:
        for name in ("text_span", "speech_span"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ConfigError(f"interleave.{name} must be [min, max] with 1 <= min <= max, got {[lo, hi]}")
        if not 0.0 <= self.p_speech_first <= 1.0:
            raise ConfigError(f"interleave.p_speech_first must be in [0, 1], got {self.p_speech_first}")


@dataclass(frozen=True)
class Span:
    """Words [start, stop) of one utterance emitted in one modality; ``eos`` if the utterance ends here."""

    speech: bool
    start: int
    stop: int
    eos: bool
    switch_before: bool  # an SWT precedes this span


class Interleaver:
    """Builds interleaved samples of a given length from an :class:`AlignedCorpus`."""

    def __init__(self, corpus: AlignedCorpus, swt_id: int, text_eos_id: int, speech_eos_id: int,
                 cfg: InterleaveConfig | None = None) -> None:
        self.corpus, self.cfg = corpus, cfg or InterleaveConfig()
        self.swt_id, self.text_eos_id, self.speech_eos_id = swt_id, text_eos_id, speech_eos_id
        self._swt = np.array([swt_id], dtype=np.int64)
        self._eos = {False: np.array([text_eos_id], dtype=np.int64), True: np.array([speech_eos_id], dtype=np.int64)}

    def spans(self, rng: np.random.Generator) -> Iterator[Span]:
        """The endless sequence of spans of one sample (the random choices live here)."""
        c, cfg = self.corpus, self.cfg
        utt = int(rng.integers(c.num_utterances))
        word = int(rng.integers(c.utt_words[utt], c.utt_words[utt + 1]))
        speech = bool(rng.random() < cfg.p_speech_first)
        first = True
        while True:
            lo, hi = cfg.speech_span if speech else cfg.text_span
            left = int(rng.integers(lo, hi + 1))
            switch = not first
            while left > 0:
                utt_end = int(c.utt_words[utt + 1])
                stop = min(word + left, utt_end)
                yield Span(speech, word, stop, stop == utt_end, switch)
                switch = False
                left -= stop - word
                word = stop
                if word == utt_end:
                    utt = (utt + 1) % c.num_utterances
                    word = int(c.utt_words[utt])
            speech, first = not speech, False

    def sample(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One sample of exactly ``length`` tokens: (ids (length,) int64, is_speech (length,) bool).
        Ids index the text vocabulary where ``is_speech`` is False, the speech vocabulary elsewhere."""
        c = self.corpus
        pieces: list[np.ndarray] = []
        kinds: list[tuple[bool, int]] = []
        total = 0
        for span in self.spans(rng):
            if span.switch_before:
                pieces.append(self._swt)
                kinds.append((False, 1))
                total += 1
            if span.speech:
                seg = c.units[c.word_unit_start[span.start]:c.word_unit_end[span.stop - 1]]
            else:
                seg = c.tokens[c.word_tokens[span.start]:c.word_tokens[span.stop]]
            pieces.append(seg)
            kinds.append((span.speech, len(seg)))
            total += len(seg)
            if span.eos:
                pieces.append(self._eos[span.speech])
                kinds.append((span.speech, 1))
                total += 1
            if total >= length:
                break
        ids = np.concatenate(pieces).astype(np.int64, copy=False)[:length]
        is_speech = np.repeat(np.array([k[0] for k in kinds]), [k[1] for k in kinds])[:length]
        return ids, is_speech
