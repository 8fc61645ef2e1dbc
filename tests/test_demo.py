"""The mini-world demo's --quick run: every artefact and a well-formed table."""

from __future__ import annotations

import json

from smoltolk.cli import main
from smoltolk.demo import MODELS
from smoltolk.eval.report import CROSS_MODAL_S, MISSING, TABLE1_COLUMNS


def test_quick_demo_produces_every_artefact(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    for path in ("world/world.json", "world/tokenizer.json", "data/text/index.json", "data/speech/index.json",
                 "models/backbone/config.json", "models/backbone/tokenizer.json", "models/baseline/model.safetensors",
                 "models/smoltolk/model.safetensors", "models/smoltolk-no-adapters/model.safetensors",
                 "eval/held_out/results.md", "eval/heard/results.json",
                 "report.md", "summary.json"):
        assert (out / path).is_file(), path
    assert list((out / "analysis").rglob("*.png"))
    report = (out / "report.md").read_text()
    table = report.split("### Where transfer fails")[0]
    rows = [line for line in table.splitlines() if line.startswith("| held_out") or line.startswith("| heard")]
    assert len(rows) == 2 * len(MODELS) == 6
    assert {row.split("|")[2].strip() for row in rows} == set(MODELS)
    for row in rows:  # the eval report's Table 1, with the split and speech NLL columns
        cells = [c.strip().rstrip(CROSS_MODAL_S) for c in row.strip("|").split("|")]
        assert len(cells) == 2 + len(TABLE1_COLUMNS) + 1
        assert all(c == MISSING or 0 <= float(c) <= 100 for c in cells[2:-1])
        assert sum(c != MISSING for c in cells[2:-1]) >= len(TABLE1_COLUMNS) - 1
        assert float(cells[-1]) > 0  # speech NLL
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"held_out", "heard"}
    for split in ("held_out", "heard"):  # the diagnostics ran on every model, in every setting
        for name in MODELS:
            res = summary["results"][split][name]
            assert set(res["lexical_cloze"]["settings"]) == {"T", "S", "T->S", "S->T", "t", "t->S"}
            assert all(0 <= v["calibrated"]["accuracy"] <= 1 for v in res["lexical_cloze"]["settings"].values())
            assert set(res["word_translation"]["settings"]) == {"S->T", "T->S", "S->T echo", "T->S echo"}
            assert all(v["nats"] == v["nats"] for v in res["speaker_context"]["effects"].values())
            xm = res["tstorycloze_xmodal"]  # calibrated, and split by what tells the endings apart
            assert all(0 <= xm["settings"][s]["calibrated"]["accuracy"] <= 1 for s in ("T->S", "S->T"))
            assert sum(cell["stories"] for cell in xm["by_cue"]["T->S"].values()) == xm["items"]
    rows = [json.loads(x) for x in (out / "runs" / "smoltolk" / "metrics.jsonl").read_text().splitlines()]
    curve = [r["val/lexical_cloze/settings/T->S/calibrated/accuracy"] for r in rows
             if "val/lexical_cloze/settings/T->S/calibrated/accuracy" in r]
    assert len(curve) >= 3 and all(0 <= v <= 1 for v in curve)  # a learning curve of the cross-modal cloze
    assert report.count("| held_out |") == len(MODELS)
    speech = [s for s in summary["samples"] if s["to"] == "speech"]  # read back as words, said when possible
    assert len(speech) == 3 and all("words" in s and s["phoneme_edits"] >= 0 for s in speech)
    assert sum(line.startswith("- to speech:") for line in report.splitlines()) == 3
    import shutil

    if shutil.which("espeak-ng"):
        wavs = [s["wav"] for s in speech if "wav" in s]
        assert wavs and all((out / w).stat().st_size > 1000 and f"]({w})" in report for w in wavs)
    assert "## What this run showed" in report and "- Cross-modal transfer" in report
    calibrated = report.split("### Cross-modal tStoryCloze, calibrated")[1].split("\n\n")[2].splitlines()
    assert len(calibrated) == 2 + 2 * len(MODELS) and "pairs only the topic tells apart" in report
    figures = [line.split("(")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(figures) >= 4 and all((out / f).is_file() for f in figures)  # every figure linked, and there
    summary_stages = summary["stage_seconds"]
    assert {"world and shards", "text pretraining", "evaluation", "analysis"} <= set(summary_stages)
    for title in ("Lexical cloze", "Word translation", "Context effect, speaker controlled"):
        assert report.count(title) == 2, title  # held-out and heard topics
    assert "R-value" in report and "| split | model |" in capsys.readouterr().out


def test_full_is_the_one_voice_four_thousand_step_regime_and_excludes_quick(tmp_path, capsys):
    from smoltolk.demo import SIZES

    full, default = SIZES["full"], SIZES["default"]
    assert (full.speakers, full.stage1_steps + full.stage2_steps, full.stage1_steps) == (1, 4000, 1000)
    assert (full.width, full.layers, full.context) == (default.width, default.layers, default.context)
    assert main(["demo", "--quick", "--full", "--out", str(tmp_path / "d")]) == 2
    assert "choose one size" in capsys.readouterr().err and not (tmp_path / "d").exists()
