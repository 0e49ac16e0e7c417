"""The MCL benchmark runs each contender in a child process (clnet/bench/mcl.py, _in_child):
a result comes back, a child that runs past its limit is stopped and reported with the seconds
it ran since its timed work began (the lower bound of a speed-up), and a child the kernel kills
(as the out-of-memory killer does) is reported at once, not after the whole limit."""
import os
import signal
import time

from clnet.bench.mcl import _in_child


def _answers(value, queue):
    queue.put({"value": value})


def _runs_past(seconds, queue):
    time.sleep(0.5)  # "reading the graph": not counted
    queue.put({"started": True})
    time.sleep(seconds)
    queue.put({"value": "too late"})


def _killed(queue):
    queue.put({"started": True})
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_that_answers_returns_its_result():
    out, why, _ = _in_child(_answers, (42,), 30)
    assert out == {"value": 42} and why is None


def test_a_child_past_its_limit_is_stopped_and_timed_from_its_start_message():
    t0 = time.perf_counter()
    out, why, ran = _in_child(_runs_past, (60,), 2.0)
    assert out is None and why == "did not finish within 2 s"
    assert 1.9 <= ran < 5, ran  # counted from "started", not from the spawn
    assert time.perf_counter() - t0 < 30  # stopped, not waited for


def test_a_killed_child_is_reported_when_it_dies():
    t0 = time.perf_counter()
    out, why, _ = _in_child(_killed, (), 120)
    assert out is None and "signal 9" in why and "out of memory" in why
    assert time.perf_counter() - t0 < 60  # not the whole 120 s limit
