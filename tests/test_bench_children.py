"""The MCL benchmark runs each contender in a child process (clnet/bench/mcl.py, _in_child):
a result comes back; a child that runs past its limit is stopped and reported with the seconds
its timed work ran (from its "started" message: the lower bound of a speed-up), the limit
counted from that message and not from the spawn; a child that never starts its timed work is
stopped at the limit without a time; a child the kernel kills (as the out-of-memory killer
does), even halfway through sending a large result, is reported at once."""
import os
import signal
import struct
import time

from clnet.bench.mcl import _in_child


def _answers(value, conn):
    conn.send({"value": value})


def _runs_past(before, seconds, conn):
    time.sleep(before)  # "reading the graph": not counted, and not part of the limit
    conn.send({"started": True})
    time.sleep(seconds)
    conn.send({"value": "too late"})


def _never_starts(conn):
    time.sleep(60)


def _killed_while_sending(conn):
    conn.send({"started": True})
    # Half a message, as a child killed partway through sending leaves it: the header of
    # multiprocessing's connections (a 4-byte big-endian length), a part of the body, then
    # the kill the out-of-memory killer would send.
    os.write(conn.fileno(), struct.pack("!i", 1 << 20) + b"x" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_that_answers_returns_its_result():
    out, why, ran = _in_child(_answers, (42,), 30)
    assert out == {"value": 42} and why is None and ran is None


def test_the_limit_counts_from_the_start_message_and_the_time_is_the_timed_work():
    t0 = time.perf_counter()
    out, why, ran = _in_child(_runs_past, (1.5, 60), 2.0)
    waited = time.perf_counter() - t0
    assert out is None and why == "did not finish within 2 s"
    assert 1.9 <= ran < 5, ran
    assert waited >= 1.5 + 1.9, waited  # the 1.5 s before "started" did not count against the limit
    assert waited < 30  # stopped, not waited for


def test_a_child_that_never_starts_is_stopped_without_a_time():
    out, why, ran = _in_child(_never_starts, (), 2.0)
    assert out is None and why == "did not start its timed work within 2 s" and ran is None


def test_a_child_killed_while_sending_is_reported_when_it_dies():
    t0 = time.perf_counter()
    out, why, ran = _in_child(_killed_while_sending, (), 120)
    assert out is None and "signal 9" in why and "out of memory" in why, why
    assert ran is not None and time.perf_counter() - t0 < 60  # not the whole 120 s limit
