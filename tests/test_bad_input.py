"""Bad bytes in any text input: every reader names the file and the line, and says what it expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smoltolk.errors import SmolTolkError

BAD = b"\xff\xfe\x00"  # not UTF-8 (and not at the start, where it would read as a UTF-16 mark)


def _reader(kind: str, folder: Path):
    """(file to write, its good first line, the call that reads it) per reader."""
    from smoltolk.config import read_mapping
    from smoltolk.data.alignments import read_alignment_json, read_ctm, read_textgrid
    from smoltolk.data.manifest import read_speech_manifest, read_text_manifest
    from smoltolk.eval.diagnostics import LexicalCloze
    from smoltolk.eval.tasks import read_gold, read_mmlu
    from smoltolk.eval.units import load_unit_source
    from smoltolk.generate import read_units

    cases = {
        "speech-manifest": ("m.jsonl", b'{"id": "a", "units": [1, 2]}', read_speech_manifest),
        "text-manifest": ("t.jsonl", b'{"id": "a", "text": "hi"}', read_text_manifest),
        "textgrid": ("a.TextGrid", b'File type = "ooTextFile"', read_textgrid),
        "ctm": ("a.ctm", b"u1 1 0.10 0.20 hello", read_ctm),
        "alignment-json": ("a.json", b'{"words": []', read_alignment_json),
        "recipe": ("r.yaml", b"run:", read_mapping),
        "gold-csv": ("gold.csv", b"filename,type,subtype,transcription,correct,id,voice",
                     lambda p: read_gold(p, ["filename"])),
        "mmlu-jsonl": ("q.jsonl", b'{"subject": "x", "question": "q", "choices": ["a", "b"], "answer": 0}', read_mmlu),
        "mmlu-csv": ("x_test.csv", b"q,a,b,c,d,A", lambda p: read_mmlu(p.parent)),
        "unit-file": ("u.txt", b"1 2 3", read_units),
        "unit-txt-folder": ("stem.txt", b"1 2 3", lambda p: load_unit_source(p.parent, ["stem"])["stem"]),
        "diagnostics": ("lexical_cloze.jsonl", b'{"id": "a"}', LexicalCloze),
    }
    return cases[kind]


KINDS = ["speech-manifest", "text-manifest", "textgrid", "ctm", "alignment-json", "recipe", "gold-csv", "mmlu-jsonl",
         "mmlu-csv", "unit-file", "unit-txt-folder", "diagnostics"]


@pytest.mark.parametrize("kind", KINDS)
def test_non_utf8_bytes_are_named_by_file_and_line(tmp_path, kind):
    name, first, read = _reader(kind, tmp_path)
    path = tmp_path / name
    path.write_bytes(first + b"\n" + b"caf" + BAD + b"\n")
    with pytest.raises(SmolTolkError, match=rf"{name}:2: not UTF-8 text \(byte 0xff at offset \d+\); expected UTF-8"):
        read(path)


def test_the_cli_answers_bad_bytes_in_one_line_without_a_traceback(tmp_path, bpe_tokenizer_file):
    manifest = tmp_path / "t.jsonl"
    manifest.write_bytes(b'{"id": "a", "text": "hi"}\n{"id": "b", "text": "caf' + BAD + b'"}\n')
    out = tmp_path / "shards"
    result = subprocess.run([sys.executable, "-m", "smoltolk.cli", "prepare", str(manifest), str(out), "--kind", "text",
                             "--tokenizer", str(bpe_tokenizer_file)], capture_output=True, text=True)
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert lines[-1].startswith("smoltolk prepare: error:") and "t.jsonl:2: not UTF-8" in lines[-1]
    assert not out.exists() or not any(out.iterdir())  # nothing written


@pytest.mark.parametrize("weights", ["pickle-only", "none"])
@pytest.mark.parametrize("which", ["hubert", "ctc"])
def test_model_folders_without_safetensors_are_refused_in_one_line(tmp_path, which, weights, capsys):
    import json

    transformers = pytest.importorskip("transformers")
    from smoltolk.cli import main

    folder = tmp_path / which
    if which == "hubert":
        cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=37, conv_dim=(32, 32), conv_stride=(5, 4),
                                        conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                        num_conv_pos_embedding_groups=2)
        model = transformers.HubertModel(cfg)
    else:
        vocab = {"<pad>": 0, "|": 1, "a": 2, "b": 3}
        cfg = transformers.Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=37, conv_dim=(32, 32),
                                          conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                          num_conv_pos_embedding_groups=2)
        model = transformers.Wav2Vec2ForCTC(cfg)
    model.save_pretrained(folder)
    if which == "ctc":
        (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "model.safetensors").unlink()
    if weights == "pickle-only":
        import torch

        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "ab"}) + "\n")
    if which == "hubert":
        args = ["tokenize", str(manifest), str(tmp_path / "out"), "--features", f"hubert:{folder}", "--kmeans",
                str(tmp_path / "km.npy"), "--layer", "1"]
    else:
        args = ["align", str(manifest), str(tmp_path / "out.jsonl"), "--ctc-model", str(folder)]
    capsys.readouterr()  # (what saving the model printed)
    assert main(args) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "no model.safetensors" in err[0]
    assert ("pytorch_model.bin" in err[0] and "pickle" in err[0]) == (weights == "pickle-only")


@pytest.mark.parametrize("args, option", [
    (["tiny-run", "--steps", "-1"], "--steps"),
    (["synth-data", "OUT", "--utterances", "0"], "--utterances"),
    (["prepare", "M", "OUT", "--kind", "text", "--tokenizer", "T", "--shard-size", "0"], "--shard-size"),
    (["prepare", "M", "OUT", "--kind", "text", "--tokenizer", "T", "--workers", "-2"], "--workers"),
    (["generate", "C", "--text", "x", "--to", "text", "--top-p", "0"], "--top-p"),
    (["generate", "C", "--text", "x", "--to", "text", "--temperature", "-1"], "--temperature"),
    (["tokenize", "M", "OUT", "--features", "logmel", "--kmeans", "K", "--batch-size", "0"], "--batch-size"),
])
def test_numeric_options_out_of_range_are_refused_before_any_work(tmp_path, capsys, args, option):
    from smoltolk.cli import main

    args = [str(tmp_path / a) if a in ("OUT", "M", "T", "C", "K") else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected" in err and "Traceback" not in err
    assert not (tmp_path / "OUT").exists()


@pytest.mark.parametrize("override, name", [("run.checkpoint_every=-1", "run.checkpoint_every"),
                                            ("run.log_every=0", "run.log_every"),
                                            ("optim.grad_clip=-1", "optim.grad_clip"),
                                            ("optim.betas=[0.9, 1.5]", "optim.betas"),
                                            ("validation.batches=0", "validation.batches")])
def test_config_fields_out_of_range_are_named(tmp_path, capsys, override, name):
    from smoltolk.cli import main

    (tmp_path / "r.yaml").write_text(f"run: {{out_dir: {tmp_path / 'run'}}}\n")
    assert main(["train", str(tmp_path / "r.yaml"), "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and not (tmp_path / "run").exists()


def test_outputs_are_checked_before_work_and_never_left_partial(tmp_path, capsys, monkeypatch):
    from smoltolk.cli import main

    # generate: a missing folder is refused before the model is even read
    assert main(["generate", str(tmp_path / "no-model"), "--text", "x", "--to", "text",
                 "--out", str(tmp_path / "missing" / "out.txt")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "does not exist" in err and "no-model" not in err
    # synth-data onto a file: one line; a failing run leaves no half-written folder
    (tmp_path / "file").write_text("x")
    assert main(["synth-data", str(tmp_path / "file"), "--utterances", "3", "--documents", "3"]) == 2
    assert "is a file" in capsys.readouterr().err

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("smoltolk.data.synthetic.prepare", fail)
    assert main(["synth-data", str(tmp_path / "corpus"), "--utterances", "3", "--documents", "3"]) == 2
    assert "No space left on device" in capsys.readouterr().err and not (tmp_path / "corpus").exists()


def test_messages_name_the_manifest_line_and_the_real_audio_problem(tmp_path, bpe_tokenizer_file, monkeypatch):
    import json
    import os

    import numpy as np
    import soundfile as sf

    from smoltolk.data.audio import read_audio
    from smoltolk.data.prepare import PrepareSettings, prepare

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({"id": f"u{i}", "units": [1, 2, 700 if i == 2 else 3]})
                                  for i in range(4)) + "\n")
    with pytest.raises(SmolTolkError, match=r"m.jsonl:3 \(id 'u2'\): unit 700 is outside \[0, 500\)"):
        prepare(manifest, tmp_path / "out", "speech", PrepareSettings(str(bpe_tokenizer_file), text_eos_id=0,
                                                                      shard_size=10, workers=1), progress=False)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(160, dtype=np.float32), 16000)
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # as an unprivileged user without read permission
    with pytest.raises(SmolTolkError, match="a.wav: not readable"):
        read_audio(wav)


def test_a_yaml_syntax_error_names_the_file(tmp_path):
    from smoltolk.config import read_mapping

    (tmp_path / "r.yaml").write_text("run:\n  out_dir: [unclosed\n")
    with pytest.raises(SmolTolkError) as err:
        read_mapping(tmp_path / "r.yaml")
    assert "<unicode string>" not in str(err.value) and str(err.value).count("r.yaml") >= 2
