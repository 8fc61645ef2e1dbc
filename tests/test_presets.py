"""Presets: parameter counts against paper Table 5, computed on the meta device."""

from __future__ import annotations

import pytest

from smoltolk.errors import ConfigError
from smoltolk.model.tslm import count_parameters
from smoltolk.presets import PAPER_TABLE5, PRESETS, preset


@pytest.mark.parametrize("name", sorted(PAPER_TABLE5))
def test_parameter_counts_within_five_percent_of_table5(name):
    counts = count_parameters(preset(name))
    text, speech = PAPER_TABLE5[name]
    assert counts["text"] == pytest.approx(text, rel=0.05)
    assert counts["speech"] == pytest.approx(speech, rel=0.05)


def test_every_preset_builds_and_baselines_are_baselines():
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.speech.is_baseline == name.startswith(("baseline", "tiny-baseline"))


def test_paper_settings_in_presets():
    assert preset("smoltolk-150m").speech.entropy_beta == 0.0
    assert preset("smoltolk-400m").speech.entropy_beta == 0.01
    assert preset("smoltolk-2b").speech.entropy_beta == 0.01
    for name in PRESETS:
        assert preset(name).speech.rope_theta == 100000.0


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'smoltolk-7b'.*smoltolk-150m"):
        preset("smoltolk-7b")
