"""bench/scaling.py at its smallest setting: runs, resumes without redoing work, and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "scaling.py"


def test_scaling_study_smallest_setting_runs_resumes_and_plots(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--quick", "--widths", "32", "--budgets", "4",
           "--extra-seeds", ""]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["model"] for r in rows) == ["baseline", "smoltolk", "smoltolk-no-adapters"]
    for r in rows:
        assert r["flops"] == 6 * r["params"] * r["tokens"] and r["tokens"] == 4 * 4 * 128
        assert 0 <= r["metrics"]["tSC T->S"] <= 1 and r["metrics"]["speech NLL"] > 0
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())  # weights deleted
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert "0 runs to do" in again.stdout
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3
    data = json.loads((tmp_path / "scaling.json").read_text())
    assert len(data["points"]) == 3 and (tmp_path / "scaling.png").stat().st_size > 10_000
