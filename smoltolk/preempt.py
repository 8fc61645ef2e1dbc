"""Preemption: schedulers stop jobs with SIGTERM (SLURM, Kubernetes; SIGUSR1 as a time limit nears).

Every command stops cleanly on these signals: :func:`signals_raise` (the CLI's, around each command) turns
them into :class:`SignalStop`, a ``KeyboardInterrupt``, so a command stops as it does on Ctrl-C: whatever
it writes is written whole or not at all. Training does better: while its loop runs, :func:`signals_flag`
only records the signal; the loop finishes the current step, every rank agrees on the stop, a complete
checkpoint is written and training raises :class:`~smoltolk.errors.Preempted`. The CLI then exits with
:data:`EXIT_PREEMPTED`; running the same command resumes exactly.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by the scheduler; run the same command again


class SignalStop(KeyboardInterrupt):
    """A preemption signal stopped a command (outside the training loop, which stops at a step's end)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal = signal.Signals(signum).name


@contextmanager
def _handlers(handler) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    old = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM / SIGUSR1 raise :class:`SignalStop` in the main thread while the block runs."""
    def handler(signum, frame):
        raise SignalStop(signum)

    with _handlers(handler):
        yield


@contextmanager
def signals_flag() -> Iterator[dict]:
    """SIGTERM / SIGUSR1 only set ``flag["signal"]`` (the signal's name) while the block runs."""
    flag: dict = {"signal": None}

    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name

    with _handlers(handler):
        yield flag
