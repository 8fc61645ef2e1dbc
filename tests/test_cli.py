"""The command line: help, presets, inspect, wrap, tiny-run, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

from smoltolk.cli import main
from smoltolk.model.tslm import TextSpeechLM


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "smoltolk.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("tiny-run", "presets", "inspect", "wrap"):
        assert command in out


def test_presets_json(capsys):
    assert main(["presets", "--json"]) == 0
    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["smoltolk-150m"]["speech_params"] > 14e6


def test_wrap_then_inspect(tmp_path, hf_llama_dir, capsys):
    path, _ = hf_llama_dir()
    (path / "tokenizer.json").write_text('{"stand-in": true}')
    assert main(["wrap", str(path), str(tmp_path / "st"), "--set", "speech.pooling=fixed",
                 "--set", "speech.num_units=100"]) == 0
    assert (tmp_path / "st" / "tokenizer.json").read_text() == '{"stand-in": true}'
    model = TextSpeechLM.from_pretrained(tmp_path / "st")
    assert model.config.speech.pooling == "fixed" and model.speech_vocab_size == 102
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "st")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"].startswith("smoltolk") and info["parameters"]["speech"] > 0
    assert main(["inspect", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["num_layers"] == 3
    assert main(["wrap", str(path), str(tmp_path / "bl"), "--baseline"]) == 0
    assert TextSpeechLM.from_pretrained(tmp_path / "bl").config.speech.is_baseline


def test_wrap_rejects_settings_it_cannot_apply(tmp_path, hf_llama_dir, capsys):
    path, _ = hf_llama_dir()
    assert main(["wrap", str(path), str(tmp_path / "st"), "--set", "backbone.rope_theta=5", "--set",
                 "pooling=fixed"]) == 2
    assert "wrap takes only speech.key=value settings" in capsys.readouterr().err
    assert not (tmp_path / "st").exists()


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "smoltolk inspect: error:" in err and "config.json" in err and "Traceback" not in err


def test_tiny_run_shows_the_model_working(tmp_path):
    from conftest import model_terms, tolerance

    from smoltolk.model.tslm import TextSpeechLM
    from smoltolk.tiny_run import tiny_run

    summary = tiny_run(tmp_path / "run", steps=4, seed=0)
    terms = model_terms(TextSpeechLM.from_pretrained(tmp_path / "run" / "smoltolk"), 128)  # the baseline has fewer
    for name in ("smoltolk", "baseline"):
        result = summary["models"][name]
        assert result["last_loss"] < result["first_loss"]
        assert result["cached_vs_full_rel_diff"] <= tolerance(1.0, terms)
        assert result["reload_exact"]
        rows = (tmp_path / "run" / "runs" / name / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == 4 and json.loads(rows[0])["stage"] == 1  # the real trainer's two stages
    assert summary["models"]["baseline"]["speech_params"] < summary["models"]["smoltolk"]["speech_params"]
    assert (tmp_path / "run" / "data" / "speech" / "index.json").is_file()  # synth-data's corpus
    assert (tmp_path / "run" / "backbone" / "config.json").is_file()
    assert (tmp_path / "run" / "smoltolk" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4


def test_settings_are_spelled_set_and_a_bare_setting_is_a_usage_error(tmp_path, capsys, hf_llama_dir):
    path, _ = hf_llama_dir()
    assert main(["wrap", str(path), str(tmp_path / "a"), "--set", "speech.pooling=fixed"]) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["model"]["speech"]["pooling"] == "fixed"
    capsys.readouterr()
    assert main(["wrap", str(path), str(tmp_path / "b"), "speech.pooling=fixed"]) == 2
    assert "unrecognized arguments: speech.pooling=fixed" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_world_command_builds_the_echo_lever(tmp_path):
    """`smoltolk world --carriers echo` reaches the world builder: its carriers say each held-out word twice."""
    assert main(["world", str(tmp_path), "--quick", "--speakers", "1", "--carriers", "echo"]) == 0
    info = json.loads((tmp_path / "world" / "world.json").read_text())
    assert info["carriers"] == "echo" and info["speakers"] == 1
    held = {w for ws in info["split"]["held_out_words"].values() for w in ws}
    lines = [json.loads(x)["text"] for x in (tmp_path / "world" / "speech.jsonl").read_text().splitlines()]
    carriers = [t for t in lines if " went to the " not in t]
    assert carriers and all(sum(w in held for w in t.split()) == 2 for t in carriers)
    assert (tmp_path / "data" / "speech" / "index.json").is_file()
