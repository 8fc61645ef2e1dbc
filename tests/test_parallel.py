"""Jobs side by side on the cores: the plan, results in order, errors raised here."""

from __future__ import annotations

import math

import pytest

from smoltolk.parallel import plan, run_jobs


def test_plan_gives_one_process_per_job_up_to_one_per_core_and_shares_the_cores():
    assert plan(3, cores=2) == (2, 1)
    assert plan(2, cores=16) == (2, 8)
    assert plan(3, cores=16) == (3, 5)
    assert plan(3, cores=1) == (1, 1)
    assert plan(3, cores=8, workers=1) == (1, 8)
    assert plan(2, cores=8, workers=5) == (2, 4)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_job_order_and_done_sees_each_once(workers):
    seen = []
    out = run_jobs(math.factorial, [(6,), (1,), (4,)], workers, 1, done=lambda i, r: seen.append((i, r)))
    assert out == [720, 1, 24]
    assert sorted(seen) == [(0, 720), (1, 1), (2, 24)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_raises_its_own_error(workers):
    with pytest.raises(ValueError, match="math domain error"):
        run_jobs(math.sqrt, [(4.0,), (-1.0,)], workers, 1)
