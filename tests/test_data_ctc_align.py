"""CTC forced alignment: Viterbi on hand-made emissions, and a tiny random CTC model end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smoltolk.data.ctc_align import CTCAligner, ctc_viterbi
from smoltolk.errors import InputError


def _emissions(best: list[int], classes: int = 4) -> np.ndarray:
    lp = np.full((len(best), classes), np.log(0.01))
    lp[np.arange(len(best)), best] = np.log(0.97)
    return lp


def test_viterbi_follows_the_emissions_and_separates_repeats():
    #         frame:  0  1  2  3  4  5  6  7  8  9
    best = [0, 1, 1, 0, 2, 0, 2, 3, 3, 0]
    path = ctc_viterbi(_emissions(best), [1, 2, 2, 3])
    assert path.tolist() == [-1, 0, 0, -1, 1, -1, 2, 3, 3, -1]


def test_viterbi_forces_the_transcript_against_the_emissions():
    # the emissions never favour label 3, but the transcript demands it: it still gets a frame
    path = ctc_viterbi(_emissions([1, 1, 2, 2, 0]), [1, 2, 3])
    assert sorted(set(path.tolist()) - {-1}) == [0, 1, 2]
    assert np.all(np.diff(path[path >= 0]) >= 0)  # monotonic


def test_viterbi_rejects_audio_too_short():
    with pytest.raises(InputError, match="3 frames cannot hold 3 labels \\(1 repeated pairs"):
        ctc_viterbi(_emissions([1, 1, 2]), [1, 1, 2])


def test_tiny_random_ctc_model_aligns_every_word(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = {"<pad>": 0, "|": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")}}
    cfg = transformers.Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=37, conv_dim=(16, 16, 16),
                                      conv_stride=(5, 4, 16), conv_kernel=(10, 8, 16), num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, pad_token_id=0, do_stable_layer_norm=True,
                                      feat_extract_norm="layer")
    transformers.Wav2Vec2ForCTC(cfg).save_pretrained(tmp_path / "ctc")
    (tmp_path / "ctc" / "vocab.json").write_text(json.dumps(vocab))
    aligner = CTCAligner(tmp_path / "ctc")
    assert aligner.frame_rate == 50.0
    t = np.arange(32000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    words = aligner.align(wave, "The cat's hat, on a mat.", where="u1")
    assert [w.word for w in words] == ["The", "cat's", "hat,", "on", "a", "mat."]
    assert all(w.start < w.end for w in words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:], strict=False))
    assert 0 <= words[0].start and words[-1].end <= 2.0 + 1e-6
    with pytest.raises(InputError, match=r"u2: word 0 '42' has characters \['2', '4'\]"):
        aligner.align(wave, "42 cats", where="u2")
    with pytest.raises(InputError, match="vocab.json: missing"):
        (tmp_path / "ctc" / "vocab.json").unlink()
        CTCAligner(tmp_path / "ctc")


def test_align_command_writes_what_prepare_reads(tmp_path, bpe_tokenizer_file, capsys):
    transformers = pytest.importorskip("transformers")
    import soundfile

    from smoltolk.cli import main
    from smoltolk.data.manifest import SpeechRecord, write_manifest
    from smoltolk.data.prepare import load_prepared

    vocab = {"<pad>": 0, "|": 1, **{c: i + 2 for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")}}
    cfg = transformers.Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=37, conv_dim=(16, 16),
                                      conv_stride=(16, 20), conv_kernel=(16, 20), num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, pad_token_id=0)
    transformers.Wav2Vec2ForCTC(cfg).save_pretrained(tmp_path / "ctc")
    (tmp_path / "ctc" / "vocab.json").write_text(json.dumps(vocab))
    t = np.arange(24000) / 16000
    soundfile.write(tmp_path / "a.wav", 0.2 * np.sin(2 * np.pi * 300 * t), 16000)
    units = [int(u) for u in np.arange(60) % 500]  # 1.5 s of 40 Hz "units"
    write_manifest(tmp_path / "m.jsonl", [
        SpeechRecord(id="a", audio="a.wav", text="Once upon a time.", units=units, frame_rate=40.0),
        SpeechRecord(id="b", units=[1, 2, 3])])
    args = ["align", str(tmp_path / "m.jsonl"), str(tmp_path / "al"), "--ctc-model", str(tmp_path / "ctc")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "aligned": 1, "kept": 0, "without_audio_or_text": 1}
    assert [w["word"] for w in json.loads((tmp_path / "al" / "a.json").read_text())["words"]] == \
        ["Once", "upon", "a", "time."]
    assert main(args) == 0 and '"kept": 1' in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "m.jsonl"), str(tmp_path / "prep"), "--kind", "speech", "--tokenizer",
                 str(bpe_tokenizer_file), "--alignments", str(tmp_path / "al"), "--workers", "1"]) == 0
    _, shards = load_prepared(tmp_path / "prep")
    assert shards[0].aligned.num_utterances == 1 and shards[0].aligned.num_words == 4
