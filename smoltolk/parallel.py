"""Independent jobs on the CPU cores: a few processes with a few threads each.

On a small CPU two one-thread processes get more done than one two-thread process (measured at the demo's
shape: 1.9x one thread's tokens/s for two one-thread trainings side by side, 1.7x for one two-thread
training; ``docs/demo-regimes.md``). :func:`run_jobs` runs picklable jobs in spawned worker processes, the
first submitted first (give the longest first), and returns their results in the order given;
:func:`run_graph` does the same for jobs that wait for others (evaluate a model as soon as it is trained).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def machine() -> str:
    """This machine in words: cores, CPU model (from /proc/cpuinfo where there is one) and architecture."""
    import platform

    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{available_cores()} cores, {model or platform.processor() or platform.platform()}, {platform.machine()}"


def plan(jobs: int, cores: int | None = None, workers: int | None = None) -> tuple[int, int]:
    """(worker processes, threads each) for ``jobs`` independent jobs on ``cores`` cores: one process per job up
    to one per core, the cores shared out evenly. ``workers`` fixes the number of processes (1: in this one)."""
    cores = available_cores() if cores is None else max(1, cores)
    n = max(1, min(jobs, cores)) if workers is None else max(1, min(workers, jobs))
    return n, max(1, cores // n)


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if os.environ.get("SMOLTOLK_PROGRESS", "").lower() != "off":  # bars side by side garble: a line now and then
        os.environ["SMOLTOLK_PROGRESS"] = "lines"
    import torch

    torch.set_num_threads(threads)


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int, threads: int,
             done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``[fn(*job) for job in jobs]`` on ``workers`` spawned processes of ``threads`` threads each (``workers``
    1: here, in order, on this process's threads). ``done(i, result)`` is called as each job finishes. A job's
    exception is raised here (the other jobs are cancelled or left to finish)."""
    return run_graph([(fn, job, ()) for job in jobs], workers, threads, done)


def _next_ready(jobs: Sequence[tuple], started: set[int], finished: set[int]) -> int | None:
    for i, (_, _, after) in enumerate(jobs):
        if i not in started and all(j in finished for j in after):
            return i
    return None


def run_graph(jobs: Sequence[tuple[Callable[..., Any], tuple, Sequence[int]]], workers: int, threads: int,
              done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Jobs that wait for others: ``jobs[i] = (fn, args, after)`` runs ``fn(*args)`` once every job whose index
    is in ``after`` has finished. At most ``workers`` run at once (spawned processes of ``threads`` threads
    each; ``workers`` 1: here, on this process's threads); a free worker takes the first ready job in list
    order, so list the longest first. Returns the results in job order; ``done(i, result)`` is called as each
    job finishes. A job's exception is raised here (jobs not started are dropped, running ones finish)."""
    for i, (_, _, after) in enumerate(jobs):
        bad = [j for j in after if not 0 <= j < len(jobs) or j == i]
        if bad:
            raise ValueError(f"job {i} waits for {bad}: not another job of the {len(jobs)}")
    results: list[Any] = [None] * len(jobs)
    started: set[int] = set()
    finished: set[int] = set()

    def finish(i: int, result: Any) -> None:
        results[i] = result
        finished.add(i)
        if done is not None:
            done(i, result)

    if workers <= 1:
        while (i := _next_ready(jobs, started, finished)) is not None:
            started.add(i)
            fn, args, _ = jobs[i]
            finish(i, fn(*args))
    else:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, wait

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            running: dict[Any, int] = {}
            while True:
                while len(running) < workers and (i := _next_ready(jobs, started, finished)) is not None:
                    started.add(i)
                    fn, args, _ = jobs[i]
                    running[pool.submit(fn, *args)] = i
                if not running:
                    break
                ready, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in ready:
                    finish(running.pop(future), future.result())
    if len(finished) < len(jobs):
        raise ValueError(f"jobs {sorted(set(range(len(jobs))) - finished)} wait for each other in a circle")
    return results
