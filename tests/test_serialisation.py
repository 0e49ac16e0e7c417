"""Pickling and copy.deepcopy of every model class (clnet.distributed ships them to workers).

A pickled or copied model carries its weights and structure only: the backends' device
copies (DeviceCache) come back empty and are made again on first use. A RecurrentState
pickles as a host copy of h (and c) and is restored on the receiving side's backend.
"""
import copy
import pickle

import numpy as np
import pytest

import clnet
from clnet.common.cache import DeviceCache


def _graph_net():
    nodes = [{"key": 0, "bias": 0.1, "activation": "tanh"}, {"key": 5, "bias": -0.2, "activation": "sigmoid"}]
    conns = [(-1, 5, 0.7, True), (-2, 5, -0.4, True), (5, 0, 1.3, True), (-3, 0, 0.25, True), (-4, 0, 9.0, False)]
    return clnet.FNN.from_graph(4, 1, nodes, conns)


def _caches(obj, seen=None):
    """Every DeviceCache reachable from ``obj`` through attributes, lists and dicts."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, DeviceCache):
        return [obj]
    found = []
    children = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    if isinstance(obj, (list, tuple)):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.values())
    for child in children:
        if isinstance(child, (DeviceCache, list, tuple, dict)) or hasattr(child, "__dict__"):
            found += _caches(child, seen)
    return found


FNN_CASES = {
    "layered": lambda: clnet.FNN.from_structure([4, 3, 2], np.linspace(-1, 1, 18), biases=np.arange(5) / 7,
                                                activation=["tanh", "relu"]),
    "graph": _graph_net,
}


def _population():
    layered = clnet.FNN.from_structure([4, 1], [0.5, -0.25, 2.0, 1.0])
    return clnet.FNNPopulation([_graph_net(), layered, _graph_net()])


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("make", [FNN_CASES["layered"], FNN_CASES["graph"], _population],
                         ids=["FNN-layered", "FNN-graph", "FNNPopulation"])
def test_feed_forward_models_pickle_and_copy_without_device_copies(any_backend, make, how):
    model = make()
    x = np.random.default_rng(0).normal(size=(5, 4))
    expected = model(x, backend=any_backend)
    if any_backend.spec.startswith("opencl"):
        assert sum(len(c) for c in _caches(model)) >= 1  # the device holds copies of the model
    clone = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    assert type(clone) is type(model) and clone is not model
    assert all(len(c) == 0 for c in _caches(clone)), "a device copy travelled with the model"
    np.testing.assert_array_equal(clone(x, backend=any_backend), expected)
    # The original keeps its own copies and still gives the same result.
    np.testing.assert_array_equal(model(x, backend=any_backend), expected)


RNN_CASES = {
    "LSTMCell": lambda: clnet.LSTMCell(3, 4, seed=1),
    "GRUCell": lambda: clnet.GRUCell(3, 4, seed=2),
    "RNNCell-tanh": lambda: clnet.RNNCell(3, 4, seed=3),
    "RNNCell-relu": lambda: clnet.RNNCell(3, 4, nonlinearity="relu", seed=4),
    "LSTM": lambda: clnet.LSTM(3, 4, num_layers=2),
    "GRU": lambda: clnet.GRU(3, 4, num_layers=2, bias=False),
}


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("name", list(RNN_CASES))
def test_recurrent_models_pickle_and_copy_weights_and_structure(any_backend, name, how):
    model = RNN_CASES[name]()
    stacked = name in ("LSTM", "GRU")
    x = np.random.default_rng(5).normal(size=(2, 6, 3) if stacked else (6, 3))
    expected = model(x, backend=any_backend)[0]
    if any_backend.spec.startswith("opencl"):
        assert sum(len(c) for c in _caches(model)) >= 1  # prepared weights on the device
    clone = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    assert type(clone) is type(model)
    assert all(len(c) == 0 for c in _caches(clone)), "a device copy travelled with the model"
    got = clone(x, backend=any_backend)[0]
    np.testing.assert_array_equal(got, expected)
    sd, sd_clone = model.state_dict(), clone.state_dict()
    assert sd.keys() == sd_clone.keys()
    for key in sd:
        np.testing.assert_array_equal(sd[key], sd_clone[key])
    if name.startswith("RNNCell"):
        assert clone.nonlinearity == model.nonlinearity
    # The copy's weights are its own: changing them leaves the original alone.
    clone.load_state_dict({k: v + 1.0 for k, v in sd_clone.items()})
    np.testing.assert_array_equal(model(x, backend=any_backend)[0], expected)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell-tanh"])
def test_recurrent_state_pickles_as_host_values_and_restores_on_the_receiving_backend(any_backend, kind):
    cell = RNN_CASES[kind]()
    rng = np.random.default_rng(7)
    state = cell.initial_state(3, backend=any_backend)
    cell.step(rng.normal(size=(3, 3)), state)
    cell.step(rng.normal(size=(3, 3)), state)
    blob = pickle.dumps((cell, state))
    with clnet.use_backend("numpy"):  # the receiving side's choice of backend
        cell2, state2 = pickle.loads(blob)
    assert state2.cell is cell2 and state2.backend.spec == "numpy"
    assert state2.dtype == state.dtype and state2.batch_size == 3
    np.testing.assert_array_equal(state2.h, state.h)
    if kind == "LSTMCell":
        np.testing.assert_array_equal(state2.c, state.c)
    # Stepping both from the same state gives the same h (within the backends' tolerance).
    x = rng.normal(size=(3, 3))
    np.testing.assert_allclose(cell2.step(x, state2), cell.step(x, state), rtol=1e-5, atol=1e-6)


def test_recurrent_state_deepcopy_stays_on_its_backend_and_is_independent(any_backend):
    model = clnet.LSTM(3, 4, num_layers=2)
    states = model.initial_state(2, backend=any_backend)
    xs = np.random.default_rng(8).normal(size=(4, 2, 3))
    model.sequence(xs, states)
    model2, states2 = copy.deepcopy((model, states))
    assert [s.cell for s in states2] == model2.layers and states2[0].backend is any_backend
    before = [s.h.copy() for s in states]
    out_copy = model2.sequence(xs, states2)  # advancing the copy ...
    for s, h in zip(states, before):  # ... leaves the original untouched
        np.testing.assert_array_equal(s.h, h)
    # and the original, advanced from the same state, gives the same outputs
    np.testing.assert_array_equal(model.sequence(xs, states), out_copy)


def test_float64_state_refuses_a_backend_without_double_precision(monkeypatch):
    cell = clnet.GRUCell(2, 3, seed=0)
    state = cell.initial_state(2, backend="numpy", dtype="float64")
    blob = pickle.dumps(state)
    numpy_backend = clnet.get_backend("numpy")
    monkeypatch.setattr(numpy_backend, "supports_float64", False)
    with clnet.use_backend("numpy"), pytest.raises(TypeError, match="float64.*use_backend"):
        pickle.loads(blob)
