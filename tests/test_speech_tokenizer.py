"""The speech tokenizer: audio loading, HuBERT / LogMel features, k-means units, manifests -> shards, CLI.

Everything is made in-test: tiny random HuBERT directories, sine-burst audio, hand-made centroids.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import assert_close, decoder_terms, differs

from smoltolk.cli import main
from smoltolk.data.audio import audio_info, load_audio, read_audio, resample
from smoltolk.data.manifest import read_speech_manifest
from smoltolk.data.speech_tokenizer import (
    HubertFeatures,
    KMeansQuantizer,
    LogMelFeatures,
    SpeechTokenizer,
    UntrustedPickleWarning,
    convert_joblib_kmeans,
    fit_kmeans,
    load_centroids,
    make_features,
    manifest_features,
    mel_filterbank,
    read_shards,
    save_centroids,
    tokenize_manifest,
)
from smoltolk.errors import CheckpointError, ConfigError, InputError

SR = 16_000
# A tiny HuBERT whose conv stack hops 5 * 4 = 20 samples: 800 frames per second at 16 kHz.
TINY_HUBERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                   conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                   num_conv_pos_embedding_groups=2)
# rounded operations per HuBERT feature: the conv stack (kernel x channels), the positional conv, the layers
HUBERT_TERMS = 10 + 8 * 32 + 16 * 16 + decoder_terms(2, 32, 37, 400)


def sine_bursts(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    """Tones of a few frequencies separated by near-silence, (samples,) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    freq = np.repeat(rng.choice([220.0, 440.0, 880.0, 1760.0], size=n // (rate // 10) + 1), rate // 10)[:n]
    gate = (np.arange(n) // (rate // 20)) % 2  # 50 ms on, 50 ms off
    wave = 0.5 * np.sin(2 * np.pi * freq * t) * gate + 0.001 * rng.standard_normal(n)
    return wave.astype(np.float32)


@pytest.fixture
def hubert_dir(tmp_path):
    """Factory: save a tiny random transformers HubertModel and return (dir, model)."""
    transformers = pytest.importorskip("transformers")

    def make(name: str = "hubert", seed: int = 0, **kw):
        torch.manual_seed(seed)
        model = transformers.HubertModel(transformers.HubertConfig(**{**TINY_HUBERT, **kw})).eval()
        path = tmp_path / name
        model.save_pretrained(path)
        return path, model

    return make


def write_manifest(tmp_path, seconds=(0.3, 0.5, 0.2, 0.4, 0.25), rate=SR, name="manifest.jsonl"):
    """Utterances under tmp_path/wavs, a manifest with relative paths; returns (manifest, waves)."""
    (tmp_path / "wavs").mkdir(exist_ok=True)
    waves, lines = [], []
    for i, s in enumerate(seconds):
        wave = sine_bursts(s, rate, seed=i)
        sf.write(tmp_path / "wavs" / f"u{i}.wav", wave, rate)
        waves.append(wave)
        lines.append(json.dumps({"id": f"utt-{i}", "audio": f"wavs/u{i}.wav", "text": f"utterance {i}"}))
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path, waves


def logmel_tokenizer(k: int = 16, seed: int = 0, features=None) -> SpeechTokenizer:
    features = features or LogMelFeatures(n_mels=20)
    centroids = np.random.default_rng(seed).normal(-5.0, 3.0, size=(k, features.dim)).astype(np.float32)
    return SpeechTokenizer(features, KMeansQuantizer(centroids))


# ---------------------------------------------------------------------------------------------
# audio


def test_load_audio_16k_mono_and_stereo_mixdown(tmp_path):
    wave = sine_bursts(0.5)
    sf.write(tmp_path / "a.flac", wave, SR)
    assert np.abs(load_audio(tmp_path / "a.flac") - wave).max() <= 1 / 32767  # FLAC is 16-bit: one step
    stereo = np.stack([wave, 0.25 * np.ones_like(wave)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, SR, subtype="FLOAT")
    assert_close(load_audio(tmp_path / "s.wav"), (wave + 0.25) / 2, terms=2)
    assert audio_info(tmp_path / "s.wav") == (len(wave), SR)


def test_resampling_from_22050_keeps_length_and_pitch(tmp_path):
    rate = 22_050
    t = np.arange(rate) / rate  # 1 s of 440 Hz
    sf.write(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, subtype="FLOAT")
    assert read_audio(tmp_path / "a.wav")[1] == rate
    wave = load_audio(tmp_path / "a.wav")
    assert wave.dtype == np.float32 and len(wave) == SR
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SR / len(wave) - 440) <= 1.0
    assert np.array_equal(resample(wave, SR, SR), wave)
    with pytest.raises(InputError, match=r"a\.wav: sample rate is 22050 Hz, expected 16000 Hz"):
        load_audio(tmp_path / "a.wav", resample_to_rate=False)


def test_bad_audio_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.wav: audio file not found"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(InputError, match=r"text\.wav: cannot read audio .*expected a WAV or FLAC"):
        load_audio(tmp_path / "text.wav")
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(InputError, match=r"zero\.wav: the audio file is empty"):
        load_audio(tmp_path / "zero.wav")
    sf.write(tmp_path / "nosamples.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(InputError, match=r"nosamples\.wav: the audio file holds no samples"):
        load_audio(tmp_path / "nosamples.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], np.float32), SR, subtype="FLOAT")
    with pytest.raises(InputError, match=r"nan\.wav: the audio holds NaN"):
        load_audio(tmp_path / "nan.wav")


# ---------------------------------------------------------------------------------------------
# HuBERT features


def test_hubert_features_equal_transformers_hidden_states(hubert_dir):
    path, model = hubert_dir(feat_extract_norm="layer")
    feats = HubertFeatures(path, layer=1)
    assert feats.frame_rate == 800.0 and feats.dim == 32 and feats.pads_safely
    wave = sine_bursts(0.21)  # 3360 samples
    out = feats(wave)
    with torch.no_grad():  # the untruncated reference model: all layers, hidden_states[1]
        ref = model(torch.from_numpy(wave)[None], output_hidden_states=True).hidden_states[1][0].numpy()
    assert out.shape == ref.shape == (feats.num_frames(len(wave)), 32) and out.dtype == np.float32
    assert int(model._get_feat_extract_output_lengths(len(wave))) == out.shape[0]
    assert_close(out, ref, terms=HUBERT_TERMS)
    assert HubertFeatures(path, layer=2)(wave).shape == out.shape


@pytest.mark.parametrize("strides, rate, frames_per_second", [((5, 2, 2, 2, 2, 2, 2), 50.0, 49),
                                                              ((5, 2, 2, 2, 2, 2, 2, 2), 25.0, 24)])
def test_hubert_frame_rate_from_the_conv_stack(hubert_dir, strides, rate, frames_per_second):
    kernels = (10, 3, 3, 3, 3, 2, 2, 2)[:len(strides)]  # HuBERT-base's stack (+ one stride-2 layer: 25 Hz)
    path, model = hubert_dir(conv_dim=(16,) * len(strides), conv_stride=strides, conv_kernel=kernels)
    feats = HubertFeatures(path, layer=2)
    assert feats.frame_rate == rate
    out = feats(sine_bursts(1.0))
    assert out.shape == (frames_per_second, 32) == (feats.num_frames(SR), 32)
    assert feats.num_frames(feats.min_samples) == 1 and feats.num_frames(feats.min_samples - 1) == 0


def test_batched_features_equal_one_by_one(hubert_dir):
    path, _ = hubert_dir(feat_extract_norm="layer")
    feats = HubertFeatures(path, layer=2)
    waves = [sine_bursts(s, seed=i) for i, s in enumerate((0.3, 0.05, 0.17, 0.3))]
    one_by_one = [feats(w) for w in waves]
    batched = feats.batch(waves)
    for a, b, w in zip(batched, one_by_one, waves):
        assert a.shape == b.shape == (feats.num_frames(len(w)), 32)
        assert_close(a, b, terms=HUBERT_TERMS)
    feats.max_batch_samples = len(waves[0])  # forces groups of one: the same features
    for a, b in zip(feats.batch(waves), one_by_one):
        assert_close(a, b, terms=HUBERT_TERMS)


def test_group_norm_models_are_never_padded(hubert_dir):
    path, model = hubert_dir(feat_extract_norm="group")
    feats = HubertFeatures(path, layer=2)
    assert not feats.pads_safely
    waves = [sine_bursts(0.3), sine_bursts(0.1, seed=1)]
    for a, w in zip(feats.batch(waves), waves):
        np.testing.assert_array_equal(a, feats(w))
    # why: padding the short utterance changes its group-normed features everywhere
    x = torch.zeros(1, len(waves[0]))
    x[0, :len(waves[1])] = torch.from_numpy(waves[1])
    mask = (torch.arange(x.shape[1]) < len(waves[1])).long()[None]
    with torch.no_grad():
        padded = model(x, attention_mask=mask, output_hidden_states=True).hidden_states[2][0]
    n = feats.num_frames(len(waves[1]))
    assert differs(padded[:n].numpy(), feats(waves[1]), terms=HUBERT_TERMS)


def test_hubert_normalize_follows_the_preprocessor_config(hubert_dir):
    path, _ = hubert_dir(feat_extract_norm="layer")
    wave = sine_bursts(0.2)
    assert not HubertFeatures(path, layer=1).normalize
    (path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    normed = HubertFeatures(path, layer=1)
    assert normed.normalize
    assert_close(normed(wave), normed(3.0 * wave + 0.1), terms=HUBERT_TERMS + len(wave))  # gain/offset invariant


def test_hubert_errors(hubert_dir, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=r"nowhere: no config\.json"):
        HubertFeatures(tmp_path / "nowhere")
    path, model = hubert_dir()
    with pytest.raises(ConfigError, match=r"layer 11: .* has transformer layers 1\.\.2"):
        HubertFeatures(path)
    with pytest.raises(InputError, match=r"too short; HubertFeatures needs at least 45 samples"):
        HubertFeatures(path, layer=1)(np.zeros(44, np.float32))
    with pytest.raises(InputError, match=r"expected a 1-D mono waveform"):
        HubertFeatures(path, layer=1)(np.zeros((2, 800), np.float32))
    # weights that do not belong to a HuBERT model would leave random tensors: refused
    from safetensors.torch import save_file

    save_file({"something.else": torch.zeros(3)}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"the weights lack .* tensor\(s\) of a HuBERT model"):
        HubertFeatures(path, layer=1)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "wav2vec2"}))
    with pytest.raises(CheckpointError, match=r"model_type is 'wav2vec2', expected 'hubert'"):
        HubertFeatures(path, layer=1)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"pip install transformers"):
        HubertFeatures(path, layer=1)


# ---------------------------------------------------------------------------------------------
# LogMel features


def test_logmel_frames_and_pitch():
    feats = LogMelFeatures()
    assert feats.frame_rate == 50.0 and feats.dim == 80 and feats.min_samples == 400
    t = np.arange(SR) / SR
    out = feats((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert out.shape == (49, 80) and out.dtype == np.float32  # HuBERT-base's count for 1 s: 1 + (16000-400)//320
    centers = mel_filterbank(80, feats.n_fft).argmax(axis=0) * SR / feats.n_fft  # peak frequency of each filter
    assert abs(centers[out.mean(axis=0).argmax()] - 1000) < 60
    slow = LogMelFeatures(frame_rate=25)
    assert slow.hop == 640 and slow.win == 640 and slow((np.ones(SR) * 0.1).astype(np.float32)).shape == (25, 80)
    assert (mel_filterbank(80, 512).sum(axis=0) > 0).all()  # no empty filter
    with pytest.raises(ConfigError, match=r"frame_rate 30 Hz: the hop 16000 / frame_rate must be a whole"):
        LogMelFeatures(frame_rate=30)
    with pytest.raises(InputError, match=r"399 samples .* too short"):
        feats(np.zeros(399, np.float32))


def test_make_features_specs(hubert_dir):
    assert make_features("logmel").frame_rate == 50.0
    assert make_features("logmel:25").frame_rate == 25.0
    path, _ = hubert_dir()
    assert make_features(f"hubert:{path}", layer=2).layer == 2
    for bad in ("mfcc", "logmel:fast", "hubert:", "hubert"):
        with pytest.raises(ConfigError, match=r"expected 'hubert:DIR'"):
            make_features(bad)


# ---------------------------------------------------------------------------------------------
# k-means


def test_quantizer_picks_the_nearest_centroid():
    centroids = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    points = np.array([[1, 1], [9, 1], [1, 9], [9.5, 9.5], [4.9, 0], [5.1, 0], [-100, 0]], np.float32)
    expected = [0, 1, 2, 3, 0, 1, 0]
    assert KMeansQuantizer(centroids)(points).tolist() == expected
    small_chunks = KMeansQuantizer(centroids, chunk_elements=4)  # one frame per chunk
    assert small_chunks.chunk_frames == 1 and small_chunks(points).dtype == np.int64
    assert small_chunks(points).tolist() == expected
    with pytest.raises(InputError, match=r"shape \(7, 3\) do not fit the centroids .*\(frames, 2\)"):
        KMeansQuantizer(centroids)(np.zeros((7, 3), np.float32))
    with pytest.raises(InputError, match=r"NaN"):
        KMeansQuantizer(centroids)(np.full((1, 2), np.nan, np.float32))


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_centroid_files_round_trip(tmp_path, suffix):
    centroids = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    path = save_centroids(tmp_path / f"km{suffix}", centroids)
    assert np.array_equal(load_centroids(path), centroids)
    assert np.array_equal(KMeansQuantizer.load(path).centroids, centroids)
    assert not list(tmp_path.glob(".*.tmp"))


def test_centroid_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.npy: centroid file not found"):
        load_centroids(tmp_path / "missing.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match=r"obj\.npy: not a plain numeric \.npy array"):
        load_centroids(tmp_path / "obj.npy")  # would need a pickle: never loaded
    np.save(tmp_path / "flat.npy", np.zeros(4, np.float32))
    with pytest.raises(CheckpointError, match=r"flat\.npy: expected centroids of shape \(K, dim\)"):
        load_centroids(tmp_path / "flat.npy")
    (tmp_path / "km.pkl").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"km\.pkl: .*smoltolk convert-kmeans"):
        load_centroids(tmp_path / "km.pkl")


def test_fit_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(0)
    centers = rng.uniform(-50, 50, size=(6, 8)).astype(np.float32)
    labels = rng.integers(0, 6, size=3000)
    points = centers[labels] + rng.normal(0, 0.5, size=(3000, 8)).astype(np.float32)
    read = []

    def utterances():
        for part in np.array_split(points, 30):
            read.append(len(part))
            yield part

    found = fit_kmeans(utterances(), 6, seed=0)
    assert found.shape == (6, 8) and found.dtype == np.float32
    distance = np.linalg.norm(found[:, None] - centers[None], axis=-1)  # (found, true)
    assert sorted(distance.argmin(axis=1).tolist()) == list(range(6)) and distance.min(axis=1).max() < 0.2
    read.clear()
    fit_kmeans(utterances(), 6, max_frames=250)
    assert sum(read) == 300  # stopped after the third utterance of 100 frames
    with pytest.raises(InputError, match=r"k=6 needs at least 6 frames, got 5"):
        fit_kmeans([points[:5]], 6)


def test_convert_joblib_kmeans_round_trip(tmp_path):
    joblib = pytest.importorskip("joblib")
    from sklearn.cluster import KMeans

    data = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    km = KMeans(n_clusters=7, n_init=2, random_state=0).fit(data)
    joblib.dump(km, tmp_path / "km.pkl")
    with pytest.warns(UntrustedPickleWarning, match=r"km\.pkl: loading a pickle executes code"):
        out = convert_joblib_kmeans(tmp_path / "km.pkl", tmp_path / "km.npy")
    quantizer = KMeansQuantizer.load(out)
    np.testing.assert_array_equal(quantizer.centroids, km.cluster_centers_.astype(np.float32))
    assert quantizer(data).tolist() == km.predict(data).tolist()
    joblib.dump({"not": "a kmeans"}, tmp_path / "dict.pkl")
    with pytest.warns(UntrustedPickleWarning), pytest.raises(InputError, match=r"holds a dict, expected a fitted"):
        convert_joblib_kmeans(tmp_path / "dict.pkl", tmp_path / "x.npy")


# ---------------------------------------------------------------------------------------------
# tokenizer and manifests


def test_encode_file_collapses_with_durations(tmp_path):
    tokenizer = logmel_tokenizer()
    wave = sine_bursts(0.5)
    sf.write(tmp_path / "a.wav", wave, SR)
    out = tokenizer.encode_file(tmp_path / "a.wav")
    frames = tokenizer.encode(wave)
    assert out["frame_rate"] == 50.0 and out["durations"].sum() == len(frames) == 24
    assert np.array_equal(np.repeat(out["units"], out["durations"]), frames)
    assert (out["units"][1:] != out["units"][:-1]).all() and len(set(frames.tolist())) > 1
    sf.write(tmp_path / "short.wav", wave[:100], SR)
    with pytest.raises(InputError, match=r"short\.wav: 100 samples .* too short"):
        tokenizer.encode_file(tmp_path / "short.wav")
    with pytest.raises(ConfigError, match=r"centroids are 3-dimensional but the LogMelFeatures features are 80"):
        SpeechTokenizer(LogMelFeatures(), KMeansQuantizer(np.zeros((2, 3), np.float32)))


class CountingLogMel(LogMelFeatures):
    """LogMel that counts utterances and can fail on the n-th one (a crash mid-shard)."""

    def __init__(self, fail_at: int | None = None):
        super().__init__(n_mels=20)
        self.calls, self.fail_at = 0, fail_at

    def _extract(self, wave):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return super()._extract(wave)


def test_tokenize_manifest_shards_and_resumes(tmp_path):
    manifest, waves = write_manifest(tmp_path, rate=22_050)  # resampled on the way in
    out = tmp_path / "units"
    features = CountingLogMel()
    tokenizer = logmel_tokenizer(features=features)
    summary = tokenize_manifest(manifest, out, tokenizer, shard_size=2, batch_size=2, progress=False)
    assert summary["computed"] == [0, 1, 2] and features.calls == 5
    shards = sorted(p.name for p in out.glob("shard-*.jsonl"))
    assert shards == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    rows = read_shards(out)
    assert [r["id"] for r in rows] == [f"utt-{i}" for i in range(5)]  # manifest order, not length order
    for row, wave in zip(rows, waves):
        expected = tokenizer.encode_file(tmp_path / "wavs" / f"u{row['id'][-1]}.wav")
        assert row["units"] == expected["units"].tolist() and row["durations"] == expected["durations"].tolist()
        assert row["frame_rate"] == 50.0 and row["text"].startswith("utterance")
        assert sum(row["durations"]) == features.num_frames(int(np.ceil(len(wave) * SR / 22_050)))
    merged = read_speech_manifest(out / "units.jsonl")  # the input of `smoltolk prepare`
    assert [r.units for r in merged] == [r["units"] for r in rows]

    before = (out / "shard-00001.jsonl").read_text()
    (out / "shard-00001.jsonl").unlink()
    features.calls = 0
    summary = tokenize_manifest(manifest, out, tokenizer, shard_size=2, progress=False)
    assert summary["computed"] == [1] and summary["skipped"] == 2 and features.calls == 2
    assert (out / "shard-00001.jsonl").read_text() == before
    features.calls = 0
    assert tokenize_manifest(manifest, out, tokenizer, shard_size=2, progress=False)["computed"] == []
    assert features.calls == 0
    with pytest.raises(InputError, match=r"tokenize\.json: .*another run \(shard_size changed\)"):
        tokenize_manifest(manifest, out, tokenizer, shard_size=3, progress=False)
    with pytest.raises(InputError, match=r"another run \(tokenizer changed\)"):
        tokenize_manifest(manifest, out, logmel_tokenizer(seed=1), shard_size=2, progress=False)


def test_an_interrupted_shard_leaves_no_finished_looking_file(tmp_path):
    manifest, _ = write_manifest(tmp_path)
    out = tmp_path / "units"
    crashing = logmel_tokenizer(features=CountingLogMel(fail_at=4))  # the 2nd utterance of shard 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        tokenize_manifest(manifest, out, crashing, shard_size=2, batch_size=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.jsonl", "tokenize.json"]
    with pytest.raises(InputError, match=r"shard-00001\.jsonl: missing; the run is unfinished"):
        read_shards(out)
    features = CountingLogMel()
    summary = tokenize_manifest(manifest, out, logmel_tokenizer(features=features), shard_size=2, progress=False)
    assert summary["computed"] == [1, 2] and features.calls == 3 and len(read_shards(out)) == 5


def test_a_shard_failing_while_written_leaves_nothing(tmp_path):
    from smoltolk.data.speech_tokenizer import _write_shard

    path = tmp_path / "shard-00000.jsonl"
    with pytest.raises(TypeError):
        _write_shard(path, [{"id": "a", "units": [1]}, {"id": "b", "units": object()}])  # fails on row 2
    assert list(tmp_path.iterdir()) == []
    _write_shard(path, [{"id": "a", "units": [1]}])
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00000.jsonl"]


def test_manifest_errors_name_file_line_and_id(tmp_path):
    manifest, _ = write_manifest(tmp_path)
    lines = manifest.read_text().splitlines()
    tokenizer = logmel_tokenizer()

    def run(text, name):
        path = tmp_path / name
        path.write_text(text)
        tokenize_manifest(path, tmp_path / f"out-{name}", tokenizer, progress=False)

    missing = lines[:2] + [json.dumps({"id": "gone", "audio": "wavs/gone.wav"})]
    with pytest.raises(InputError, match=r"m1\.jsonl:3 \(id 'gone'\): .*gone\.wav: audio file not found"):
        run("\n".join(missing), "m1.jsonl")
    with pytest.raises(InputError, match=r"m2\.jsonl:2: not valid JSON"):
        run(lines[0] + "\n{oops\n", "m2.jsonl")
    with pytest.raises(InputError, match=r"m3\.jsonl:1 \(id 'x'\): .*needs 'audio'"):
        run(json.dumps({"id": "x", "text": "no audio"}), "m3.jsonl")
    with pytest.raises(InputError, match=r"m4\.jsonl:2 \(id 'utt-0'\): duplicate id \(first at .*m4\.jsonl:1\)"):
        run("\n".join([lines[0], lines[0]]), "m4.jsonl")
    sf.write(tmp_path / "wavs" / "tiny.wav", np.zeros(10, np.float32), SR)
    with pytest.raises(InputError, match=r"m5\.jsonl:2 \(id 'tiny'\): .*tiny\.wav: 10 samples .* too short"):
        run("\n".join([lines[0], json.dumps({"id": "tiny", "audio": "wavs/tiny.wav"})]), "m5.jsonl")
    path = tmp_path / "m6.jsonl"
    path.write_text(lines[0])
    with pytest.raises(InputError, match=r"m6\.jsonl:1 \(id 'utt-0'\): .*sample rate is 22050 Hz"):
        sf.write(tmp_path / "wavs" / "u0.wav", sine_bursts(0.3, 22_050), 22_050)
        tokenize_manifest(path, tmp_path / "out6", tokenizer, resample=False, progress=False)


def test_manifest_features_are_shuffled_and_complete(tmp_path):
    manifest, waves = write_manifest(tmp_path)
    feats = LogMelFeatures(n_mels=20)
    out = list(manifest_features(manifest, feats, seed=0, batch_size=2, progress=False))
    assert sorted(len(f) for f in out) == sorted(feats.num_frames(len(w)) for w in waves)
    assert [len(f) for f in out] != [feats.num_frames(len(w)) for w in waves]  # a shuffled order


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_fit_kmeans_then_tokenize(tmp_path, hubert_dir, capsys):
    manifest, _ = write_manifest(tmp_path)
    assert main(["fit-kmeans", str(manifest), str(tmp_path / "km.npy"), "--features", "logmel", "--k", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["k"] == 8
    assert main(["tokenize", str(manifest), str(tmp_path / "out"), "--features", "logmel",
                 "--kmeans", str(tmp_path / "km.npy"), "--shard-size", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["shards"] == 2
    rows = read_shards(tmp_path / "out")
    assert len(rows) == 5 and all(0 <= u < 8 for r in rows for u in r["units"])

    path, _ = hubert_dir(feat_extract_norm="layer")
    assert main(["fit-kmeans", str(manifest), str(tmp_path / "hk.safetensors"), "--features", f"hubert:{path}",
                 "--layer", "2", "--k", "4", "--max-frames", "500"]) == 0
    assert main(["tokenize", str(manifest), str(tmp_path / "hout"), "--features", f"hubert:{path}",
                 "--layer", "2", "--kmeans", str(tmp_path / "hk.safetensors")]) == 0
    assert read_shards(tmp_path / "hout")[0]["frame_rate"] == 800.0

    capsys.readouterr()
    assert main(["tokenize", str(manifest), str(tmp_path / "o2"), "--features", "logmel",
                 "--kmeans", str(tmp_path / "hk.safetensors")]) == 2  # 32-dim centroids, 80-dim features
    err = capsys.readouterr().err
    assert "smoltolk tokenize: error:" in err and "hk.safetensors" in err and "Traceback" not in err
    assert main(["tokenize", str(manifest), str(tmp_path / "o3"), "--features", "mfcc", "--kmeans", "x.npy"]) == 2
    assert "expected 'hubert:DIR'" in capsys.readouterr().err


def test_tokenized_units_feed_prepare(tmp_path, bpe_tokenizer_file, capsys):
    manifest, _ = write_manifest(tmp_path)
    summary = tokenize_manifest(manifest, tmp_path / "units", logmel_tokenizer(k=16), shard_size=2, progress=False)
    assert main(["prepare", summary["manifest"], str(tmp_path / "prepared"), "--kind", "speech",
                 "--tokenizer", str(bpe_tokenizer_file), "--num-units", "16", "--workers", "1"]) == 0
    assert "5 records" in capsys.readouterr().out


def test_cli_convert_kmeans_needs_the_flag(tmp_path, capsys):
    joblib = pytest.importorskip("joblib")
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=3, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(30, 2)))
    joblib.dump(km, tmp_path / "km.pkl")
    assert main(["convert-kmeans", str(tmp_path / "km.pkl"), str(tmp_path / "km.npy")]) == 2
    err = capsys.readouterr().err
    assert "refusing to load a pickle" in err and "--i-trust-this-pickle" in err
    assert not (tmp_path / "km.npy").exists()
    assert main(["convert-kmeans", str(tmp_path / "km.pkl"), str(tmp_path / "km.npy"), "--i-trust-this-pickle"]) == 0
    assert "warning:" in capsys.readouterr().err
    centroids = km.cluster_centers_
    assert_close(load_centroids(tmp_path / "km.npy"), centroids, terms=1, dtype=torch.float32)  # stored as float32
