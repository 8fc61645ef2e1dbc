"""Mini-world speech read back as words: rendered utterances decode to their words."""

from __future__ import annotations

import difflib

import numpy as np
import pytest

from smoltolk.world.decode import WorldDecoder, unit_phonemes
from smoltolk.world.speech import NOISE_UNITS, NUM_UNITS, PseudoSpeech
from smoltolk.world.world import PLACES, make_story, words


@pytest.fixture(scope="module")
def rendered():
    speech, rng = PseudoSpeech(seed=3, speakers=4, noise=0.05), np.random.default_rng(1)
    out = []
    for k in range(12):
        ws = words(make_story(rng, PLACES[k % len(PLACES)].name, f"s{k}").text())
        rec = speech.render(f"u{k}", ws, speaker=k % 4)
        frames = np.cumsum([0, *rec.durations])
        starts = [int(np.searchsorted(frames, round(w.start * rec.frame_rate))) for w in rec.words]
        out.append((ws, rec.units, starts))
    return out


def test_rendered_speech_reads_back_as_its_words(rendered):
    dec = WorldDecoder()
    total = given = free = 0
    for ws, units, starts in rendered:
        total += len(ws)
        given += sum(a == b for a, b in zip(dec.read(units, starts).words, ws, strict=True))
        matcher = difflib.SequenceMatcher(a=ws, b=list(dec.read(units).words), autojunk=False)
        free += sum(m.size for m in matcher.get_matching_blocks())
    assert given / total >= 0.97  # homophones ("two" read as "to") are the misses
    assert free / total >= 0.93  # without boundaries, merged phonemes at a few junctions are ambiguous


def test_noise_and_non_unit_ids_are_not_phonemes():
    assert unit_phonemes([0, 1, 13, NOISE_UNITS[0], NUM_UNITS, NUM_UNITS + 1, 0]) == ["AA", "AE", "AA"]


def test_speech_that_is_no_word_still_decodes_with_its_distance():
    dec = WorldDecoder()
    rng = np.random.default_rng(0)
    reading = dec.read(rng.integers(0, NUM_UNITS, 40).tolist())
    assert reading.words and reading.edits > 0
    exact = dec.read(PseudoSpeech(seed=0).render("x", ["kitchen"]).units)
    assert exact.words == ("kitchen",) and exact.edits == 0
