"""A RecurrentState shared by threads, pickled, or named by another spec (issue 12,
points 6 and 8).

Calls that change one state are serialised by the state's lock on every backend: two
threads stepping one state lose no step. The state counts its steps here: an Elman relu
cell with h' = relu(I h + 1) adds exactly 1 per step.
"""
import pickle
import sys
import threading

import numpy as np
import pytest

import clnet


H = 32  # enough work per step that NumPy's matrix product releases the GIL


def _counter():
    cell = clnet.RNNCell(1, H, nonlinearity="relu")
    cell.load_state_dict({"weight_ih": np.zeros((H, 1)), "weight_hh": np.eye(H), "bias_ih": np.ones(H),
                          "bias_hh": np.zeros(H)})
    return cell


def test_two_threads_stepping_one_state_lose_no_step(any_backend):
    cell = _counter()
    state = cell.initial_state(512, backend=any_backend)
    x = np.zeros((512, 1))
    steps, threads = 300, 2
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        workers = [threading.Thread(target=lambda: [cell.step(x, state) for _ in range(steps)])
                   for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(old)
    assert np.array_equal(state.h, np.full((512, H), float(steps * threads))), state.h[:3, 0]


def test_sequence_and_set_from_threads_are_serialised_too(any_backend):
    cell = _counter()
    state = cell.initial_state(8, backend=any_backend)
    xs = np.zeros((5, 8, 1))
    workers = [threading.Thread(target=lambda: [cell.sequence(xs, state) for _ in range(40)]) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert np.array_equal(state.h, np.full((8, H), 400.0))


def test_an_unpickled_state_accepts_its_backend_by_spec(any_backend):
    cell = clnet.LSTMCell(2, 3, seed=0)
    state = cell.initial_state(2, backend=any_backend)
    cell.step(np.ones((2, 2)), state)
    cell2, state2 = pickle.loads(pickle.dumps((cell, state)))
    assert state2.backend.spec == any_backend.spec
    np.testing.assert_array_equal(state2.h, state.h)
    np.testing.assert_array_equal(state2.c, state.c)
    h = cell2.step(np.ones((2, 2)), state2, backend=any_backend.spec)
    np.testing.assert_allclose(h, cell.step(np.ones((2, 2)), state), rtol=1e-6)


def test_use_backend_is_not_inherited_by_executor_workers_as_the_readme_says():
    """use_backend is a context variable: loop.run_in_executor's workers do not see it,
    a copied context does (README, Threads)."""
    import asyncio
    import contextvars
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "run_in_executor" in readme and "copy_context" in readme

    class Marker(clnet.Backend):
        spec = "marker-for-this-test"

    marker = Marker()

    async def main():
        loop = asyncio.get_running_loop()
        with clnet.use_backend(marker):
            plain = await loop.run_in_executor(None, clnet.get_backend)
            ctx = contextvars.copy_context()
            copied = await loop.run_in_executor(None, ctx.run, clnet.get_backend)
        return plain, copied

    plain, copied = asyncio.run(main())
    assert plain is not marker and copied is marker
