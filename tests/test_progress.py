"""Progress reporting: redrawn bars on a terminal only; plain lines, now and then, anywhere else."""

from __future__ import annotations

import io

import pytest

from smoltolk import progress
from smoltolk.progress import Lines, mode, progress_bar


def test_lines_write_one_plain_line_per_interval_and_one_at_the_end():
    out = io.StringIO()
    bar = Lines(total=4, desc="train smoltolk", unit="step", seconds=0.0, file=out)
    bar.set_postfix(loss="1.234", stage=2, skipped=None)
    for _ in range(4):
        bar.update()
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 5  # every update (interval 0) and the close
    assert lines[0].startswith("train smoltolk: 1/4 step (25%), ") and lines[0].endswith("loss 1.234, stage 2")
    assert lines[-1].startswith("train smoltolk: 4/4 step (100%)") and "left" not in lines[-1]
    assert "left" in lines[1]  # an estimate while work remains


def test_lines_stay_quiet_within_an_interval_and_for_short_work():
    out = io.StringIO()
    with Lines(total=1000, desc="score", seconds=3600.0, file=out) as bar:
        for _ in range(1000):
            bar.update()
    assert out.getvalue() == ""  # under MIN_SECONDS and no interval passed: nothing to report
    out = io.StringIO()
    items = list(Lines(range(3), desc="convert", seconds=0.0, file=out))
    assert items == [0, 1, 2] and out.getvalue().count("\n") == 4 and "3/3 it (100%)" in out.getvalue()


def test_mode_follows_the_terminal_unless_forced(monkeypatch):
    monkeypatch.delenv("SMOLTOLK_PROGRESS", raising=False)
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())  # no terminal
    assert mode() == "lines" and isinstance(progress_bar(total=3), Lines)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(progress.sys, "stderr", Terminal())
    assert mode() == "bar" and not isinstance(progress_bar(total=3), Lines)
    monkeypatch.setenv("SMOLTOLK_PROGRESS", "off")
    bar = progress_bar(total=3)
    assert bar.disable
    monkeypatch.setenv("SMOLTOLK_PROGRESS", "lines")
    assert isinstance(progress_bar(total=3), Lines)
    monkeypatch.setenv("SMOLTOLK_PROGRESS", "loud")
    with pytest.raises(ValueError, match="SMOLTOLK_PROGRESS='loud': expected one of bar, lines, off"):
        mode()
    monkeypatch.setenv("SMOLTOLK_PROGRESS", "lines")
    monkeypatch.setenv("SMOLTOLK_PROGRESS_SECONDS", "soon")
    with pytest.raises(ValueError, match="SMOLTOLK_PROGRESS_SECONDS='soon'"):
        progress_bar(total=3)
