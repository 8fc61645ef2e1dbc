"""The mini-world demo's --quick run: every artefact and a well-formed table."""

from __future__ import annotations

import json
import math

import pytest

from smoltolk.cli import main
from smoltolk.demo import MODELS
from smoltolk.eval.report import CROSS_MODAL_S, MISSING, TABLE1_COLUMNS


def a_count(accuracy: float, items: int) -> bool:
    """Whether ``accuracy`` is a share of ``items`` items, ties counted half (what a scorer can produce)."""
    return 0 <= accuracy <= 1 and abs(2 * accuracy * items - round(2 * accuracy * items)) < 1e-6


@pytest.mark.slow
def test_quick_demo_produces_every_artefact(tmp_path, capfd):
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
    table = report.split("Acoustic consistency")[0]
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
            n = res["lexical_cloze"]["items"]
            cloze = res["lexical_cloze"]["settings"].values()
            assert n > 0 and all(a_count(v["calibrated"]["accuracy"], n) for v in cloze)
            assert set(res["word_translation"]["settings"]) == {"S->T", "T->S", "S->T echo", "T->S echo"}
            effects = [v["nats"] for v in res["speaker_context"]["effects"].values()]
            assert effects and all(math.isfinite(e) for e in effects) and any(e != 0 for e in effects)
            xm = res["tstorycloze_xmodal"]  # calibrated, and split by what tells the endings apart
            assert all(a_count(xm["settings"][s]["calibrated"]["accuracy"], xm["items"]) for s in ("T->S", "S->T"))
            assert sum(cell["stories"] for cell in xm["by_cue"]["T->S"].values()) == xm["items"]
    rows = [json.loads(x) for x in (out / "runs" / "smoltolk" / "metrics.jsonl").read_text().splitlines()]
    curve = [r["val/lexical_cloze/settings/T->S/calibrated/accuracy"] for r in rows
             if "val/lexical_cloze/settings/T->S/calibrated/accuracy" in r]
    assert len(curve) >= 3 and all(0 <= v <= 1 for v in curve)  # a learning curve of the cross-modal cloze
    assert report.count("| held_out |") == 2 * len(MODELS)  # Table 1 and the acoustic-consistency table
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
    assert {"world and shards", "text pretraining", "training and evaluation", "analysis",
            *(f"training {name}" for name in MODELS)} <= set(summary_stages)
    for split in ("held_out", "heard"):  # scored model by model, side by side: one summary per split, all models
        merged = json.loads((out / "eval" / split / "results.json").read_text())
        assert [c["name"] for c in merged["checkpoints"]] == list(MODELS)
        assert set(json.loads((out / "eval" / split / "eval_config.json").read_text())["checkpoints"]) == set(MODELS)
        assert all(f"| {name} |" in (out / "eval" / split / "results.md").read_text() for name in MODELS)
    for title in ("Lexical cloze", "Word translation", "Context effect, speaker controlled"):
        assert report.count(title) == 2, title  # held-out and heard topics
    captured = capfd.readouterr()  # the workers' output too (file descriptors, not sys.stderr)
    assert "R-value" in report and "| split | model |" in captured.out
    acoustic = report.split("| split | model | speaker consistency |")[1].split("\n\n")[0].splitlines()[2:]
    assert len(acoustic) == 2 * len(MODELS)  # the acoustic-consistency row of every model, on both splits
    for split in ("held_out", "heard"):
        for name in MODELS:
            salmon = summary["results"][split][name]["salmon"]
            assert salmon["samples"] == 16 and a_count(salmon["parts"]["speaker_consistency"]["accuracy"], 16)
    # stderr is no terminal here: progress comes as plain lines, never redrawn bars
    assert "\r" not in captured.err and len(captured.err) < 50_000


def test_sizes_default_is_the_one_voice_three_thousand_step_regime_full_twice_and_quick_excludes_full(tmp_path, capsys):
    import dataclasses

    from smoltolk.demo import SIZES, size_settings

    full, default = SIZES["full"], SIZES["default"]
    assert (default.speakers, default.stage1_steps + default.stage2_steps, default.stage1_steps) == (1, 3000, 1000)
    assert (full.speakers, full.stage1_steps + full.stage2_steps, full.stage1_steps) == (1, 8000, 2000)
    assert default.stage2_decay_fraction == full.stage2_decay_fraction == 0.0  # constant stage-2 rates, as measured
    cooled = dataclasses.replace(default, stage2_decay_fraction=0.5)  # a size's cool-down reaches the runs only
    assert "optim.stage2_decay_fraction=0.5" in size_settings("smoltolk", cooled)
    assert not any("decay" in o for o in size_settings("text-pretrain", cooled))
    assert (default.width, full.width) == (96, 128)  # each at the width its regime was measured with
    assert (full.layers, full.context) == (default.layers, default.context)
    assert main(["demo", "--quick", "--full", "--out", str(tmp_path / "d")]) == 2
    assert "choose one size" in capsys.readouterr().err and not (tmp_path / "d").exists()


def _summary(seed: int, scores: dict) -> dict:
    """A demo summary with only the headline metrics: scores[split][model] = (tSC T->S, cloze T->S cal.) in %."""
    results = {split: {m: {"tstorycloze_xmodal": {"settings": {"T->S": {"accuracy": t / 100}}},
                           "lexical_cloze": {"settings": {"T->S": {"calibrated": {"accuracy": c / 100}}}}}
                       for m, (t, c) in by_model.items()} for split, by_model in scores.items()}
    return {"seed": seed, "results": results}


def test_verdict_needs_smoltolk_ahead_of_both_others_on_both_measures_in_every_seed():
    from smoltolk.demo_summary import judge, seed_table, verdict

    good = {"heard": {"baseline": (58, 15), "smoltolk": (66, 51), "smoltolk-no-adapters": (58, 19)},
            "held_out": {"baseline": (52, 2), "smoltolk": (52, 1), "smoltolk-no-adapters": (55, 3)}}
    seeds = [_summary(0, good), _summary(1, good)]
    j = judge(seeds, "heard")
    assert j["ahead"] and j["apart"] and j["differences"][("tSC T→S", "baseline")] == pytest.approx([8, 8])
    assert "Heard topics: reproduced" in verdict(seeds, "heard") and "/ 66.0 /" in verdict(seeds, "heard")
    held = judge(seeds, "held_out")
    assert not held["ahead"] and ("tSC T→S", "smoltolk-no-adapters") in held["failed"]
    assert "Held-out topics: not reproduced" in verdict(seeds, "held_out")
    # one seed where -Adapters wins the cloze: no longer ahead in every seed
    worse = {**good, "heard": {**good["heard"], "smoltolk-no-adapters": (58, 60)}}
    mixed = [_summary(0, good), _summary(1, worse)]
    assert judge(mixed, "heard")["failed"] == [("cloze T→S cal.", "smoltolk-no-adapters")]
    # ahead in every seed but overlapping ranges: ahead, not apart
    close = {**good, "heard": {**good["heard"], "baseline": (66.5, 15)}}
    overlap = [_summary(0, good), _summary(1, {**good, "heard": {**good["heard"], "smoltolk": (70, 51)}}),
               _summary(2, {**close, "heard": {**close["heard"], "smoltolk": (67, 51)}})]
    j = judge(overlap, "heard")
    assert j["ahead"] and not j["apart"]
    table = "\n".join(seed_table(seeds))
    assert "| heard topics | SmolTolk − baseline | 8.0 |" in table


def test_seeds_run_each_seed_into_its_folder_resume_and_report_ranges(tmp_path, capsys, monkeypatch):
    import smoltolk.demo as demo

    calls = []
    good = {"heard": {"baseline": (58, 15), "smoltolk": (66, 51), "smoltolk-no-adapters": (58, 19)},
            "held_out": {"baseline": (52, 2), "smoltolk": (52, 1), "smoltolk-no-adapters": (55, 3)}}

    def fake_run_demo(out, seed=0, **options):  # the whole pipeline is test_quick_demo's; here, the seeds
        calls.append((out.name, seed, options["quick"]))
        summary = {**_summary(seed, good), "size_name": "quick", "seconds": 60.0 + seed, "size": {}}
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--seeds", "2", "--seed", "3", "--out", str(out)]) == 0
    assert calls == [("seed-3", 3, True), ("seed-4", 4, True)]
    data = json.loads((out / "seeds.json").read_text())
    assert data["seeds"] == [3, 4] and data["seconds"] == [63.0, 64.0]
    assert data["verdicts"]["heard"]["ahead"] and not data["verdicts"]["held_out"]["ahead"]
    assert data["per_seed"][1]["heard"]["smoltolk"]["tSC T→S"] == pytest.approx(66)
    report = (out / "report.md").read_text()
    assert "Heard topics: reproduced" in report and "Held-out topics: not reproduced" in report
    assert "| heard topics | SmolTolk − baseline | 8.0 |" in report and "1.1 min, 1.1 min" in report
    capsys.readouterr()
    assert main(["demo", "--quick", "--seeds", "3", "--seed", "3", "--out", str(out)]) == 0
    assert calls[2:] == [("seed-5", 5, True)]  # finished seeds are kept, only the new one runs
    assert "seed 3: kept" in capsys.readouterr().out
    assert json.loads((out / "seeds.json").read_text())["seeds"] == [3, 4, 5]


def test_sizes_come_from_the_recipes_yaml_and_bad_sizes_name_the_file(tmp_path):
    from smoltolk.demo import SIZES, SIZES_FILE, load_sizes
    from smoltolk.errors import ConfigError

    assert load_sizes() == SIZES and SIZES_FILE.name == "sizes.yaml"
    text = SIZES_FILE.read_text()
    edited = tmp_path / "sizes.yaml"
    edited.write_text(text.replace("stage2_steps: 2000,", "stage2_steps: 1234,").replace("layers: 4, width: 96",
                                                                                         "layers: 3, width: 96"))
    sizes = load_sizes(edited)  # the YAML is the truth: an edit reaches the default and what starts from it
    assert sizes["default"].stage2_steps == 1234 and sizes["full"].stage2_steps == 6000
    assert sizes["default"].layers == sizes["full"].layers == 3  # inherited through `like`
    assert (sizes["default"].width, sizes["full"].width) == (96, 128)  # a size's own field wins
    for bad, message in (("default: {n_text: 3}\n", "size 'default': .*missing"),
                         ("quick: {like: nothing}\n", "size 'quick': like 'nothing' names no size above it"),
                         ("quick: 3\n", "size 'quick': expected a mapping"),
                         ("quick: [\n", "not valid YAML"),
                         (text.split("# --full")[0], "sizes full missing")):
        edited.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_sizes(edited)
    with pytest.raises(ConfigError, match="sizes.yaml: the demo's sizes are missing"):
        load_sizes(tmp_path / "none" / "sizes.yaml")
