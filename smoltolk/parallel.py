"""Independent jobs on the CPU cores: a few processes with a few threads each.

On a small CPU two one-thread processes get more done than one two-thread process (measured at the demo's
shape: 1.9x one thread's tokens/s for two one-thread trainings side by side, 1.7x for one two-thread
training; ``docs/demo-regimes.md``). :func:`run_jobs` runs picklable jobs in spawned worker processes, the
first submitted first (give the longest first), and returns their results in the order given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
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
    if workers <= 1:
        results = []
        for i, job in enumerate(jobs):
            results.append(fn(*job))
            if done is not None:
                done(i, results[-1])
        return results
    import multiprocessing

    results: list[Any] = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if done is not None:
                    done(i, results[i])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results
