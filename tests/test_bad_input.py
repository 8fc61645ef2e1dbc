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
