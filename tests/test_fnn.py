"""Feed-forward networks: semantics, neat-python equivalence, populations and bad input."""
import math

import neat
import numpy as np
import pytest

import clnet
from clnet import conformance
from clnet.bench.neat_genomes import grow_genome, make_config
from conftest import force_params

NEAT_ACTIVATIONS = sorted(neat.activations.ActivationFunctionSet().functions)
NEAT_AGGREGATIONS = sorted(neat.aggregations.AggregationFunctionSet().functions)


# --- the seed example and the layered layout ------------------------------------------------
def test_seed_example_exact(any_backend):
    w1, w2, w3, w4, w5, w6 = 0.5, -1.25, 2.0, 0.75, -3.0, 1.5
    v1, v2 = 1.5, -2.0
    out = clnet.fnn_forward([2, 2, 1], [w1, w2, w3, w4, w5, w6], [v1, v2], backend=any_backend, dtype="float64"
                            if any_backend.supports_float64 else "float32")
    assert out.shape == (1,)
    assert out[0] == w5 * (v1 * w1 + v2 * w2) + w6 * (v1 * w3 + v2 * w4)  # exactly representable


def _loops_reference(structure, w, b, x, act):
    """Plain loops over the documented layout, independent of every backend."""
    values = list(x)
    wi = bi = 0
    for l in range(1, len(structure)):
        nxt = []
        for j in range(structure[l]):
            s = 0.0
            for i in range(structure[l - 1]):
                s += w[wi] * values[i]
                wi += 1
            nxt.append(act(b[bi] + s))
            bi += 1
        values = nxt
    return values


def test_layered_layout_matches_plain_loops(any_backend, rng):
    structure = [3, 5, 4, 2]
    w = rng.normal(size=clnet.weight_count(structure))
    b = rng.normal(size=sum(structure[1:]))
    x = rng.normal(size=(7, 3))
    got = clnet.fnn_forward(structure, w, x, biases=b, activation="tanh", backend=any_backend)
    for row in range(7):
        ref = _loops_reference(structure, w, b, x[row], math.tanh)
        np.testing.assert_allclose(got[row], ref, rtol=1e-5, atol=1e-6)


def test_layered_layout_is_pytorch_linear(any_backend, rng):
    torch = pytest.importorskip("torch")  # a test dependency; importorskip only guards odd installs
    layers = [torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)]
    w = np.concatenate([l.weight.detach().numpy().ravel() for l in layers])
    b = np.concatenate([l.bias.detach().numpy() for l in layers])
    x = rng.normal(size=(5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = layers[1](torch.relu(layers[0](torch.from_numpy(x)))).numpy()
    got = clnet.fnn_forward([4, 6, 3], w, x, biases=b, activation=["relu", "identity"], backend=any_backend)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_unbatched_and_batched_shapes(any_backend):
    net = clnet.FNN.from_structure([2, 3, 4], np.ones(18))
    assert net([1.0, 2.0], backend=any_backend).shape == (4,)
    assert net(np.ones((5, 2)), backend=any_backend).shape == (5, 4)
    assert net(np.ones((0, 2)), backend=any_backend).shape == (0, 4)
    assert net([1, 2], backend=any_backend).dtype == np.float32
    if any_backend.supports_float64:
        assert net([1, 2], backend=any_backend, dtype="float64").dtype == np.float64


def test_large_batch_split_into_chunks_is_identical_and_a_population_agrees(opencl_backend, rng, monkeypatch):
    """Work larger than the scratch budget runs in pieces with bitwise identical results."""
    from clnet.opencl import fnn

    structure = [3, 40, 40, 2]
    net = clnet.FNN.from_structure(structure, rng.normal(size=clnet.weight_count(structure)), activation="tanh")
    x = rng.normal(size=(3001, 3))
    whole = net(x, backend=opencl_backend)
    monkeypatch.setattr(fnn, "SCRATCH_BUDGET", 80 * 4 * 100)  # about 100 samples per launch
    pieces = net(x, backend=opencl_backend)
    np.testing.assert_array_equal(whole, pieces)
    # Inside a population the same network runs through another kernel (the graph form). A
    # compiler may sum its terms in another order there: Intel's CPU runtime vectorises the sums
    # over incoming connections with partial sums (CL_CONFIG_CPU_VECTORIZER_MODE=1 makes both
    # kernels agree bitwise), so both are judged against the float64 reference by the tolerance
    # table, whose bound follows the magnitude of the terms summed.
    in_population = clnet.FNNPopulation([net] * 7)(x, backend=opencl_backend)[3]
    ref = net(x, backend="numpy", dtype=np.float64)
    control = net(x, backend="numpy", dtype=np.float32)
    for name, got in (("layered", whole), ("in a population", in_population)):
        worst, _, msg = conformance.compare(conformance.Comparison(name, got, ref, control), "fnn", np.float32)
        assert worst <= 1.0, msg



def test_a_population_keeps_each_launch_within_the_cache_budget(opencl_backend, rng, monkeypatch):
    """The tuned cache budget (scratch_mb) splits a large batch of a population into launches
    whose node values fit it, with bitwise identical results; a network larger than the
    budget still runs whole in its launch."""
    import dataclasses

    from clnet.opencl import fnn
    from clnet.opencl.args import BoundKernel

    from clnet.bench.neat_genomes import default_population

    config, genomes = default_population(9)
    pop = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])
    x = rng.normal(size=(4099, pop.n_inputs))
    with opencl_backend.tuning.overriding("fnn", {"scratch_mb": 256}):
        whole = pop(x, backend=opencl_backend)
    launches = []
    real_call = BoundKernel.__call__

    def counting_call(self, queue, global_size, *args, **kwargs):
        if "p0" in kwargs:
            launches.append((kwargs["nb_pad"], kwargs["p0"], global_size[1]))
        return real_call(self, queue, global_size, *args, **kwargs)

    monkeypatch.setattr(BoundKernel, "__call__", counting_call)
    requested = []  # bytes asked for the node values (a kept larger buffer may be handed back)
    real_workspace = type(opencl_backend).workspace

    def recording_workspace(self, name, nbytes, *args, **kwargs):
        if name == "fnn.scratch":
            requested.append(nbytes)
        return real_workspace(self, name, nbytes, *args, **kwargs)

    monkeypatch.setattr(type(opencl_backend), "workspace", recording_workspace)
    starts = pop.packed.net_node_start
    item = 4
    for budget_nodes in (None, 1):  # 1 MiB of node values; then a budget below one network's
        launches.clear()
        requested.clear()
        if budget_nodes is None:
            with opencl_backend.tuning.overriding("fnn", {"scratch_mb": 1}):
                pieces = pop(x, backend=opencl_backend)
            budget = 2**20
        else:
            budget = 1024  # bytes: less than one network's node values for a lane group
            real_launch = fnn.FNNKernels._fnn_launch

            def tiny_budget(self, form, batch):
                launch = real_launch(self, form, batch)
                return dataclasses.replace(launch, scratch=budget)

            monkeypatch.setattr(fnn.FNNKernels, "_fnn_launch", tiny_budget)
            pieces = pop(x, backend=opencl_backend)
        np.testing.assert_array_equal(whole, pieces)
        assert len(launches) > 1
        for nb_pad, p0, count in launches:
            nodes = int(starts[p0 + count] - starts[p0])
            assert count == 1 or nodes * nb_pad * item <= budget, (nb_pad, p0, count, budget)
            assert nodes * nb_pad * item <= requested[-1], (nodes, nb_pad, requested)  # the scratch holds it
# --- graph form semantics --------------------------------------------------------------------
def test_graph_disabled_connections_are_removed_not_zeroed(any_backend):
    nodes = [dict(key=0, aggregation="product")]
    conns = [(-1, 0, 2.0, True), (-2, 0, 5.0, False)]
    net = clnet.FNN.from_graph(2, 1, nodes, conns)
    assert net([3.0, 7.0], backend=any_backend)[0] == pytest.approx(6.0)  # zero-weighting would give 0


def test_graph_orphans_skips_and_pruning(any_backend):
    nodes = [dict(key=0, bias=0.5, activation="identity"),
             dict(key=1, bias=-1.0, activation="relu"),       # output with no incoming: act(bias)
             dict(key=5, bias=2.0, activation="identity"),    # orphan hidden node: outputs act(bias)
             dict(key=6, bias=0.0, activation="tanh"),        # dangling: reaches no output
             dict(key=7, bias=0.25, activation="identity")]
    conns = [(-1, 0, 1.5, True),    # skip connection straight to the output
             (-1, 7, 2.0, True), (7, 0, -1.0, True),
             (5, 0, 3.0, True),
             (-2, 6, 1.0, True), (6, 6 if False else 7, 1.0, False)]
    net = clnet.FNN.from_graph(2, 2, nodes, conns)
    assert net.num_nodes == 4  # node 6 is pruned
    x1 = 0.8
    h7 = 0.25 + 2.0 * x1
    expected0 = 0.5 + (1.5 * x1 + -1.0 * h7 + 3.0 * 2.0)
    out = net([x1, -4.0], backend=any_backend)
    assert out[0] == pytest.approx(expected0, rel=1e-6)
    assert out[1] == 0.0


@pytest.mark.parametrize("agg,empty", [("sum", 0.0), ("product", 1.0), ("max", 0.0), ("min", 0.0),
                                       ("maxabs", 0.0), ("mean", 0.0), ("median", 0.0)])
def test_empty_aggregation(any_backend, agg, empty):
    net = clnet.FNN.from_graph(1, 1, [dict(key=0, bias=0.5, response=2.0, aggregation=agg)], [])
    assert net([9.0], backend=any_backend)[0] == pytest.approx(0.5 + 2.0 * empty)


def test_cycle_on_an_evaluated_path_is_an_error_naming_its_nodes():
    nodes = [dict(key=0), dict(key=3), dict(key=4)]
    conns = [(-1, 3, 1.0), (3, 4, 1.0), (4, 3, 1.0), (4, 0, 1.0)]
    with pytest.raises(ValueError, match=r"cycle through nodes (3 -> 4 -> 3|4 -> 3 -> 4)"):
        clnet.FNN.from_graph(1, 1, nodes, conns)
    # The same cycle through a disabled link, or away from every output, is harmless.
    clnet.FNN.from_graph(1, 1, nodes, [(-1, 3, 1.0), (3, 4, 1.0), (4, 3, 1.0, False), (4, 0, 1.0)])
    clnet.FNN.from_graph(1, 1, nodes, [(-1, 3, 1.0), (3, 4, 1.0), (4, 3, 1.0), (-1, 0, 1.0)])


def test_graph_accepts_tuples_mappings_and_objects(any_backend):
    class Conn:
        def __init__(self, key, weight, enabled=True):
            self.key, self.weight, self.enabled = key, weight, enabled

    a = clnet.FNN.from_graph(1, 1, [(0, 0.1, 1.0, "tanh", "sum")], [(-1, 0, 0.7)])
    b = clnet.FNN.from_graph(1, 1, {0: dict(bias=0.1, activation="tanh")}, [dict(src=-1, dst=0, weight=0.7)])
    c = clnet.FNN.from_graph(1, 1, [dict(key=0, bias=0.1, activation="tanh")], [Conn((-1, 0), 0.7)])
    outs = [n([0.3], backend=any_backend)[0] for n in (a, b, c)]
    assert outs[0] == outs[1] == outs[2] == pytest.approx(math.tanh(0.1 + 0.7 * 0.3), rel=1e-6)


# --- neat-python equivalence ------------------------------------------------------------------
def _neat_cases(activations, aggregations, count, seed):
    config = make_config(3, 2, hidden=2, activations=activations, aggregations=aggregations)
    genomes = [grow_genome(config, i + 1, mutations=12 + (i % 5) * 4, seed=seed * 1000 + i) for i in range(count)]
    return config, genomes


def _check_against_neat(backend, config, genomes, x):
    dtype = np.float64 if backend.supports_float64 else np.float32
    for g in genomes:
        expected = np.array([neat.nn.FeedForwardNetwork.create(g, config).activate(list(r)) for r in x])
        net = clnet.FNN.from_neat(g, config)
        got = net(x, backend=backend, dtype=dtype)
        got32 = net(x, backend=backend, dtype=np.float32)
        control = net(x, backend="numpy", dtype=np.float32)
        if dtype == np.float64:
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        _, _, msg = conformance.compare(conformance.Comparison("vs neat-python", got32, expected, control),
                                        "fnn", np.float32)
        assert not msg, msg


@pytest.mark.parametrize("activation", NEAT_ACTIVATIONS)
def test_from_neat_matches_neat_python_per_activation(any_backend, activation, rng):
    config, genomes = _neat_cases([activation], NEAT_AGGREGATIONS, 4, seed=NEAT_ACTIVATIONS.index(activation))
    _check_against_neat(any_backend, config, genomes, rng.uniform(-2, 2, size=(16, 3)))


@pytest.mark.parametrize("aggregation", NEAT_AGGREGATIONS)
def test_from_neat_matches_neat_python_per_aggregation(any_backend, aggregation, rng):
    config, genomes = _neat_cases(NEAT_ACTIVATIONS, [aggregation], 6, seed=100 + NEAT_AGGREGATIONS.index(aggregation))
    _check_against_neat(any_backend, config, genomes, rng.uniform(-2, 2, size=(16, 3)))


# each pair builds a program of its own: a spread of them (plain arithmetic, builtins, medians)
@pytest.mark.parametrize("activation, aggregation", [("sigmoid", "sum"), ("relu", "sum"), ("tanh", "sum"),
                                                     ("sin", "sum"), ("log", "max"), ("sigmoid", "product"),
                                                     ("sigmoid", "median"), ("exp", "mean")])
def test_a_population_of_one_activation_and_aggregation_runs_a_kernel_of_its_own(
        opencl_backend, activation, aggregation, rng, monkeypatch):
    """A population with a single activation and a single aggregation (neat-python's
    defaults are sum and sigmoid) runs the kernel built for that pair alone, bit for bit
    the kernel built for every function; a population of two activations does not."""
    config, genomes = _neat_cases([activation], [aggregation], 4, seed=7)
    pop = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])
    x = rng.uniform(-3, 3, size=(37, 3))
    x[3, 1] = np.nan
    own = pop(x, backend=opencl_backend)
    from clnet.functions import AGGREGATIONS

    used_act = {a for a in np.unique(pop.packed.node_act)}
    assert opencl_backend._function_defines(pop.packed) == (
        f"CLNET_ACTS={1 << int(pop.packed.node_act[0])}", f"CLNET_AGGS={1 << AGGREGATIONS.index(aggregation)}")
    assert len(used_act) == 1
    monkeypatch.setattr(type(opencl_backend), "_function_defines", lambda self, pop: ())
    general = pop(x, backend=opencl_backend)
    assert own.tobytes() == general.tobytes()
    mixed = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in
                                 _neat_cases(["sigmoid", "tanh"], ["sum"], 3, seed=8)[1]])
    monkeypatch.undo()
    assert opencl_backend._function_defines(mixed.packed) == ()


def test_populations_of_plain_arithmetic_run_with_their_own_launch_parameters(opencl_backend, rng, monkeypatch):
    """float32 populations whose functions are all plain arithmetic (sigmoid, relu, max, ...)
    run with fnn.graph_vector_lanes and _group; one with tanh, sin or a median, or float64,
    with fnn.graph_lanes and _group; every value of the vector pair gives the fallback's result."""
    from clnet.opencl.tuning import FAMILIES

    def population(act, agg):
        config, genomes = _neat_cases([act], [agg], 3, seed=11)
        return clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])

    plain = population("sigmoid", "max")
    form = opencl_backend._lane_form
    assert form(plain.packed, np.float32) == "graph_vector" and form(plain.packed, np.float64) == "graph"
    for act, agg in (("tanh", "sum"), ("sin", "sum"), ("relu", "median")):
        assert form(population(act, agg).packed, np.float32) == "graph", (act, agg)
    x = rng.uniform(-2, 2, size=(29, 3))
    want = plain(x, backend="numpy", dtype=np.float64)
    forms = []
    launch = type(opencl_backend)._fnn_launch
    monkeypatch.setattr(type(opencl_backend), "_fnn_launch",
                        lambda self, form, batch: (forms.append(form), launch(self, form, batch))[1])
    plain(x, backend=opencl_backend)
    population("tanh", "sum")(x, backend=opencl_backend)
    assert forms == ["graph_vector", "graph"]
    fam = FAMILIES["fnn"]
    for lanes in fam.param("graph_vector_lanes").values:
        for group in (1, 4):
            force_params(monkeypatch, opencl_backend, "fnn", graph_vector_lanes=lanes, graph_vector_group=group)
            np.testing.assert_allclose(plain(x, backend=opencl_backend), want, rtol=1e-4, atol=1e-5)


def test_the_general_kernel_covers_every_function():
    """kernels/fnn.cl's default masks have a bit for every activation and aggregation."""
    import re

    from clnet.functions import ACTIVATIONS, AGGREGATIONS
    from clnet.opencl import kernel_dir

    source = (kernel_dir() / "fnn.cl").read_text()
    acts = int(re.search(r"#define CLNET_ACTS (0x[0-9A-Fa-f]+)", source).group(1), 16)
    aggs = int(re.search(r"#define CLNET_AGGS (0x[0-9A-Fa-f]+)", source).group(1), 16)
    assert acts == (1 << len(ACTIVATIONS)) - 1 and aggs == (1 << len(AGGREGATIONS)) - 1


def test_from_neat_edge_genomes(any_backend):
    """Orphan nodes, disabled links and outputs without inputs, built by hand in neat-python."""
    config = make_config(2, 2, initial="unconnected", activations=["sigmoid", "tanh"],
                         aggregations=["sum", "product"])
    g = neat.DefaultGenome(1)
    g.configure_new(config.genome_config)
    for key in (7, 8):
        g.nodes[key] = g.create_node(config.genome_config, key)
    g.nodes[0].aggregation = "product"
    g.add_connection(config.genome_config, -1, 0, 0.7, True)
    g.add_connection(config.genome_config, -2, 0, -1.3, False)   # disabled: removed, not zeroed
    g.add_connection(config.genome_config, 7, 0, 0.9, True)      # orphan hidden node 7
    g.add_connection(config.genome_config, -2, 8, 1.1, True)     # node 8 reaches no output
    x = np.array([[0.3, -0.4], [1.0, 2.0]])
    _check_against_neat(any_backend, config, [g], x)


def test_population_of_neat_genomes_matches_neat(any_backend, rng):
    config, genomes = _neat_cases(NEAT_ACTIVATIONS, ["sum", "mean", "max"], 12, seed=7)
    pop = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])
    x = rng.uniform(-1, 1, size=(9, 3))
    got = pop(x, backend=any_backend)
    assert got.shape == (12, 9, 2)
    for p, g in enumerate(genomes):
        expected = np.array([neat.nn.FeedForwardNetwork.create(g, config).activate(list(r)) for r in x])
        np.testing.assert_allclose(got[p], expected, rtol=2e-4, atol=1e-5)


# --- populations --------------------------------------------------------------------------------
def test_population_is_packed_not_padded(rng):
    big = clnet.FNN.from_structure([4, 64, 64, 2], rng.normal(size=clnet.weight_count([4, 64, 64, 2])))
    small = clnet.FNN.from_structure([4, 1, 2], rng.normal(size=6))
    pop = clnet.FNNPopulation([big] + [small] * 999)
    assert pop.num_nodes == big.num_nodes + 999 * small.num_nodes
    assert pop.num_connections == big.num_connections + 999 * small.num_connections
    packed = pop.packed
    stored = sum(a.nbytes for a in (packed.node_act, packed.node_agg, packed.node_conn_start, packed.node_bias,
                                    packed.node_resp, packed.conn_src, packed.conn_w, packed.net_node_start, packed.net_out))
    padded = 1000 * (big.num_connections * 12 + big.num_nodes * 20)
    assert stored < padded / 20


def test_population_mixes_layered_and_graph_networks(any_backend, rng):
    layered = clnet.FNN.from_structure([2, 3, 1], rng.normal(size=9), activation="sigmoid")
    graph = clnet.FNN.from_graph(2, 1, [dict(key=0, activation="tanh")], [(-1, 0, 0.5), (-2, 0, -0.25)])
    pop = clnet.FNNPopulation([layered, graph, layered])
    x = rng.normal(size=(33, 2))
    out = pop(x, backend=any_backend)
    np.testing.assert_allclose(out[0], layered(x, backend="numpy"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], graph(x, backend="numpy"), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[0], out[2])
    assert pop([0.1, 0.2], backend=any_backend).shape == (3, 1)


def test_population_evaluates_in_one_launch(opencl_backend, rng, monkeypatch):
    import pyopencl as cl

    nets = [clnet.FNN.from_structure([2, int(h), 1], rng.normal(size=3 * int(h))) for h in rng.integers(1, 9, 50)]
    pop = clnet.FNNPopulation(nets)
    pop(np.ones((10, 2)), backend=opencl_backend)
    launches = []
    original = cl.Kernel.__call__

    def counting(self, *args, **kwargs):
        launches.append(self.function_name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cl.Kernel, "__call__", counting)
    pop(np.ones((1000, 2)), backend=opencl_backend)
    assert launches == ["clnet_fnn_graph"]


# --- non-finite values --------------------------------------------------------------------------
def test_nan_and_inf_propagate_identically_on_every_backend(any_backend):
    w = [np.nan, 1.0, np.inf, -np.inf, 0.0, 1.0, 2.0, 3.0, 1.0, 1.0]
    x = np.array([[1.0, 2.0], [0.0, 1.0], [np.inf, 0.0], [np.nan, 1.0]])
    structure = [2, 2, 2, 1]
    got = clnet.fnn_forward(structure, w, x, backend=any_backend)
    ref = clnet.fnn_forward(structure, w, x, backend="numpy")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(got[~np.isnan(got)], ref[~np.isnan(ref)])
    assert np.isnan(got[0, 0])  # NaN weight times a finite input


# --- bad input ------------------------------------------------------------------------------------
class _NoDevice(type(clnet.get_backend("numpy"))):
    """A backend that fails the test if any operation reaches it."""
    spec = "must-not-run"

    def fnn_layered(self, *a):
        raise AssertionError("device work started before the input was validated")

    fnn_graph = fnn_layered


NO_DEVICE = _NoDevice()


@pytest.mark.parametrize("structure,weights,inputs,kwargs,exc,pattern", [
    ([2, 2, 1], [1, 2, 3, 4, 5], [1, 1], {}, ValueError, r"weights has 5 values but structure \[2, 2, 1\] needs 6 \(sum of n_l \* n_\(l-1\): 2\*2 \+ 1\*2\)"),
    ([2, 0, 1], [], [1, 1], {}, ValueError, r"structure\[1\] must be a positive layer size, got 0"),
    ([2, -3, 1], [], [1, 1], {}, ValueError, r"structure\[1\] must be a positive"),
    ([2], [], [1, 1], {}, ValueError, "at least an input and an output layer"),
    ([2, 2.5, 1], [], [1, 1], {}, TypeError, r"structure\[1\] must be an integer"),
    ("21", [], [1, 1], {}, TypeError, "structure must be a list"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], [1, 1, 1], {}, ValueError, "inputs must have 2 columns"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], np.ones((2, 2, 2)), {}, ValueError, "inputs must be 1 or 2-dimensional"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], [1, 1], {"activation": "swish"}, ValueError, "unknown activation 'swish'; known activations: identity, relu"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], [1, 1], {"activation": ["tanh"]}, ValueError, "one per non-input layer"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], [1, 1], {"biases": [1, 2]}, ValueError, "biases has 2 values but structure"),
    ([2, 2, 1], ["a", "b", "c", "d", "e", "f"], [1, 1], {}, TypeError, "weights must be a numeric array"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], np.array(["x", "y"]), {}, TypeError, "inputs must be a numeric array"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], [True, False], {}, TypeError, "inputs must hold real numbers, got booleans"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], np.array([1j, 2]), {}, TypeError, "complex"),
    ([2, 2, 1], [1, 2, 3, 4, 5, 6], [[1, 2], [3]], {}, TypeError, "inputs must be a numeric array"),
])
def test_bad_layered_input(structure, weights, inputs, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        clnet.fnn_forward(structure, weights, inputs, backend=NO_DEVICE, **kwargs)


@pytest.mark.parametrize("nodes,conns,exc,pattern", [
    ([dict(key=0, activation="nope")], [], ValueError, "unknown node 0 activation 'nope'; known activations"),
    ([dict(key=0, aggregation="softmax")], [], ValueError, "unknown node 0 aggregation 'softmax'; known aggregations: sum, product"),
    ([dict(key=1)], [], ValueError, r"output nodes \[0\] are missing"),
    ([dict(key=0)], [(-3, 0, 1.0)], ValueError, "input pin -3, but there are only 2 inputs"),
    ([dict(key=0)], [(9, 0, 1.0)], ValueError, "starts at node 9, which is not in nodes"),
    ([dict(key=0)], [(-1, -2, 1.0)], ValueError, "ends at input pin -2"),
    ([dict(key=0), dict(key=0)], [], ValueError, "node key 0 appears twice"),
    ([dict(key=0, bias="high")], [], TypeError, "node 0 bias must be a real number"),
    ([dict(key=0)], [(-1, 0, "heavy")], TypeError, r"connections\[0\] weight must be a real number"),
])
def test_bad_graph_input(nodes, conns, exc, pattern):
    with pytest.raises(exc, match=pattern):
        clnet.FNN.from_graph(2, 1, nodes, conns)


def test_bad_population_input():
    a = clnet.FNN.from_structure([2, 1], [1.0, 1.0])
    b = clnet.FNN.from_structure([3, 1], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"nets\[0\] has 2 inputs and 1 outputs, nets\[1\] has 3 and 1"):
        clnet.FNNPopulation([a, b])
    with pytest.raises(ValueError, match="at least one network"):
        clnet.FNNPopulation([])
    with pytest.raises(TypeError, match=r"nets\[1\] must be a clnet.FNN"):
        clnet.FNNPopulation([a, "net"])
    with pytest.raises(ValueError, match="inputs must have 2 columns"):
        clnet.FNNPopulation([a, a])(np.ones((4, 3)), backend=NO_DEVICE)


def test_from_neat_rejects_unknown_activation():
    config = make_config(2, 1, activations=["sigmoid"], aggregations=["sum"])
    g = grow_genome(config, 1, 3, seed=1)
    g.nodes[0].activation = "my_custom"
    with pytest.raises(ValueError, match="unknown node 0 activation 'my_custom'"):
        clnet.FNN.from_neat(g, config)


def test_from_graph_defaults_are_documented_and_hold():
    """A node without an activation is identity, (src, dst) has weight 1.0, duplicates add up:
    the docstring says so, and its example runs."""
    import doctest

    doc = clnet.FNN.from_graph.__doc__
    assert '"identity"' in doc and "weight **1.0**" in doc and "twice" in doc
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(clnet.FNN.from_graph, "from_graph", globs={"FNN": clnet.FNN}):
        runner.run(test)
    assert runner.tries >= 2 and runner.failures == 0
    net = clnet.FNN.from_graph(1, 1, [dict(key=0)], [(-1, 0), (-1, 0, 2.0)])
    assert net([3.0], backend="numpy")[0] == 9.0
    assert clnet.FNN.__call__.__doc__ and clnet.FNNPopulation.__call__.__doc__


# --- populations straight from neat-python genomes --------------------------------------------
def _mutated_weights(genomes, seed):
    import copy
    import random

    rnd = random.Random(seed)
    out = copy.deepcopy(genomes)
    for g in out:
        for cg in g.connections.values():
            cg.weight = rnd.uniform(-2, 2)
        for ng in g.nodes.values():
            ng.bias = rnd.uniform(-1, 1)
    return out


def test_population_from_neat_equals_genome_by_genome_and_neat_python():
    from clnet.bench.neat_genomes import benchmark_population

    config, genomes = benchmark_population(40, seed=3)
    one_by_one = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])
    at_once = clnet.FNNPopulation.from_neat([(i, g) for i, g in enumerate(genomes)], config)  # eval_genomes' pairs
    for name in ("net_node_start", "net_out", "node_act", "node_agg", "node_conn_start", "node_bias",
                 "node_resp", "conn_src", "conn_w"):
        a, b = getattr(one_by_one.packed, name), getattr(at_once.packed, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    # Independent anchor: neat-python's own networks.
    x = np.random.default_rng(0).uniform(-1, 1, size=(5, 8))
    got = at_once(x, backend="numpy", dtype=np.float64)
    for p, g in enumerate(genomes[:10]):
        net = neat.nn.FeedForwardNetwork.create(g, config)
        want = np.array([net.activate(list(r)) for r in x])
        np.testing.assert_allclose(got[p], want, rtol=1e-9, atol=1e-12)


def test_population_from_neat_reuses_structures_when_only_weights_change():
    from clnet.bench.neat_genomes import benchmark_population
    from clnet.fnn import _neat_packer

    config, genomes = benchmark_population(20, seed=5)
    first = clnet.FNNPopulation.from_neat(genomes, config)
    packer = _neat_packer(config)
    built = packer.templates_built
    assert built >= 1
    changed = _mutated_weights(genomes, seed=1)
    second = clnet.FNNPopulation.from_neat(changed, config)
    assert packer.templates_built == built  # no structure pruned and ordered again
    assert second.packed.conn_src is first.packed.conn_src  # the offset tables themselves reused
    assert not np.array_equal(second.packed.conn_w, first.packed.conn_w)
    x = np.random.default_rng(1).uniform(-1, 1, size=(4, 8))
    got = second(x, backend="numpy", dtype=np.float64)
    for p in (0, 7, 19):
        net = neat.nn.FeedForwardNetwork.create(changed[p], config)
        np.testing.assert_allclose(got[p], [net.activate(list(r)) for r in x], rtol=1e-9, atol=1e-12)
    # A reordered population reuses the templates but not the tables.
    third = clnet.FNNPopulation.from_neat(changed[::-1], config)
    assert packer.templates_built == built and third.packed.conn_src is not first.packed.conn_src
    np.testing.assert_array_equal(third(x, backend="numpy")[::-1], second(x, backend="numpy"))


def test_population_from_neat_refuses_bad_input():
    from clnet.bench.neat_genomes import make_config

    config = make_config(2, 1)
    with pytest.raises(ValueError, match="at least one genome"):
        clnet.FNNPopulation.from_neat([], config)
    with pytest.raises(TypeError, match=r"genomes\[0\] must be a neat-python genome"):
        clnet.FNNPopulation.from_neat([object()], config)
    with pytest.raises(TypeError, match="neat-python config"):
        clnet.FNNPopulation.from_neat([], object())
