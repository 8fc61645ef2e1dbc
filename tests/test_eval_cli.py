"""``smoltolk eval`` end to end on tiny models and fixture benchmarks (audio tokenized with LogMel)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import NUM_UNITS, tiny_backbone, tiny_model
from test_eval_tasks import SWUGGY_COLS, write_gold

from smoltolk.cli import main
from smoltolk.model.hf import save_hf_backbone
from smoltolk.model.llama import LlamaLM, init_weights

VOCAB = 400  # the conftest BPE tokenizer's size


@pytest.fixture
def checkpoints(tmp_path, bpe_tokenizer_file):
    model = tiny_model(backbone=tiny_backbone(vocab_size=VOCAB, bos_token_id=0))
    model.save_pretrained(tmp_path / "smoltolk")
    shutil.copy(bpe_tokenizer_file, tmp_path / "smoltolk" / "tokenizer.json")
    torch.manual_seed(1)
    backbone = LlamaLM(tiny_backbone(vocab_size=VOCAB, bos_token_id=0))
    init_weights(backbone, 0.02)
    save_hf_backbone(backbone, tmp_path / "hf", tokenizer_file=bpe_tokenizer_file)
    return tmp_path / "smoltolk", tmp_path / "hf"


def wav(path, seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = np.sin(2 * np.pi * rng.uniform(200, 2000) * t) * (rng.uniform(size=t.size) > 0.3)
    sf.write(path, (0.3 * tone).astype(np.float32), 16000)


@pytest.fixture
def benchmarks(tmp_path):
    root = tmp_path / "bench"
    # sWUGGY with pre-computed units keyed by wav stem
    rows = [{"id": i, "filename": f"{kind}{i}_{v}", "voice": v, "frequency": 3 if kind == "w" else "", "word": "x",
             "phones": "x", "length": 1, "correct": int(kind == "w")}
            for i in (1, 2) for v in ("A", "B") for kind in ("w", "nw")]
    lexical = write_gold(root / "lexical" / "dev", SWUGGY_COLS, rows)
    rng = np.random.default_rng(0)
    units = root / "lexical_units.jsonl"
    units.write_text("".join(json.dumps({"id": r["filename"], "units": rng.integers(0, NUM_UNITS, 6).tolist()}) + "\n"
                             for r in rows))
    # sStoryCloze as audio
    ssc = root / "sSC"
    ssc.mkdir()
    for k in range(3):
        wav(ssc / f"{2 * k}_st{k}_correct.wav", 0.4, 2 * k)
        wav(ssc / f"{2 * k + 1}_st{k}_incorrect.wav", 0.3, 2 * k + 1)
    # cross-modal tStoryCloze: text and audio
    xsc = root / "tSC_xmodal"
    xsc.mkdir()
    for b in ("a", "b"):
        for part, text in (("mutual", "the cat sat on the mat"), ("correct", "a dog ran"), ("incorrect", "the fox")):
            (xsc / f"{b}_{part}.txt").write_text(text + "\n")
            wav(xsc / f"{b}_{part}.wav", 0.3, hash((b, part)) % 100)
    mmlu = root / "mmlu.jsonl"
    mmlu.write_text("".join(json.dumps({"subject": "world_facts", "question": f"Where is the cat {k}?",
                                        "choices": ["on the mat", "a dog", "the fox", "Hello"], "answer": k % 4})
                            + "\n" for k in range(5)))
    nll = root / "dev.jsonl"
    nll.write_text("".join(json.dumps({"id": f"u{k}", "units": rng.integers(0, NUM_UNITS, 9).tolist()}) + "\n"
                           for k in range(4)))
    centroids = root / "km.npy"
    np.save(centroids, np.random.default_rng(1).normal(size=(NUM_UNITS, 80)).astype(np.float32))
    return {"swuggy": lexical, "units": units, "sstorycloze": ssc, "tstorycloze_xmodal": xsc, "mmlu": mmlu,
            "speech_nll": nll, "centroids": centroids}


def test_eval_writes_results_table_and_submissions(tmp_path, checkpoints, benchmarks, capsys):
    st, _ = checkpoints
    b = benchmarks
    out = tmp_path / "out"
    args = ["eval", str(st), "--out", str(out), "--tasks", f"swuggy={b['swuggy']}", f"sstorycloze={b['sstorycloze']}",
            f"tstorycloze_xmodal={b['tstorycloze_xmodal']}", f"mmlu={b['mmlu']}", f"speech_nll={b['speech_nll']}",
            "--set", f"tasks.swuggy.units={b['units']}", "--speech-tokenizer", "logmel:25", str(b["centroids"]),
            "--batch-tokens", "256"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| Model | BLIMP T | BLIMP S | tSC T |" in printed
    summary = json.loads((out / "results.json").read_text())
    r = summary["checkpoints"][0]["results"]
    assert set(r) == {"swuggy", "sstorycloze", "tstorycloze_xmodal", "mmlu", "speech_nll"}
    assert set(r["tstorycloze_xmodal"]["settings"]) == {"T", "S", "T->S", "S->T"}
    assert 0 <= r["mmlu"]["acc_norm"] <= 1 and r["speech_nll"]["nll"] > 0
    assert "mean log-prob" in summary["scoring"]["swuggy"]
    lines = (out / "smoltolk" / "zerospeech" / "lexical" / "dev.txt").read_text().splitlines()
    assert len(lines) == 8 and lines[0].split()[0] == "w1_A" and float(lines[0].split()[1]) < 0
    assert (out / "units" / "sstorycloze" / "units.jsonl").is_file()  # made by the speech tokenizer
    assert len((out / "smoltolk" / "scores" / "mmlu.jsonl").read_text().splitlines()) == 20
    config = json.loads((out / "eval_config.json").read_text())
    assert config["config"]["tasks"]["swuggy"]["units"] == str(b["units"])
    assert config["config"]["speech_tokenizer"]["features"] == "logmel:25"
    assert main(args) == 0  # a re-run reuses the tokenized units
    again = json.loads((out / "results.json").read_text())["checkpoints"][0]["results"]
    assert again["sstorycloze"]["accuracy"] == r["sstorycloze"]["accuracy"]


def test_eval_text_tasks_side_by_side_with_the_backbone(tmp_path, checkpoints, benchmarks):
    st, hf = checkpoints
    out = tmp_path / "out"
    assert main(["eval", str(st), str(hf), "--out", str(out), "--tasks", f"mmlu={benchmarks['mmlu']}",
                 f"tstorycloze_xmodal={benchmarks['tstorycloze_xmodal']}", "--set",
                 "tasks.tstorycloze_xmodal.settings=[T]"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert [c["kind"] for c in summary["checkpoints"]] == ["smoltolk", "hf"]
    table = (out / "results.md").read_text()
    assert "| smoltolk |" in table and "| hf |" in table


def test_eval_refuses_speech_tasks_on_a_text_backbone(tmp_path, checkpoints, benchmarks, capsys):
    _, hf = checkpoints
    assert main(["eval", str(hf), "--out", str(tmp_path / "o"), "--tasks", f"swuggy={benchmarks['swuggy']}"]) == 2
    err = capsys.readouterr().err
    assert "no speech modules" in err and "swuggy" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_eval_input_errors_exit_2(tmp_path, checkpoints, benchmarks, capsys):
    st, _ = checkpoints
    assert main(["eval", str(st), "--out", str(tmp_path / "o"), "--tasks", f"swuggy={tmp_path / 'none'}"]) == 2
    assert "gold.csv: missing" in capsys.readouterr().err
    assert main(["eval", str(st), "--out", str(tmp_path / "o"), "--tasks", "wuggy=x"]) == 2
    assert "unknown task 'wuggy'" in capsys.readouterr().err
    assert main(["eval", str(st), "--out", str(tmp_path / "o"), "--tasks", f"swuggy={benchmarks['swuggy']}"]) == 2
    assert "--speech-tokenizer" in capsys.readouterr().err  # wavs but no way to make units


def test_eval_stopped_by_sigterm_exits_75_in_one_line_and_leaves_no_results(tmp_path, checkpoints, benchmarks, capsys,
                                                                            monkeypatch):
    import os
    import signal

    from smoltolk.eval.scorer import LikelihoodScorer
    from smoltolk.preempt import EXIT_PREEMPTED

    real, calls = LikelihoodScorer.score, {"n": 0}

    def signalled(self, items):
        calls["n"] += 1
        if calls["n"] == 2:  # the second task: the first one's scores are computed, nothing is written yet
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, items)

    monkeypatch.setattr(LikelihoodScorer, "score", signalled)
    st, _ = checkpoints
    out = tmp_path / "out"
    code = main(["eval", str(st), "--out", str(out), "--tasks", f"mmlu={benchmarks['mmlu']}",
                 f"speech_nll={benchmarks['speech_nll']}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_PREEMPTED and err == ["smoltolk eval: stopped by SIGTERM (what it writes is written whole or "
                                              "not at all)"]
    assert not (out / "results.json").exists() and not (out / "results.md").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the command


def _salmon_folder(root, parts=("speaker_consistency", "my_part"), samples=3, options=2):
    for p, part in enumerate(parts):
        (root / part).mkdir(parents=True)
        for i in range(samples):
            for k in range(options):
                wav(root / part / f"sample_{i}_{k}.wav", 0.2 + 0.05 * k, 100 * p + 10 * i + k)
    return root


def test_eval_scores_a_salmon_layout_folder_per_part_and_the_mean(tmp_path, checkpoints, benchmarks, capsys):
    st, _ = checkpoints
    root = _salmon_folder(tmp_path / "salmon")
    out = tmp_path / "out"
    assert main(["eval", str(st), "--out", str(out), "--tasks", f"salmon={root}", "--speech-tokenizer", "logmel:25",
                 str(benchmarks["centroids"])]) == 0
    r = json.loads((out / "results.json").read_text())["checkpoints"][0]["results"]["salmon"]
    assert list(r["parts"]) == ["my_part", "speaker_consistency"] and r["samples"] == 6
    rows = [json.loads(x) for x in (out / "smoltolk" / "scores" / "salmon.jsonl").read_text().splitlines()]
    logprob = {row["item"]: row["logprob"] for row in rows}
    for part, res in r["parts"].items():  # the positive (option 0) against the negative, whole-recording sums
        wins = [float(logprob[f"{part}/sample_{i}_0"] > logprob[f"{part}/sample_{i}_1"]) for i in range(3)]
        assert res == {"accuracy": pytest.approx(sum(wins) / 3), "samples": 3}
    assert r["accuracy"] == pytest.approx((r["parts"]["my_part"]["accuracy"]
                                           + r["parts"]["speaker_consistency"]["accuracy"]) / 2)
    table = (out / "results.md").read_text().split("**SALMon**")[1]
    assert "| Model | Speaker | my_part | mean |" in table
    (root / "my_part" / "sample_2_0.wav").unlink()  # a sample without its positive
    assert main(["eval", str(st), "--out", str(tmp_path / "o2"), "--tasks", f"salmon={root}"]) == 2
    err = capsys.readouterr().err
    assert "my_part: sample 2 has options [1]; expected 0 (the positive)" in err and "Traceback" not in err
    (root / "my_part" / "odd.wav").write_bytes(b"")
    assert main(["eval", str(st), "--out", str(tmp_path / "o3"), "--tasks", f"salmon={root}"]) == 2
    assert "odd.wav: name not of the form sample_{i}_{k}.wav" in capsys.readouterr().err
