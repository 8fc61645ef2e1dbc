"""The mini-world's audio route: espeak-ng -> 16 kHz WAV with word times -> log-mel + k-means units."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from smoltolk.cli import main
from smoltolk.data.alignments import check_transcript
from smoltolk.data.audio import SAMPLE_RATE, audio_info, load_audio
from smoltolk.data.manifest import read_speech_manifest
from smoltolk.data.prepare import PrepareSettings, default_text_eos_id, load_prepared, prepare
from smoltolk.data.speech_tokenizer import make_features
from smoltolk.data.units import word_ends_to_collapsed
from smoltolk.errors import ConfigError, InputError
from smoltolk.world import audio as world_audio
from smoltolk.world.audio import (
    FEATURES,
    choose_stories,
    find_espeak,
    held_out_words,
    speak_stories,
    speak_world,
    tokenize_audio,
    trim_silence,
)
from smoltolk.world.build import build_world

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (bash scripts/setup.sh installs it, "
                                         "or apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=0, n_text=30, n_speech=12, n_bench_stories=2, n_bench_pairs=2)
    return out


@pytest.fixture(scope="module")
def spoken(world, tmp_path_factory):
    """Three stories read aloud: (output folder, audio manifest)."""
    out = tmp_path_factory.mktemp("audio")
    return out, speak_stories(choose_stories(world, 3, seed=0), out, seed=0, progress=False)


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(world_audio.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="espeak-ng") as e:
        find_espeak()
    assert "apt-get install espeak-ng" in str(e.value) and "brew install espeak-ng" in str(e.value)
    # the demo option stops before any work, with the same one-line message
    assert main(["demo", "--quick", "--audio", "--out", str(tmp_path / "demo")]) == 2
    assert "apt-get install espeak-ng" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "world").exists()


def test_trim_silence_keeps_the_sound_and_a_margin():
    wave = np.zeros(1000, dtype=np.float32)
    wave[300:400] = 0.5
    assert trim_silence(wave, margin=10).size == 120
    assert trim_silence(np.zeros(50, dtype=np.float32)).size == 0


def test_choose_stories_is_seeded_and_checks_the_count(world):
    a, b = choose_stories(world, 4, seed=1), choose_stories(world, 4, seed=1)
    assert [u.id for u in a] == [u.id for u in b] and len({u.id for u in a}) == 4
    assert len({u.voice for u in a}) > 1  # voices take turns
    held = held_out_words(world)
    stories = [r for r in read_speech_manifest(world / "speech.jsonl") if held.isdisjoint(r.text.split())]
    with pytest.raises(ConfigError, match=f"between 1 and the {len(stories)} stories"):
        choose_stories(world, len(stories) + 1)


def test_no_held_out_word_is_spoken(world):
    """Carrier utterances of held-out words stay out: a subset would bring them closer than the split allows."""
    held = held_out_words(world)
    assert held
    everything = read_speech_manifest(world / "speech.jsonl")
    stories = [r for r in everything if held.isdisjoint(r.text.split())]
    chosen = choose_stories(world, len(stories))
    assert [u.id for u in chosen] == [f"audio-{r.id}" for r in stories]
    assert all(held.isdisjoint(u.words) for u in chosen)


@needs_espeak
def test_spoken_stories_are_16khz_with_exact_word_times(world, spoken):
    out, manifest = spoken
    records = read_speech_manifest(manifest)
    assert len(records) == 3
    for rec in records:
        n, rate = audio_info(out / rec.audio)
        assert rate == SAMPLE_RATE
        check_transcript(rec.words, rec.text, rec.id)  # every word, in order
        starts, ends = np.array([w.start for w in rec.words]), np.array([w.end for w in rec.words])
        assert np.all(ends > starts) and np.all(starts[1:] >= ends[:-1])  # monotone, no overlaps
        assert 0 < starts[0] and ends[-1] < n / SAMPLE_RATE  # silence before the first and after the last word
        wave = load_audio(out / rec.audio)
        for w in rec.words:  # each word holds sound; the pause after it is silent
            assert np.abs(wave[round(w.start * SAMPLE_RATE):round(w.end * SAMPLE_RATE)]).max() > 0.01
        gaps = [wave[round(a * SAMPLE_RATE) + 1:round(b * SAMPLE_RATE) - 1] for a, b in zip(ends[:-1], starts[1:])]
        assert max(np.abs(g).max() for g in gaps) < 1e-3  # silence: below -60 dB full scale
    # deterministic: the same stories and seed give the same samples
    again = speak_stories(choose_stories(world, 3, seed=0), out.parent / f"{out.name}-again", seed=0, progress=False)
    first = records[0]
    assert np.array_equal(load_audio(out / first.audio), load_audio(again.parent / first.audio))


@needs_espeak
def test_kmeans_units_keep_the_word_alignment(world, spoken, tmp_path):
    _, manifest = spoken
    fit = tokenize_audio(manifest, tmp_path, num_units=8, seed=0, progress=False)
    assert fit["k"] == 8 and fit["dim"] == 80 and (tmp_path / "kmeans.npy").is_file()
    features = make_features(FEATURES)
    audio = {r.id: r for r in read_speech_manifest(manifest)}
    units = read_speech_manifest(fit["manifest"])
    assert [r.id for r in units] == list(audio)
    for rec in units:
        assert rec.frame_rate == features.frame_rate and 0 <= min(rec.units) and max(rec.units) < 8
        n, _ = audio_info(manifest.parent / audio[rec.id].audio)
        assert sum(rec.durations) == features.num_frames(n)
        assert rec.words == audio[rec.id].words and rec.text == audio[rec.id].text
        ends = word_ends_to_collapsed(np.array([w.end for w in rec.words]), np.array(rec.durations),
                                      rec.frame_rate, rec.id)
        assert np.all(np.diff(np.r_[0, ends]) >= 1) and ends[-1] <= len(rec.units)  # every word owns units
    tok = world / "tokenizer.json"
    index = prepare(fit["manifest"], tmp_path / "prepared", "speech",
                    PrepareSettings(str(tok), text_eos_id=default_text_eos_id(tok), workers=1), progress=False)
    assert index["shards"][0]["aligned_utterances"] == 3
    _, shards = load_prepared(tmp_path / "prepared", verify=True)
    shards[0].aligned.validate(500)  # the interleaving's own alignment checks


@needs_espeak
def test_too_little_audio_caps_the_clusters(spoken, tmp_path):
    _, manifest = spoken
    fit = tokenize_audio(manifest, tmp_path, num_units=500, seed=0, progress=False)
    assert fit["k"] == fit["frames"] // world_audio.MIN_FRAMES_PER_UNIT < 500


@needs_espeak
def test_speak_world_reports_what_came_through(world, tmp_path):
    stats = speak_world(world, tmp_path, 2, seed=0, num_units=16, progress=False)
    assert stats == json.loads((tmp_path / "audio.json").read_text())
    assert stats["utterances"] == 2 and stats["kmeans"]["k"] == 16 and 0 < stats["clusters_used"] <= 16
    assert 0 < stats["units_per_second"] <= 25 and stats["units_per_word"] > 1 and stats["hours"] > 0
    with pytest.raises(ConfigError, match="between 1 and"):
        speak_world(world, tmp_path / "none", 0, progress=False)


def test_bad_transcript_names_the_record(world, tmp_path):
    bad = tmp_path / "world"
    shutil.copytree(world, bad)
    rows = [json.loads(line) for line in (bad / "speech.jsonl").read_text().splitlines()]
    for row in rows:
        row["text"] = "Hello, World"
    (bad / "speech.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"speech.jsonl \(id 'speech-\d+'\): expected a transcript of lowercase"):
        choose_stories(bad, 1)
    (bad / "world.json").unlink()
    with pytest.raises(InputError, match="world.json: not found"):
        choose_stories(bad, 1)


@pytest.mark.slow
@needs_espeak
def test_quick_demo_trains_on_the_audio_route(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--audio", "--out", str(out)]) == 0
    assert (out / "data" / "audio" / "index.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["audio"]["utterances"] == summary["size"]["n_audio"]
    paths = {(d["path"], d["modality"]) for d in
             json.loads((out / "runs" / "smoltolk" / "train_config.json").read_text())["data"]["datasets"]}
    assert {(str(out / "data" / "audio"), "speech"), (str(out / "data" / "audio"), "interleaved")} <= paths
    assert "Audio route (--audio)" in (out / "report.md").read_text()
