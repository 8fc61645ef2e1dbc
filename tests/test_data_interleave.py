"""Speech-unit collapse, word-time mapping, and the paper's interleaving."""

from __future__ import annotations

import numpy as np
import pytest

from smoltolk.data.interleave import AlignedCorpus, InterleaveConfig, Interleaver
from smoltolk.data.units import collapse, word_ends_to_collapsed
from smoltolk.errors import ConfigError, InputError

SWT, TEXT_EOS, SPEECH_EOS = 1000, 999, 500


def test_collapse_keeps_durations():
    units, durations = collapse(np.array([1, 1, 2, 2, 2, 1, 3]))
    assert units.tolist() == [1, 2, 1, 3] and durations.tolist() == [2, 3, 1, 1]
    assert collapse(np.array([], dtype=np.int64))[0].size == 0


def test_word_times_map_onto_collapsed_units():
    units, durations = collapse(np.array([5, 5, 5, 7, 7, 9, 9, 9, 9, 2]))  # 10 frames at 10 Hz
    ends = word_ends_to_collapsed(np.array([0.3, 0.9, 1.0]), durations, frame_rate=10.0)
    assert ends.tolist() == [1, 3, 4]  # words: [5], [7, 9], [2]


@pytest.mark.parametrize("ends, match", [
    ([0.5, 0.3], "word 1 ends at 0.300 s, before word 0"),
    ([0.5, 1.6], r"word 1 ends at 1.600 s, outside the audio \(0 to 1.000 s"),
])
def test_bad_word_times_are_named(ends, match):
    _, durations = collapse(np.arange(10))
    with pytest.raises(InputError, match=match):
        word_ends_to_collapsed(np.array(ends), durations, frame_rate=10.0, where="utt-7")


def _random_utterances(seed: int, n_utts: int = 12):
    rng = np.random.default_rng(seed)
    utts = []
    for _ in range(n_utts):
        words = []
        for _ in range(int(rng.integers(3, 25))):
            toks = rng.integers(0, 900, int(rng.integers(1, 4))).tolist()
            units = rng.integers(0, 500, int(rng.integers(2, 7))).tolist()
            words.append((toks, units))
        utts.append(words)
    return utts


def _reference_sample(utts, spans, length):
    """The expected sample, built from the per-word Python lists (not the flat arrays)."""
    flat = [w for u in utts for w in u]
    out = []
    for s in spans:
        if s.switch_before:
            out.append((SWT, False))
        for w in range(s.start, s.stop):
            seq = flat[w][1] if s.speech else flat[w][0]
            out += [(x, s.speech) for x in seq]
        if s.eos:
            out.append((SPEECH_EOS if s.speech else TEXT_EOS, s.speech))
        if len(out) >= length:
            break
    return out[:length]


@pytest.mark.parametrize("seed", range(5))
def test_interleaved_samples_follow_the_paper(seed):
    utts = _random_utterances(seed)
    corpus = AlignedCorpus.from_words(utts)
    corpus.validate(num_units=500)
    inter = Interleaver(corpus, SWT, TEXT_EOS, SPEECH_EOS)
    length = 600
    spans = []
    it = inter.spans(np.random.default_rng(seed))
    ids, is_speech = inter.sample(length, np.random.default_rng(seed))
    total = 0
    while total < length:  # the spans the sample used (same seed, same choices)
        s = next(it)
        spans.append(s)
        total = len(_reference_sample(utts, spans, 10**9))
    expected = _reference_sample(utts, spans, length)
    assert ids.tolist() == [x for x, _ in expected] and is_speech.tolist() == [m for _, m in expected]

    # spans: contiguous words, each word once, modality alternates, span lengths in range
    utt_end = {int(e) for e in corpus.utt_words[1:]}
    groups = []  # consecutive spans between SWTs form one modality span
    for i, s in enumerate(spans):
        if i:
            prev = spans[i - 1]
            expected_next = int(corpus.utt_words[0]) if prev.stop == corpus.utt_words[-1] else prev.stop
            assert s.start == expected_next  # no word skipped or repeated
            assert s.switch_before == (s.speech != prev.speech)
        assert s.eos == (s.stop in utt_end)
        if s.switch_before or not groups:
            groups.append([s])
        else:
            groups[-1].append(s)
    for g in groups[:-1]:  # the last one may be cut by the sample length
        n = sum(s.stop - s.start for s in g)
        lo, hi = (5, 15) if g[0].speech else (10, 30)
        assert lo <= n <= hi
    assert not spans[0].switch_before
    # SWT appears exactly at the switches
    swt_pos = [i for i, (x, m) in enumerate(expected) if x == SWT and not m]
    assert len(swt_pos) == sum(s.switch_before for s in spans)


def test_first_modality_is_a_fair_coin():
    corpus = AlignedCorpus.from_words(_random_utterances(0))
    inter = Interleaver(corpus, SWT, TEXT_EOS, SPEECH_EOS)
    firsts = [next(inter.spans(np.random.default_rng(s))).speech for s in range(2000)]
    assert 0.45 < np.mean(firsts) < 0.55


def test_samples_are_deterministic_given_the_seed():
    corpus = AlignedCorpus.from_words(_random_utterances(1))
    inter = Interleaver(corpus, SWT, TEXT_EOS, SPEECH_EOS, InterleaveConfig(text_span=(2, 4), speech_span=(1, 2)))
    a = inter.sample(300, np.random.default_rng(9))
    b = inter.sample(300, np.random.default_rng(9))
    c = inter.sample(300, np.random.default_rng(10))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and not np.array_equal(a[0], c[0])


def test_bad_corpora_are_named():
    utts = _random_utterances(2, 3)
    with pytest.raises(InputError, match="utterance 1 has no words"):
        AlignedCorpus.from_words([utts[0], [], utts[2]]).validate(500)
    bad_unit = [list(u) for u in utts]
    bad_unit[2][1] = (bad_unit[2][1][0], [3, 512])
    with pytest.raises(InputError, match=r"utterance 2 has unit 512, outside \[0, 500\)"):
        AlignedCorpus.from_words(bad_unit).validate(500)
    no_tokens = [list(u) for u in utts]
    no_tokens[0][0] = ([], [1, 2])
    with pytest.raises(InputError, match="word 0 has no text tokens"):
        AlignedCorpus.from_words(no_tokens).validate(500)
    with pytest.raises(ConfigError, match="speech_span"):
        InterleaveConfig(speech_span=(5, 3))
