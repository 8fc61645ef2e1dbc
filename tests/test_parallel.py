"""Jobs side by side on the cores: the plan, results in order, errors raised here."""

from __future__ import annotations

import math

import pytest

from smoltolk.parallel import plan, run_graph, run_jobs


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


def _stamp(label: str, path: str) -> str:
    with open(path, "a", encoding="utf-8") as f:  # appended in the order the jobs run
        f.write(label + "\n")
    return label


@pytest.mark.parametrize("workers", [1, 2])
def test_a_job_runs_only_after_the_jobs_it_waits_for_and_results_keep_job_order(workers, tmp_path):
    log = str(tmp_path / "log")
    jobs = [(_stamp, ("train-a", log), ()), (_stamp, ("train-b", log), ()),
            (_stamp, ("score-a", log), (0,)), (_stamp, ("score-b", log), (1,)), (_stamp, ("both", log), (2, 3))]
    seen = []
    out = run_graph(jobs, workers, 1, done=lambda i, r: seen.append(i))
    assert out == ["train-a", "train-b", "score-a", "score-b", "both"]
    order = (tmp_path / "log").read_text().split()
    for job, (_, _, after) in enumerate(jobs):
        assert all(order.index(out[j]) < order.index(out[job]) for j in after)
        assert seen.index(job) > max((seen.index(j) for j in after), default=-1)
    if workers == 1:  # one worker: the first ready job in list order, every time
        assert order == out


def test_jobs_that_wait_for_themselves_or_in_a_circle_are_refused(tmp_path):
    log = str(tmp_path / "log")
    with pytest.raises(ValueError, match="job 0 waits for \\[0\\]"):
        run_graph([(_stamp, ("a", log), (0,))], 1, 1)
    with pytest.raises(ValueError, match="job 1 waits for \\[5\\]"):
        run_graph([(_stamp, ("a", log), ()), (_stamp, ("b", log), (5,))], 1, 1)
    with pytest.raises(ValueError, match="jobs \\[1, 2\\] wait for each other in a circle"):
        run_graph([(_stamp, ("a", log), ()), (_stamp, ("b", log), (2,)), (_stamp, ("c", log), (1,))], 1, 1)
    assert (tmp_path / "log").read_text().split() == ["a"]
