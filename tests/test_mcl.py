"""Markov clustering against the mcl program itself (Debian package mcl 22-282).

Every comparison runs mcl on the same graph, written in mcl's matrix format, with the same
parameters; nothing here is computed by the code under test to be compared with itself.
"""
import numpy as np
import pytest

import clnet
from clnet.bench import mcl_binary
from clnet.common.mcl_graphs import planted_edges, planted_graph

sp = pytest.importorskip("scipy.sparse")

needs_mcl = pytest.mark.skipif(not mcl_binary.available(), reason="the mcl program is not installed "
                               "(apt-get install mcl)")
NO_PRUNING = dict(prune=0.0, select=10**9, recover=10**9)
MCL_NO_PRUNING = ("-P", "0", "-S", "0", "-R", "0")


def same_partition(ref, got):
    return len(ref) == len(got) and all(np.array_equal(np.sort(a), b) for a, b in zip(ref, got))


def dense_planted(n, rng, weighted=True, isolated=0, asymmetric=False):
    rows, cols, w, _ = planted_edges(n, int(rng.integers(2, 6)), 3, 0.5, rng, weighted)
    g = np.zeros((n, n))
    g[rows, cols] = w
    if isolated:
        nodes = rng.choice(n, isolated, replace=False)
        g[nodes, :] = 0
        g[:, nodes] = 0
    if asymmetric:
        g = g * (rng.random((n, n)) < 0.85)
    return g


CASES = [
    ("planted 10", dict(n=10)),
    ("planted 60 unweighted", dict(n=60, weighted=False)),
    ("planted 120 with isolated nodes", dict(n=120, isolated=7)),
    ("planted 90 asymmetric", dict(n=90, asymmetric=True)),
    ("planted 150", dict(n=150)),
]


@needs_mcl
@pytest.mark.parametrize("inflation,dtype", [(1.4, "float64"), (2.0, "float64"), (2.0, "float32"), (3.5, "float32")])
@pytest.mark.parametrize("name,case", CASES, ids=[c[0] for c in CASES])
def test_identical_to_mcl_without_pruning(any_backend, name, case, inflation, dtype):
    g = dense_planted(rng=np.random.default_rng(len(name) * 7 + int(inflation * 10)), **case)
    ref = mcl_binary.cluster(g, inflation, extra=MCL_NO_PRUNING)
    got = clnet.mcl(g, inflation, backend=any_backend, dtype=dtype, **NO_PRUNING)
    assert same_partition(ref, got.clusters), mcl_binary.split_join_distance(ref, got.clusters, len(g))
    assert all(np.all(got.labels[c] == cid) for cid, c in enumerate(got.clusters))
    assert sum(len(c) for c in got.clusters) == len(g)


@needs_mcl
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n,degree", [(300, 8), (800, 12)])
def test_default_pruning_planted_distance_zero(any_backend, n, degree, dtype):
    g, _ = planted_graph(n, n // 40 + 2, degree_in=degree, degree_out=1.0, seed=n)
    ref = mcl_binary.cluster(g)
    got = clnet.mcl(g, backend=any_backend, dtype=dtype)
    assert mcl_binary.split_join_distance(ref, got.clusters, n) == (0, 0)
    assert same_partition(ref, got.clusters)


@needs_mcl
def test_selection_and_recovery_match_mcl(any_backend):
    # Small S and R make both fire on a 150-node graph: the expanded columns hold ~100 entries.
    g = dense_planted(150, np.random.default_rng(3))
    for extra, kw in [(("-S", "12", "-R", "20"), dict(select=12, recover=20)),
                      (("-P", "50", "-S", "8", "-R", "30", "-pct", "95"),
                       dict(prune=0.99999 / 50, select=8, recover=30, recover_pct=95))]:
        ref = mcl_binary.cluster(g, 2.0, extra=extra)
        got = clnet.mcl(g, 2.0, backend=any_backend, dtype="float64", **kw)
        assert same_partition(ref, got.clusters), (extra, mcl_binary.split_join_distance(ref, got.clusters, 150))


@needs_mcl
def test_pearson_threshold_graph_of_curves(any_backend):
    rng = np.random.default_rng(5)
    shapes = np.stack([np.sin(np.linspace(0, 6, 40) * (k + 1)) for k in range(4)])
    truth = rng.integers(0, 4, 80)
    curves = shapes[truth] * rng.uniform(0.5, 2, (80, 1)) + rng.normal(0, 0.3, (80, 40))
    curves[rng.random(curves.shape) < 0.1] = np.nan
    r = clnet.pearson_threshold(curves, 0.5, transform="diff", backend="numpy", dtype="float64")
    g = r.multiply(r > 0).tocsr()
    g.eliminate_zeros()
    ref = mcl_binary.cluster(g)
    got = clnet.mcl(g, backend=any_backend, dtype="float64")
    assert same_partition(ref, got.clusters)


@needs_mcl
def test_topk_pair_is_symmetrised_like_mcl_label_input(any_backend, tmp_path):
    rng = np.random.default_rng(9)
    curves = np.repeat(rng.normal(size=(3, 30)), 20, axis=0) + rng.normal(0, 0.5, (60, 30))
    indices, values = clnet.pearson_topk(curves, 6, backend="numpy", dtype="float64")
    src = np.repeat(np.arange(60), 6)
    path = str(tmp_path / "g.abc")
    mcl_binary.write_abc(src, indices.ravel(), values.ravel(), path)
    ref, _ = mcl_binary.run(path, 2.0, abc=True)
    got = clnet.mcl((indices, values), backend=any_backend, dtype="float64")
    assert sorted(map(tuple, ref)) == sorted(tuple(c) for c in got.clusters)


@needs_mcl
def test_keep_loops_is_mcl_discard_loops_n(any_backend):
    g = dense_planted(50, np.random.default_rng(11))
    g[np.arange(50), np.arange(50)] = np.random.default_rng(1).uniform(0.1, 3, 50)
    ref = mcl_binary.cluster(g, 2.0, extra=("--discard-loops=n",))
    got = clnet.mcl(g, backend=any_backend, dtype="float64", loops="keep")
    assert same_partition(ref, got.clusters)


@pytest.fixture(scope="module")
def planted_20000():
    g, _ = planted_graph(20000, 400, degree_in=8, degree_out=0.5, seed=20000)
    return g, mcl_binary.cluster(g)  # mcl runs once for every backend and dtype


@pytest.mark.slow
@needs_mcl
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_planted_20000_nodes_distance_zero(any_backend, dtype, planted_20000):
    g, ref = planted_20000
    got = clnet.mcl(g, backend=any_backend, dtype=dtype)
    assert mcl_binary.split_join_distance(ref, got.clusters, 20000) == (0, 0)


def test_result_order_labels_and_fields(any_backend):
    g = np.zeros((9, 9))
    for block in ([0, 4], [1, 2, 3], [5, 6, 7]):
        g[np.ix_(block, block)] = 1.0
    res = clnet.mcl(g, backend=any_backend)
    assert [c.tolist() for c in res.clusters] == [[1, 2, 3], [5, 6, 7], [0, 4], [8]]
    assert res.labels.tolist() == [2, 0, 0, 0, 2, 1, 1, 1, 3]
    assert res.converged and res.iterations >= 1 and 0 <= res.chaos < 1e-4


def test_permuting_nodes_permutes_labels(any_backend):
    g, _ = planted_graph(150, 5, degree_in=5, seed=2)
    g = g.toarray()
    perm = np.random.default_rng(0).permutation(150)
    a = clnet.mcl(g, backend=any_backend, dtype="float64")
    b = clnet.mcl(g[np.ix_(perm, perm)], backend=any_backend, dtype="float64")
    assert sorted(tuple(c) for c in a.clusters) == sorted(tuple(np.sort(perm[c])) for c in b.clusters)


def test_inputs_agree_sparse_dense_formats(any_backend):
    g, _ = planted_graph(80, 3, degree_in=4, seed=4)
    ref = clnet.mcl(g.toarray(), backend=any_backend).labels
    for form in (g.tocsc(), g.tocoo(), sp.lil_matrix(g), g.astype(np.float32)):
        assert np.array_equal(clnet.mcl(form, backend=any_backend).labels, ref)


@needs_mcl
@pytest.mark.parametrize("n", [5, 33])
def test_columns_that_touch_every_row_before_their_last_terms(any_backend, n):
    """Dense graphs: every column of the square touches all N rows and has more terms after
    (N^2 terms, N rows), the one case where the expansion's row record writes its spare slot
    past the column's last row (kernels/mcl.cl); two dense blocks joined by one edge, and a
    complete graph, against mcl itself, with and without pruning, in both dtypes."""
    rng = np.random.default_rng(n)
    half = n // 2
    g = np.zeros((n, n))
    g[:half, :half] = rng.uniform(0.5, 1.0, (half, half))
    g[half:, half:] = rng.uniform(0.5, 1.0, (n - half, n - half))
    g[0, n - 1] = 0.1
    g = np.maximum(g, g.T)
    complete = np.ones((n, n))
    for graph in (g, complete):
        for extra, kw in [((), {}), (MCL_NO_PRUNING, NO_PRUNING)]:
            ref = mcl_binary.cluster(graph, 2.0, extra=extra)
            for dtype in ("float64", "float32"):
                got = clnet.mcl(graph, 2.0, backend=any_backend, dtype=dtype, **kw)
                assert same_partition(ref, got.clusters), (dtype, extra, mcl_binary.split_join_distance(ref, got.clusters, n))


def test_empty_and_edgeless_graphs(any_backend):
    empty = clnet.mcl(np.zeros((0, 0)), backend=any_backend)
    assert empty.labels.shape == (0,) and empty.clusters == [] and empty.converged
    res = clnet.mcl(np.zeros((4, 4)), backend=any_backend)
    assert res.labels.tolist() == [0, 1, 2, 3] and [c.tolist() for c in res.clusters] == [[0], [1], [2], [3]]


@pytest.mark.parametrize("kwargs,match", [
    (dict(inflation=1.0), "inflation"), (dict(inflation=0.5), "inflation"), (dict(inflation=float("nan")), "inflation"),
    (dict(expansion=1), "expansion"), (dict(expansion=2.5), "expansion"), (dict(expansion=True), "expansion"),
    (dict(select=0), "select"), (dict(select=3.0), "select"), (dict(recover=-1), "recover"),
    (dict(prune=1.0), "prune"), (dict(prune=-0.1), "prune"), (dict(recover_pct=100), "recover_pct"),
    (dict(loops="none"), "loops"), (dict(max_iterations=0), "max_iterations"), (dict(progress="yes"), "progress"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        clnet.mcl(np.ones((3, 3)), backend="numpy", **kwargs)


def test_bad_graphs():
    with pytest.raises(ValueError, match="square"):
        clnet.mcl(np.ones((3, 4)))
    with pytest.raises(ValueError, match="square"):
        clnet.mcl(sp.csr_matrix(np.ones((2, 3))))
    g = np.ones((4, 4))
    g[0, 1], g[2, 3], g[1, 1] = -1, np.nan, -2
    with pytest.raises(ValueError, match=r"2 negative and 1 non-finite.*np\.where"):
        clnet.mcl(g)
    with pytest.raises(ValueError, match="1 negative"):
        clnet.mcl(sp.csr_matrix(np.array([[0, -1.0], [1, 0]])))
    indices = np.array([[1, -1], [0, -1]])
    with pytest.raises(ValueError, match=r"1 negative.*indices = np.where"):
        clnet.mcl((indices, np.array([[0.5, np.nan], [-0.5, np.nan]])))
    with pytest.raises(ValueError, match="indices"):
        clnet.mcl((np.array([[5]]), np.array([[1.0]])))
    with pytest.raises(TypeError, match="graph"):
        clnet.mcl(np.array([["a"]]))


def dense_mcl_iterands(g, inflation, expansion, steps):
    """The MCL process written out densely, without pruning: an independent reference."""
    m = g.copy()
    np.fill_diagonal(m, 0)
    loops = m.max(axis=0)
    m[np.arange(len(m)), np.arange(len(m))] = np.where(loops > 0, loops, 1.0)
    m = m / m.sum(axis=0)
    out = []
    for _ in range(steps):
        m = np.linalg.matrix_power(m, expansion) ** inflation
        m = m / m.sum(axis=0)
        out.append(m)
    return out


@pytest.mark.parametrize("expansion", [2, 3])
def test_iterands_equal_the_dense_process_without_pruning(any_backend, expansion):
    from clnet.common.mcl import MCLParams
    from clnet.mcl import start_matrix

    g = dense_planted(30, np.random.default_rng(21))
    plan = any_backend.op("mcl_plan")(start_matrix(g), np.dtype("float64"),
                                      MCLParams(expansion, 0.0, 10**6, 10**6, 0.9))
    for step, ref in enumerate(dense_mcl_iterands(g, 1.7, expansion, 4)):
        plan.iterate(1.7)
        got = plan.current().to_dense()
        np.testing.assert_allclose(got, np.where(ref > 0, ref, 0), atol=1e-12, err_msg=f"iteration {step + 1}")


def test_opencl_blocks_and_a_grown_next_iterand_equal_the_dense_process(opencl_backend, monkeypatch):
    """Many small column blocks, fewer lanes than columns, and a next iterand allocated too
    small (CAPACITY_MARGIN below 1) so that blocks must grow it: the iterands stay those of
    the dense process, for expansion 2 and 3."""
    from clnet.common.mcl import MCLParams
    from clnet.mcl import start_matrix
    from clnet.opencl import mcl as opencl_mcl

    monkeypatch.setattr(opencl_mcl, "BLOCK_TERMS", 150)
    monkeypatch.setattr(opencl_mcl, "LANES", 3)
    monkeypatch.setattr(opencl_mcl, "CAPACITY_MARGIN", 0.3)
    g = dense_planted(30, np.random.default_rng(22))
    for expansion in (2, 3):
        plan = opencl_backend.op("mcl_plan")(start_matrix(g), np.dtype("float64"),
                                             MCLParams(expansion, 0.0, 10**6, 10**6, 0.9))
        for step, ref in enumerate(dense_mcl_iterands(g, 1.7, expansion, 3)):
            plan.iterate(1.7)
            got = plan.current().to_dense()
            np.testing.assert_allclose(got, np.where(ref > 0, ref, 0), atol=1e-12,
                                       err_msg=f"expansion {expansion}, iteration {step + 1}")


def test_topk_pair_without_any_edge_is_every_node_alone(any_backend):
    indices = np.full((5, 2), -1)
    res = clnet.mcl((indices, np.zeros((5, 2))), backend=any_backend)
    assert res.labels.tolist() == [0, 1, 2, 3, 4] and res.n_clusters == 5
