"""Reading mini-world speech back as words: units -> phonemes -> words.

Every unit of the pseudo-speech belongs to one phoneme (``smoltolk.world.speech``: each phoneme owns a
disjoint block of units; the rest are noise units), so units read back as phonemes exactly, up to
two things the rendering hides: noise units (dropped here) and a phoneme said twice in a row (its
units merge; dictionary pronunciations are compared with such repeats merged too). Phonemes become
words by the nearest pronunciation among a lexicon (default: the world's vocabulary, pronounced as
the world pronounces them, CMU dictionary first): with word boundaries, each span on its own;
without, by dynamic programming over all segmentations (fewest edits, then fewest words; a word may
start with the phoneme that ended the previous one, as in "with the"). Homophones ("to", "two") read
as the first in alphabetical order. Generated
speech that strays from any word still decodes to the nearest ones; ``edits`` says how far it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from smoltolk.world.speech import NUM_UNITS, PHONEMES, UNITS_PER_PHONE, phonemes

WORD_COST = 0.01  # per word, so that among equally close readings the one with fewer words wins
MAX_EXTRA = 2  # a span may be this many phonemes longer or shorter than the word it is read as


def unit_phonemes(units: Sequence[int]) -> list[str]:
    """The phoneme of each unit, noise units dropped and repeats merged."""
    out: list[str] = []
    for u in units:
        if not 0 <= int(u) < NUM_UNITS:
            continue  # EOS, PAD, switch rows: not speech
        k = int(u) // UNITS_PER_PHONE
        if k >= len(PHONEMES):
            continue  # a noise unit
        if not out or out[-1] != PHONEMES[k]:
            out.append(PHONEMES[k])
    return out


def _merged(phones: Sequence[str]) -> tuple[str, ...]:
    return tuple(p for i, p in enumerate(phones) if i == 0 or phones[i - 1] != p)


def _edits(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class Reading:
    words: tuple[str, ...]
    phonemes: tuple[str, ...]
    edits: int  # phoneme edits between the speech and the words' pronunciations (0: an exact reading)

    @property
    def text(self) -> str:
        return " ".join(self.words)


class WorldDecoder:
    """Units -> words against a lexicon (default: :func:`smoltolk.world.world.vocabulary`)."""

    def __init__(self, lexicon: Sequence[str] | None = None):
        if lexicon is None:
            from smoltolk.world.world import vocabulary

            lexicon = vocabulary()
        self.prons: dict[tuple[str, ...], str] = {}
        for w in sorted(set(lexicon)):  # sorted: homophones resolve the same way every time
            self.prons.setdefault(_merged(phonemes(w)), w)
        self.by_length: dict[int, list[tuple[str, ...]]] = {}
        for p in self.prons:
            self.by_length.setdefault(len(p), []).append(p)
        self.longest = max(map(len, self.prons))
        self._nearest = lru_cache(maxsize=65536)(self._nearest_uncached)

    def _nearest_uncached(self, span: tuple[str, ...]) -> tuple[int, str]:
        if span in self.prons:
            return 0, self.prons[span]
        best = (10 ** 6, "")
        for n in range(max(1, len(span) - MAX_EXTRA), len(span) + MAX_EXTRA + 1):
            for p in self.by_length.get(n, ()):
                d = _edits(span, p)
                if d < best[0]:
                    best = (d, self.prons[p])
        return best

    def word(self, units: Sequence[int]) -> tuple[str, int]:
        """The nearest word to one word's units, and the edits it took."""
        return self._nearest(tuple(unit_phonemes(units)))

    def read(self, units: Sequence[int], boundaries: Sequence[int] | None = None) -> Reading:
        """Words of an utterance. ``boundaries``: unit indices where words start (as a manifest's word
        times give them); without, the segmentation is decoded too."""
        if boundaries is not None:
            cuts = [*boundaries, len(units)]
            spans = [units[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
            found = [self.word(s) for s in spans]
            return Reading(tuple(w for _, w in found if w), tuple(unit_phonemes(units)), sum(d for d, _ in found))
        ph = tuple(unit_phonemes(units))
        n = len(ph)
        best: list[tuple[float, int, int, str]] = [(0.0, 0, -1, "")] + [(float("inf"), 0, -1, "")] * n
        for i in range(1, n + 1):
            for j in range(max(0, i - self.longest - MAX_EXTRA), i):
                if best[j][0] == float("inf"):
                    continue
                d, w = self._nearest(ph[j:i])
                if d and j and (ph[j - 1], *ph[j:i]) in self.prons:  # a word that began with the phoneme
                    d, w = 0, self.prons[(ph[j - 1], *ph[j:i])]  # ending the previous one (their units merged)
                if not w:
                    continue
                cost = best[j][0] + d + WORD_COST
                if cost < best[i][0]:
                    best[i] = (cost, best[j][1] + d, j, w)
        words, i = [], n
        while i > 0:
            words.append(best[i][3])
            i = best[i][2]
        return Reading(tuple(reversed(words)), ph, best[n][1])
