"""bench/scaling.py at its smallest setting: runs, resumes without redoing work, and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "scaling.py"


@pytest.mark.slow
def test_scaling_study_smallest_setting_runs_resumes_and_plots(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--quick", "--widths", "32", "--budgets", "4",
           "--extra-seeds", "", "--curve-every", "2", "--keep-models"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["model"] for r in rows) == ["baseline", "smoltolk", "smoltolk-no-adapters"]
    for r in rows:
        assert r["flops"] == 6 * r["params"] * r["tokens"] and r["tokens"] == 4 * 4 * 128
        items = r["results"]["tstorycloze_xmodal"]["items"]  # a share of the items, ties counted half
        assert abs(2 * r["metrics"]["tSC T->S"] * items - round(2 * r["metrics"]["tSC T->S"] * items)) < 1e-6
        assert r["metrics"]["speech NLL"] > 0
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())  # work space deleted
    for r in rows:  # --keep-models kept the weights, --curve-every the learning curves (scored at steps 2, 4)
        assert (tmp_path / "models" / r["key"] / "model.safetensors").is_file()
        curve = [json.loads(x) for x in (tmp_path / "curves" / f"{r['key']}.jsonl").read_text().splitlines()]
        scored = [c["step"] for c in curve if "val/tstorycloze_xmodal/settings/T->S/accuracy" in c]
        assert scored == [2, 4] and "val/word_translation/settings/S->T/accuracy" in curve[-1]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert "0 runs to do" in again.stdout
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3
    data = json.loads((tmp_path / "scaling.json").read_text())
    assert len(data["points"]) == 3 and (tmp_path / "scaling.png").stat().st_size > 10_000
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    for r in rows:  # tStoryCloze calibrated and split by what tells the endings apart
        xm = r["results"]["tstorycloze_xmodal"]
        calibrated = xm["settings"]["T->S"]["calibrated"]["accuracy"] * xm["items"]
        assert 0 <= calibrated <= xm["items"] and abs(2 * calibrated - round(2 * calibrated)) < 1e-6
        assert sum(c["stories"] for c in xm["by_cue"]["S->T"].values()) == xm["items"]
    # --reevaluate scores the kept models again (here: the same evaluation, so the same results)
    (tmp_path / "results.jsonl").write_text("".join(
        json.dumps({**r, "results": {}, "metrics": {}}) + "\n" for r in rows))
    redo = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--reevaluate"], capture_output=True,
                          text=True, timeout=600)
    assert redo.returncode == 0, redo.stderr[-2000:]
    again = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["metrics"] for r in again] == [r["metrics"] for r in rows]


def test_seed_table_gives_mean_and_range_per_model(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("scaling", SCRIPT)
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)

    def row(model, seed, held, heard):
        xm = {"tstorycloze_xmodal": {"settings": {"T->S": {"accuracy": held}, "S->T": {"accuracy": held}}}}
        hx = {"tstorycloze_xmodal": {"settings": {"T->S": {"accuracy": heard}, "S->T": {"accuracy": heard}}}}
        return {"key": f"{model}-{seed}", "width": 8, "steps": 4, "model": model, "seed": seed,
                "results": {**xm, "heard": hx}}

    rows = [row("smoltolk", 0, 0.5, 0.6), row("smoltolk", 1, 0.6, 0.8), row("baseline", 0, 0.5, 0.5)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = scaling.seed_table(tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("| smoltolk")]
    assert len(lines) == 1 and "| 0,1 | 55.0 (50-60) | 55.0 (50-60) | - | - | 70.0 (60-80) |" in lines[0]
    assert "baseline" not in text  # one seed: not in the table
    data = json.loads((tmp_path / "seeds.json").read_text())
    assert data[0]["heard tSC T→S"] == {"mean": 0.7, "min": 0.6, "max": 0.8, "n": 2}
