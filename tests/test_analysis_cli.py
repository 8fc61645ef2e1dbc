"""What the analyses read from the model, and ``smoltolk analyze`` end to end on tiny checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import NUM_UNITS, assert_close, differs, mixed_batch, model_terms, tiny_backbone, tiny_model

from smoltolk.analysis.representations import AlignedUtterance, final_representations, layer_weights, read_aligned
from smoltolk.cli import main
from smoltolk.errors import ConfigError

VOCAB = 400
WORDS = "the cat sat on a mat and dog ran to fox once upon time there was little".split()


@pytest.mark.parametrize("variant", ["smoltolk", "baseline", "no-input-adapter"])
def test_hidden_states_are_the_backbone_input_and_its_layers(variant):
    model = tiny_model(variant)
    ids, speech = mixed_batch()
    with torch.no_grad():
        plain = model(ids, speech, logits="all")
        out = model(ids, speech, logits="all", return_hidden_states=True)
    hidden = out.hidden_states
    assert len(hidden) == model.config.backbone.num_layers + 1
    assert torch.equal(out.text_logits, plain.text_logits) and torch.equal(out.speech_logits, plain.speech_logits)
    terms = model_terms(model, ids.shape[1])
    assert_close(model.text_head(hidden[-1]), out.text_logits, terms=terms)  # last: after the norm
    z = model.embed(ids, speech)
    text_pos = ~speech
    assert torch.equal(hidden[0][text_pos], z[text_pos])  # text positions enter the backbone as embedded
    if variant == "smoltolk":
        assert differs(hidden[0][speech], z[speech], terms=terms)  # speech went through the input adapter
    assert model(ids, speech, logits="none").hidden_states is None


def aligned_manifest(path, n_utts=6, n_words=24, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_utts):
        units, durations, words, frame = [], [], [], 0
        for _ in range(n_words):
            start = frame / 25
            for _ in range(rng.integers(2, 5)):
                u = int(rng.integers(0, NUM_UNITS))
                if units and u == units[-1]:
                    u = (u + 1) % NUM_UNITS
                units.append(u)
                durations.append(int(rng.integers(1, 3)))
                frame += durations[-1]
            words.append({"word": str(rng.choice(WORDS)), "start": start, "end": frame / 25})
        rows.append({"id": f"utt{k}", "units": units, "durations": durations, "frame_rate": 25.0, "words": words})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_aligned_places_words_on_units(tmp_path):
    utts = read_aligned(aligned_manifest(tmp_path / "a.jsonl", n_utts=1, n_words=3))
    u = utts[0]
    assert len(u.word_ends) == 3 and u.word_ends[-1] == len(u.units) and np.all(np.diff(u.word_ends) > 0)
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "x", "units": [1, 2]}) + "\n")
    with pytest.raises(Exception, match="needs 'units' and 'words'"):
        read_aligned(tmp_path / "b.jsonl")


def test_layer_weights_and_final_representations_batched():
    model = tiny_model()
    utts = [AlignedUtterance(f"u{k}", np.arange(n) % NUM_UNITS, np.array([n]), ["w"]) for k, n in enumerate((5, 9))]
    w = layer_weights(model, utts, batch_tokens=4)
    assert [x.shape for x in w] == [(6, 3), (10, 3)]
    assert_close(w[1].sum(1), np.ones(10, dtype=np.float32), terms=3)
    both = layer_weights(model, utts, batch_tokens=1000)
    terms = model_terms(model, 10)
    assert_close(both[0], w[0], terms=terms)
    seqs = [([1, 2, 3], True), ([4, 5, 6, 7, 8], False)]
    reps = final_representations(model, seqs, batch_tokens=1000)
    alone = final_representations(model, seqs[1:], batch_tokens=1)
    assert reps.shape == (4, 2, 32)
    assert_close(reps[:, 1], alone[:, 0], terms=terms)
    with pytest.raises(ConfigError, match="dynamic layer pooling"):
        layer_weights(tiny_model("no-dynamic-pooling"), utts)


@pytest.fixture
def analysis_inputs(tmp_path, bpe_tokenizer_file):
    def save(name, variant):
        model = tiny_model(variant, backbone=tiny_backbone(vocab_size=VOCAB))
        model.save_pretrained(tmp_path / name)
        shutil.copy(bpe_tokenizer_file, tmp_path / name / "tokenizer.json")
        return tmp_path / name

    return {"smoltolk": save("smoltolk", "smoltolk"), "fixed": save("fixed", "no-dynamic-pooling"),
            "speech": aligned_manifest(tmp_path / "aligned.jsonl"), "tmp": tmp_path}


SMALL = ["--num-samples", "24", "--num-batches", "2", "--set", "gride_range_max=8", "--set", "overlap_k=4",
         "--set", "plot_utterances=1"]


def test_analyze_writes_json_and_figures(analysis_inputs, capsys):
    a = analysis_inputs
    out = a["tmp"] / "out"
    assert main(["analyze", str(a["smoltolk"]), "--speech", str(a["speech"]), "--out", str(out), *SMALL]) == 0
    assert "segmentation (test) P" in capsys.readouterr().out
    result = json.loads((out / "smoltolk" / "analysis.json").read_text())
    lw = result["layer_weights"]
    assert len(lw["phi_softmax"]) == 3
    assert_close(sum(lw["phi_softmax"]), 1.0, terms=3)
    seg = result["segmentation"]
    assert seg["prominence"] in [round(0.01 * k, 2) for k in range(1, 16)]
    assert set(seg["test"]) >= {"precision", "recall", "f1", "r_value"} and seg["tolerance"] == 1
    ids = result["intrinsic_dimension"]
    assert len(ids["text"]["mean"]) == 4 and all(np.isfinite(ids["speech"]["mean"]))
    ov = result["subspace_overlap"]
    assert all(0 <= v <= 1 + 1e-9 for v in ov["speech_on_text"]["mean"]) and ov["random_floor"] == 4 / 32
    for png in ("layer_weights_utt0.png", "layer_weight_distribution.png", "phi.png", "segmentation_example.png",
                "intrinsic_dimension.png", "subspace_overlap.png"):
        assert (out / "smoltolk" / png).stat().st_size > 1000, png
    assert json.loads((out / "analysis_config.json").read_text())["config"]["num_samples"] == 24


def test_analyze_compares_checkpoints_without_dynamic_pooling_when_asked(analysis_inputs):
    a = analysis_inputs
    out = a["tmp"] / "cmp"
    assert main(["analyze", str(a["smoltolk"]), str(a["fixed"]), "--speech", str(a["speech"]), "--out", str(out),
                 "--analyses", "intrinsic-dim", "overlap", *SMALL]) == 0
    assert (out / "intrinsic_dimension.png").is_file() and (out / "subspace_overlap.png").is_file()
    assert set(json.loads((out / "analysis.json").read_text())) == {"smoltolk", "fixed"}


def test_analyze_errors_exit_2(analysis_inputs, tmp_path, hf_llama_dir, capsys):
    a = analysis_inputs
    assert main(["analyze", str(a["fixed"]), "--speech", str(a["speech"]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "need(s) dynamic layer pooling" in err and "--analyses intrinsic-dim overlap" in err
    hf, _ = hf_llama_dir()
    assert main(["analyze", str(hf), "--speech", str(a["speech"]), "--out", str(tmp_path / "o")]) == 2
    assert "no speech modules" in capsys.readouterr().err
    assert main(["analyze", str(a["smoltolk"]), "--out", str(tmp_path / "o")]) == 2
    assert "--speech MANIFEST" in capsys.readouterr().err
    assert main(["analyze", str(a["smoltolk"]), "--speech", str(a["speech"]), "--out", str(tmp_path / "o"),
                 "--analyses", "pca"]) == 2
    assert "expected some of" in capsys.readouterr().err




def test_paired_retrieval_known_answers():
    from smoltolk.analysis.overlap import paired_retrieval
    from smoltolk.errors import InputError

    x = np.random.default_rng(0).standard_normal((12, 16))
    same = paired_retrieval(x, 3 * x + 1)  # centring and cosine ignore shifts and scale
    assert same["speech_to_text"] == same["text_to_speech"] == 1.0 and same["pair_margin"] > 0.5
    shifted = paired_retrieval(x, np.roll(x, 1, axis=0))  # every spoken word nearest another word's text
    assert shifted["speech_to_text"] == shifted["text_to_speech"] == 0.0 and shifted["chance"] == 1 / 12
    with pytest.raises(InputError, match="one shape"):
        paired_retrieval(x, x[:, :4])


def test_analyze_word_alignment_per_layer_without_a_speech_manifest(analysis_inputs, capsys):
    a = analysis_inputs
    words = a["tmp"] / "held_out" / "word_translation.jsonl"
    words.parent.mkdir()
    rng = np.random.default_rng(0)
    words.write_text("".join(json.dumps({"word": w, "units": rng.integers(0, NUM_UNITS, 4).tolist()}) + "\n"
                             for w in WORDS[:6]))
    out = a["tmp"] / "wa"
    assert main(["analyze", str(a["smoltolk"]), str(a["fixed"]), "--analyses", "word-alignment", "--words", str(words),
                 "--out", str(out)]) == 0
    assert "word alignment held_out: spoken -> written" in capsys.readouterr().out
    wa = json.loads((out / "smoltolk" / "analysis.json").read_text())["word_alignment"]["held_out"]
    assert wa["words"] == 6 and wa["chance"] == 1 / 6
    assert len(wa["speech_to_text"]) == len(wa["text_to_speech"]) == 4  # backbone input + 3 layers
    assert all(0 <= v <= 1 for v in wa["speech_to_text"] + wa["text_to_speech"])
    assert (out / "smoltolk" / "word_alignment.png").is_file() and (out / "word_alignment.png").is_file()
    # what it reads is checked, naming the file and line
    assert main(["analyze", str(a["smoltolk"]), "--analyses", "word-alignment", "--out", str(out)]) == 2
    assert "--words FILE.jsonl" in capsys.readouterr().err
    words.write_text(json.dumps({"word": "cat", "units": [1]}) + "\n"
                     + json.dumps({"word": "dog", "units": [NUM_UNITS]}))
    assert main(["analyze", str(a["smoltolk"]), "--analyses", "word-alignment", "--words", str(words),
                 "--out", str(out)]) == 2
    assert f"{words}:2: word 'dog'" in capsys.readouterr().err
