"""Simple paths against the anchors: igraph's get_all_simple_paths, networkx's all_simple_paths,
and the complete graph's closed form; bounded memory, limits, inputs and bad input."""
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clnet
from clnet import paths as public
from clnet.common import paths as host

ig = pytest.importorskip("igraph")
nx = pytest.importorskip("networkx")

# A case is listed in full only up to this many paths; above it the length is cut off
# (igraph's maxlen, networkx's cutoff) where the count says the listing stays this small.
LISTING_LIMIT = 4000


def between_complete(n: int) -> int:
    """Simple paths between two given vertices of K_n: sum_k (n-2)!/(n-2-k)! = floor(e (n-2)!)."""
    return sum(math.factorial(n - 2) // math.factorial(n - 2 - k) for k in range(n - 1))


def random_graph(n, density, directed, self_loops, isolated, duplicates, seed):
    """An igraph Graph (possibly with repeated edges and self-loops) and its edge list."""
    rng = np.random.default_rng(seed)
    adjacency = rng.random((n, n)) < density
    if not self_loops:
        np.fill_diagonal(adjacency, False)
    bare = min(isolated, n)
    if bare:
        adjacency[n - bare:, :] = adjacency[:, n - bare:] = False
    edges = [tuple(map(int, e)) for e in np.argwhere(adjacency)]
    if not directed:
        edges = [(a, b) for a, b in edges if a <= b]
    if duplicates and edges:
        edges += [edges[int(i)] for i in rng.integers(0, len(edges), size=duplicates)]
    return ig.Graph(n=n, edges=edges, directed=directed), edges


def cutoff_for(counts_by_length: np.ndarray) -> int:
    """The longest length whose listing stays under LISTING_LIMIT paths."""
    per_length = counts_by_length.astype(object).sum(axis=(0, 1)) if counts_by_length.size else []
    total, best = 0, 0
    for length in range(1, len(per_length)):
        total += per_length[length]
        if total > LISTING_LIMIT:
            break
        best = length
    return best


graphs = st.fixed_dictionaries(dict(
    n=st.integers(1, 12), density=st.floats(0, 1), directed=st.booleans(), self_loops=st.booleans(),
    isolated=st.integers(0, 2), duplicates=st.integers(0, 3), seed=st.integers(0, 2**32 - 1)))


@settings(max_examples=25)
@given(case=graphs)
def test_counts_and_listings_equal_igraph_and_networkx(any_backend, case):
    g, edges = random_graph(**case)
    n, directed = case["n"], case["directed"]
    mode = "out" if directed else "all"
    by_length = clnet.count_simple_paths(g, by_length=True, backend=any_backend)
    assert by_length.shape == (n, n, n)
    assert np.array_equal(clnet.count_simple_paths(g, backend=any_backend), by_length.sum(axis=2))
    cutoff = cutoff_for(by_length)
    igraph_counts = np.zeros((n, n, n), dtype=np.int64)
    igraph_set = set()
    for source in range(n):
        for p in g.get_all_simple_paths(source, maxlen=cutoff, mode=mode) if cutoff else []:
            igraph_counts[p[0], p[-1], len(p) - 1] += 1
            igraph_set.add(tuple(p))
    assert np.array_equal(by_length[:, :, :cutoff + 1], igraph_counts[:, :, :cutoff + 1])
    if cutoff == n - 1:  # the whole listing was small: every count is checked
        assert int(by_length.astype(object).sum()) == len(igraph_set)

    simple = (nx.DiGraph if directed else nx.Graph)()
    simple.add_nodes_from(range(n))
    simple.add_edges_from((a, b) for a, b in edges if a != b)
    nx_counts = np.zeros((n, n, n), dtype=np.int64)
    for source in range(n):
        others = [t for t in range(n) if t != source]
        for p in nx.all_simple_paths(simple, source, others, cutoff=cutoff) if cutoff and others else []:
            nx_counts[p[0], p[-1], len(p) - 1] += 1
    assert np.array_equal(nx_counts, igraph_counts)

    listed = set()
    rows = 0
    for chunk in clnet.simple_paths(g, max_length=max(cutoff, 1), chunk_size=97, backend=any_backend):
        rows += len(chunk)
        listed.update(tuple(int(v) for v in row if v >= 0) for row in chunk)
    assert rows == len(listed)
    assert listed == igraph_set


@settings(max_examples=15)
@given(case=graphs, data=st.data())
def test_listing_with_source_target_and_lengths_equals_igraph(any_backend, case, data):
    g, _ = random_graph(**case)
    n = case["n"]
    mode = "out" if case["directed"] else "all"
    cutoff = cutoff_for(clnet.count_simple_paths(g, by_length=True, backend=any_backend))
    source = data.draw(st.integers(0, n - 1))
    targets = data.draw(st.one_of(st.none(), st.lists(st.integers(0, n - 1), min_size=1, max_size=3)))
    low = data.draw(st.integers(0, max(cutoff, 1)))
    high = data.draw(st.integers(max(low, 1), max(cutoff, low, 1)))
    want = g.get_all_simple_paths(source, to=targets, minlen=low, maxlen=high, mode=mode)
    got = [tuple(int(v) for v in row if v >= 0) for chunk in
           clnet.simple_paths(g, source, targets, min_length=low, max_length=high, chunk_size=13,
                              backend=any_backend) for row in chunk]
    assert sorted(got) == sorted(tuple(p) for p in want)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 12, 16])
def test_complete_graph_closed_form(any_backend, n):
    counts = clnet.count_simple_paths(1 - np.eye(n), backend=any_backend)
    expected = np.full((n, n), between_complete(n))
    np.fill_diagonal(expected, 0)
    assert counts.dtype == np.uint64
    assert np.array_equal(counts, expected)
    by_length = clnet.count_simple_paths(1 - np.eye(n), source=0, by_length=True, backend=any_backend)
    # k edges: choose and order the k - 1 inner vertices among the n - 2 others.
    row = [0] + [math.factorial(n - 2) // math.factorial(n - 1 - k) for k in range(1, n)]
    assert by_length[1].tolist() == row


def test_complete_graph_on_20_vertices_one_source(any_backend):
    counts = clnet.count_simple_paths(np.ones((20, 20)), source=7, backend=any_backend)
    assert counts.dtype == np.uint64
    assert counts[7] == 0 and set(counts[:7].tolist() + counts[8:].tolist()) == {between_complete(20)}


def test_complete_graph_beyond_64_bits(opencl_backend):
    """K_23 has 4.2e20 paths between two vertices: the 128-bit words carry, the result is exact."""
    n = 23
    counts = clnet.count_simple_paths(np.ones((n, n), dtype=bool), source=0, by_length=True,
                                      backend=opencl_backend)
    assert counts.dtype == object
    assert between_complete(n) > 2**64
    assert sum(counts[5]) == between_complete(n)
    assert counts[5][n - 1] == math.factorial(n - 2)


def test_words_carry_exactly():
    """The NumPy reference's 128-bit sums against Python ints, with carries in every limb."""
    rng = np.random.default_rng(3)
    values = [[int(rng.integers(0, 2**62)) * int(rng.integers(1, 2**58)) * 7 + int(rng.integers(0, 2**63))
               for _ in range(9)] for _ in range(5)]
    lo, hi = host.from_ints(values)
    total_lo, total_hi = host.add_words(lo, hi, axis=1)
    assert host.to_counts(total_lo, total_hi).tolist() == [sum(v) for v in values]
    assert host.to_counts(*host.from_ints([[1, 2]])).dtype == np.uint64


def test_numpy_layer_sums_carry_beyond_64_bits():
    """The NumPy reference's per-state sums and per-vertex totals against Python ints, on words
    as large as the counts of K_24 (the same code counts every graph)."""
    from clnet_fallback import paths as reference

    rng = np.random.default_rng(4)
    values = [[int(rng.integers(0, 2**62)) * int(rng.integers(1, 2**60)) for _ in range(6)] for _ in range(7)]
    lo, hi = host.from_ints(values)
    edge = (rng.random((7, 6)) < 0.6).astype(np.uint64)
    got = host.to_counts(*reference._dot_words(lo, hi, edge))
    assert got.tolist() == [sum(v for v, e in zip(row, es) if e) for row, es in zip(values, edge.tolist())]
    bits = np.array([rng.permutation(6) for _ in range(7)], dtype=np.uint8)
    lo_out = np.zeros((6, 3), dtype=np.uint64)
    hi_out = np.zeros_like(lo_out)
    reference._scatter_totals(lo_out, hi_out, 2, bits, lo, hi)
    totals = [sum(values[r][c] for r in range(7) for c in range(6) if bits[r, c] == w) for w in range(6)]
    assert host.to_counts(lo_out[:, 2], hi_out[:, 2]).tolist() == totals
    assert max(totals) > 2**64


def test_graph_inputs_agree(any_backend):
    sparse = pytest.importorskip("scipy.sparse")
    edges = [(0, 1), (1, 2), (2, 0), (2, 3), (3, 3), (0, 1)]
    dense = np.zeros((5, 5))
    for a, b in edges:
        dense[a, b] += 2.5
    expected = clnet.count_simple_paths(dense > 0, backend=any_backend)
    g_nx = nx.MultiDiGraph()
    g_nx.add_nodes_from(range(5))
    g_nx.add_edges_from(edges)
    for graph in (dense, dense.tolist(), sparse.csr_matrix(dense), ig.Graph(n=5, edges=edges, directed=True),
                  g_nx, nx.DiGraph(g_nx)):
        assert np.array_equal(clnet.count_simple_paths(graph, backend=any_backend), expected)
    explicit_zero = sparse.csr_matrix((np.array([0.0, 1.0]), (np.array([0, 1]), np.array([1, 2]))), shape=(3, 3))
    assert clnet.count_simple_paths(explicit_zero, backend=any_backend).tolist() == [[0, 0, 0], [0, 0, 1],
                                                                                    [0, 0, 0]]
    undirected = clnet.count_simple_paths(dense, directed=False, backend=any_backend)
    assert np.array_equal(undirected, clnet.count_simple_paths(ig.Graph(n=5, edges=edges), backend=any_backend))
    assert np.array_equal(undirected, undirected.T)


def test_empty_and_single_vertex_graphs(any_backend):
    assert clnet.count_simple_paths(np.zeros((0, 0)), backend=any_backend).shape == (0, 0)
    assert clnet.count_simple_paths(np.zeros((0, 0)), by_length=True, backend=any_backend).shape == (0, 0, 0)
    assert clnet.count_simple_paths(np.ones((1, 1)), backend=any_backend).tolist() == [[0]]
    assert list(clnet.simple_paths(np.ones((1, 1)), backend=any_backend)) == []
    assert list(clnet.simple_paths(np.zeros((0, 0)), backend=any_backend)) == []


def test_max_results_and_chunk_size(any_backend):
    complete = np.ones((7, 7))
    total = int(clnet.count_simple_paths(complete, backend=any_backend).sum())
    chunks = list(clnet.simple_paths(complete, chunk_size=100, max_results=1234, backend=any_backend))
    assert sum(len(c) for c in chunks) == 1234 and all(1 <= len(c) <= 100 for c in chunks)
    assert sum(len(c) for c in clnet.simple_paths(complete, chunk_size=1000, backend=any_backend)) == total
    assert list(clnet.simple_paths(complete, max_results=0, backend=any_backend)) == []
    rows = np.concatenate(list(clnet.simple_paths(complete, 0, 6, max_length=3, backend=any_backend)))
    assert rows.shape == (1 + 5 + 20, 4)  # 0-6, then through one or two of the five others


def test_listing_memory_is_bounded_by_the_chunk():
    """About a million paths of K_10 from one vertex, listed 5,000 at a time, on the NumPy
    reference: the peak of allocated memory stays far below the 39 MB the listing would take."""
    complete = np.ones((10, 10))
    tracemalloc.start()
    try:
        rows = 0
        for chunk in clnet.simple_paths(complete, 0, chunk_size=5000, backend="numpy"):
            rows += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == 9 * between_complete(10)
    assert rows * 10 * 4 > 35e6 and peak < 20e6, peak


def test_opencl_walks_resume_across_launches(opencl_backend, monkeypatch):
    """Walks cut by the step budget and by one-row chunks list the same paths as the reference."""
    from clnet.opencl import paths as device

    monkeypatch.setattr(device, "LIST_STEPS_PER_LAUNCH", 1)
    monkeypatch.setattr(device, "LIST_MIN_STEPS", 5)
    monkeypatch.setattr(device, "LIST_WALKS_PER_UNIT", 2)
    rng = np.random.default_rng(11)
    graph = rng.random((7, 7)) < 0.4
    for chunk_size in (1, 7, 1000):
        got = np.concatenate(list(clnet.simple_paths(graph, chunk_size=chunk_size, backend=opencl_backend)))
        want = np.concatenate(list(clnet.simple_paths(graph, backend="numpy")))
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))


def test_progress_bar_total_is_the_count(monkeypatch):
    pytest.importorskip("tqdm")
    graph = np.ones((6, 6))
    adjacency = public.adjacency_of(graph)
    bar = public._progress(clnet.get_backend("numpy"), adjacency, np.array([0, 1]), np.ones(6, bool), 2, 4,
                           None, True)
    try:
        assert bar.total == 2 * 5 * (4 * 1 + 4 * 3 + 4 * 3 * 2)  # from 2 sources, 2 to 4 edges
    finally:
        bar.close()
    assert public._progress(clnet.get_backend("numpy"), adjacency, np.array([0]), np.ones(6, bool), 1, 5,
                            None, False) is None


@pytest.mark.parametrize("call, error, words", [
    (lambda: clnet.count_simple_paths(np.zeros((3, 4))), ValueError, "square"),
    (lambda: clnet.count_simple_paths(np.zeros(3)), ValueError, "square"),
    (lambda: clnet.count_simple_paths(np.array([["a"]])), TypeError, "numbers"),
    (lambda: clnet.count_simple_paths(np.array([[0, np.nan], [1, 0]])), ValueError, "NaN"),
    (lambda: clnet.count_simple_paths(np.ones((3, 3)), source=3), ValueError, "source = 3"),
    (lambda: clnet.count_simple_paths(np.ones((3, 3)), source=-1), ValueError, "source = -1"),
    (lambda: clnet.count_simple_paths(np.ones((3, 3)), source=1.0), TypeError, "source"),
    (lambda: clnet.count_simple_paths(np.ones((3, 3)), directed="yes"), TypeError, "directed"),
    (lambda: clnet.count_simple_paths(np.ones((3, 3)), by_length=1), TypeError, "by_length"),
    (lambda: clnet.count_simple_paths(np.ones((40, 40))), ValueError, "40 vertices"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), target=5), ValueError, "target = 5"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), target=[0, -2]), ValueError, "target = -2"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), source=9), ValueError, "source = 9"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), min_length=3, max_length=2), ValueError, "min_length"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), min_length=-1), ValueError, "min_length"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), max_length=0), ValueError, "max_length"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), chunk_size=0), ValueError, "chunk_size"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), max_results=-1), ValueError, "max_results"),
    (lambda: clnet.simple_paths(np.ones((3, 3)), progress="yes"), TypeError, "progress"),
    (lambda: clnet.simple_paths(np.ones((65, 65))), ValueError, "65 vertices"),
])
def test_bad_input_is_refused_before_any_work(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_a_count_beyond_the_device_is_refused_before_any_work(any_backend, monkeypatch):
    calls = []
    monkeypatch.setattr(type(any_backend), "paths_count", lambda self, *a: calls.append(a))
    with pytest.raises(ValueError, match="33 vertices"):
        clnet.count_simple_paths(np.ones((33, 33)), backend=any_backend)
    assert calls == []
    assert "GiB" in clnet.get_backend("numpy").paths_count_limit(31) or \
        "memory" in clnet.get_backend("numpy").paths_count_limit(31)


def test_bench_paths_refuses_a_bad_source_count_before_any_work(capsys):
    from clnet.bench import paths as bench

    with pytest.raises(SystemExit):
        bench.main(["--igraph-sources", "0"])
    assert "--igraph-sources must be between 1 and 13" in capsys.readouterr().err
    assert int(bench.seed_graph().sum()) == 91 and bench.seed_graph().shape == (13, 13)
