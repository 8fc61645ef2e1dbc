"""Progress on long work: a redrawn bar on a terminal, one plain line now and then in a log file.

Every command's progress goes through :func:`progress_bar`. On a terminal it is a tqdm bar. When stderr is not a
terminal (a log file, a pipe, a batch job) a redrawn bar would write its whole history with carriage returns,
so it becomes a :class:`Lines` instead: one line every ``SMOLTOLK_PROGRESS_SECONDS`` (default 30) and one at
the end. ``SMOLTOLK_PROGRESS`` forces a mode: ``bar``, ``lines`` or ``off``; the demo's side-by-side workers
use ``lines`` (two bars redrawn on one terminal garble each other) and name their model in ``desc``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from smoltolk.errors import ConfigError

MODES = ("bar", "lines", "off")
DEFAULT_SECONDS = 30.0
MIN_SECONDS = 2.0  # shorter work ends without a line


def mode() -> str:
    """The progress mode: ``SMOLTOLK_PROGRESS`` if set, else "bar" on a terminal and "lines" otherwise."""
    forced = os.environ.get("SMOLTOLK_PROGRESS", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ConfigError(f"SMOLTOLK_PROGRESS={forced!r}: expected one of {', '.join(MODES)}")
        return forced
    return "bar" if sys.stderr.isatty() else "lines"


def _seconds() -> float:
    text = os.environ.get("SMOLTOLK_PROGRESS_SECONDS", "")
    try:
        value = float(text) if text else DEFAULT_SECONDS
    except ValueError:
        raise ConfigError(f"SMOLTOLK_PROGRESS_SECONDS={text!r}: expected a number of seconds") from None
    if not value >= 0:
        raise ConfigError(f"SMOLTOLK_PROGRESS_SECONDS={text!r}: expected a number of seconds >= 0")
    return value


def _amount(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


class Lines:
    """A progress reporter with tqdm's small interface (update, set_postfix, close, iteration, context
    manager) that writes one line per ``seconds`` of work and one when it closes, never a carriage return."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, seconds: float | None = None, file: TextIO | None = None,
                 disable: bool = False, **_: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.n, self.disable = total, desc, unit, initial, disable
        self.seconds = _seconds() if seconds is None else seconds
        self.file = file
        self.postfix: dict[str, Any] = {}
        self.start = self.last = time.monotonic()
        self.first = initial
        self.closed = False

    def _line(self, now: float) -> str:
        done = self.n - self.first
        rate = done / (now - self.start) if now > self.start else 0.0
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{self.n} {self.unit}")
        parts.append(f", {now - self.start:.0f} s")
        if rate > 0:
            parts.append(f", {_amount(rate)} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f", ~{(self.total - self.n) / rate:.0f} s left")
        if self.postfix:
            parts.append(", " + ", ".join(f"{k} {v}" for k, v in self.postfix.items()))
        return "".join(parts)

    def _write(self, now: float) -> None:
        print(self._line(now), file=self.file or sys.stderr, flush=True)
        self.last = now

    def update(self, n: int = 1) -> None:
        if self.disable or self.closed:
            return
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self._write(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = {k: v for k, v in values.items() if v is not None}

    def close(self) -> None:
        """The last line, unless the work was too short to report (under 2 s, and no line written yet)."""
        now = time.monotonic()
        if not self.disable and not self.closed and self.n > self.first and (
                self.last > self.start or now - self.start >= MIN_SECONDS):
            self._write(now)
        self.closed = True

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update()
        self.close()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, **options: Any):
    """A progress bar over ``iterable`` (or updated by hand): tqdm's keyword arguments (total, desc, unit,
    initial, leave, disable). A tqdm bar or a :class:`Lines` by :func:`mode`; "off" disables it."""
    chosen = mode()
    if chosen == "lines":
        return Lines(iterable, **options)
    from tqdm.auto import tqdm

    if chosen == "off":
        options["disable"] = True
    return tqdm(iterable, **options)
