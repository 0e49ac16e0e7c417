"""Simple paths in small dense graphs: exact counts without listing, and bounded-memory listings.

Public API: :func:`count_simple_paths`, :func:`simple_paths`. Semantics (what a simple
path is, undirected graphs, self-loops and repeated edges, the order of a listing):
``docs/SEMANTICS.md``, Simple paths.

How it is computed, on every backend:

1. Counting is a dynamic program over (visited set, last vertex), one source at a time:
   the number of paths from the source that visit exactly the set S and end at v is the
   sum, over the predecessors u of v in S, of the number that visit S without v and end
   at u. The sets are processed in layers of equal size (paths of equal length), so only
   two layers are held at once, and every count is an exact 128-bit integer
   (clnet.common.paths). A graph of N vertices costs about 2^(N-1) * N^2 / 4 additions
   per source, whatever the number of paths: the complete graph on 24 vertices has
   3.1e21 paths between two vertices and is counted in seconds.
2. Listing walks the paths depth first, split into independent walks below short
   prefixes, and hands them out in chunks of at most ``chunk_size`` rows: memory is
   bounded by the chunk, not by the number of paths.
"""
from __future__ import annotations

import numbers
from typing import Iterator, Optional

import numpy as np

from ._validate import as_int, host_array
from .backend import BackendLike, get_backend, run
from .common import paths as host

__all__ = ["count_simple_paths", "simple_paths"]

# The progress bar appears only when a listing lasts longer than this many seconds.
PROGRESS_DELAY_S = 3.0
# A listing's progress bar gets its total from a count up to this many vertices (a count
# costs about 2^(N-1) * N^3 / 4 additions for every source).
PROGRESS_COUNT_MAX_VERTICES = 20


# ---------------------------------------------------------------------------------------
# Validation (host)
# ---------------------------------------------------------------------------------------
def _is_igraph(graph) -> bool:
    return all(hasattr(graph, a) for a in ("get_edgelist", "vcount", "is_directed"))


def _is_networkx(graph) -> bool:
    return all(hasattr(graph, a) for a in ("nodes", "edges", "adj", "is_directed"))


def adjacency_of(graph, directed: bool = True) -> np.ndarray:
    """``graph`` as a bool (N, N) adjacency without self-loops; symmetric unless ``directed``.

    ``graph``: a square array (0/1, bool, or weighted: nonzero is an edge), a
    scipy.sparse matrix (stored zeros are no edges), an igraph ``Graph`` or a networkx
    graph (vertex i is the i-th node of ``list(G.nodes)``). An undirected graph object is
    symmetric whatever ``directed`` says.
    """
    if not isinstance(directed, (bool, np.bool_)):
        raise TypeError(f"directed must be True or False, got {type(directed).__name__} {directed!r}")
    if _is_igraph(graph):
        n = int(graph.vcount())
        adjacency = np.zeros((n, n), dtype=bool)
        edges = np.asarray(graph.get_edgelist(), dtype=np.int64).reshape(-1, 2)
        adjacency[edges[:, 0], edges[:, 1]] = True
        symmetric = not graph.is_directed()
    elif _is_networkx(graph):
        nodes = list(graph.nodes)
        index = {node: i for i, node in enumerate(nodes)}
        adjacency = np.zeros((len(nodes), len(nodes)), dtype=bool)
        pairs = np.asarray([(index[a], index[b]) for a, b in graph.edges()], dtype=np.int64).reshape(-1, 2)
        adjacency[pairs[:, 0], pairs[:, 1]] = True
        symmetric = not graph.is_directed()
    elif hasattr(graph, "tocoo") and hasattr(graph, "shape"):
        coo = graph.tocoo()
        _check_square(coo.shape)
        values = np.asarray(coo.data)
        _check_values(values)
        adjacency = np.zeros(coo.shape, dtype=bool)
        nonzero = values != 0
        adjacency[np.asarray(coo.row)[nonzero], np.asarray(coo.col)[nonzero]] = True
        symmetric = False
    else:
        try:
            values = host_array(graph)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"graph must be a square array, a scipy.sparse matrix, an igraph Graph or a "
                            f"networkx graph; it could not be converted ({exc})") from None
        _check_square(values.shape)
        _check_values(values)
        adjacency = values != 0
        symmetric = False
    adjacency = np.array(adjacency, dtype=bool, order="C")
    np.fill_diagonal(adjacency, False)  # a self-loop never lies on a simple path
    if symmetric or not directed:
        adjacency |= adjacency.T
    return adjacency


def _check_square(shape) -> None:
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"graph must be a square (N, N) adjacency matrix, got shape {tuple(shape)}")


def _check_values(values: np.ndarray) -> None:
    kind = values.dtype.kind
    if kind == "O":
        try:
            values = values.astype(np.float64)
        except (ValueError, TypeError):
            raise TypeError("graph must hold numbers or booleans, got elements of non-numeric types") from None
        kind = "f"
    if kind not in "biuf":
        raise TypeError(f"graph must hold numbers or booleans (nonzero is an edge), got dtype {values.dtype}")
    if kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError("graph holds NaN or infinite weights; use 0 for no edge and any other finite "
                         "number for an edge")


def _vertex(value, name: str, n: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a vertex index (an integer), got {type(value).__name__} {value!r}")
    value = int(value)
    if not 0 <= value < n:
        raise ValueError(f"{name} = {value} is not a vertex of this graph of {n} vertices (0..{n - 1})")
    return value


def _sources(source, n: int) -> np.ndarray:
    if source is None:
        return np.arange(n, dtype=np.int64)
    return np.array([_vertex(source, "source", n)], dtype=np.int64)


def _targets(target, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    if target is None:
        mask[:] = True
    elif isinstance(target, numbers.Integral) and not isinstance(target, (bool, np.bool_)):
        mask[_vertex(target, "target", n)] = True
    else:
        try:
            items = list(target)
        except TypeError:
            raise TypeError(f"target must be None, a vertex index or a sequence of them, got "
                            f"{type(target).__name__} {target!r}") from None
        for item in items:
            mask[_vertex(item, "target", n)] = True
    return mask


def _check_count_size(backend, n: int) -> None:
    reason = backend.op("paths_count_limit")(n)
    if reason is not None:
        raise ValueError(f"graph has {n} vertices, more than backend {backend.spec!r} can count paths on: "
                         f"{reason}")


# ---------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------
def count_simple_paths(graph, *, source: Optional[int] = None, directed: bool = True, by_length: bool = False,
                       backend: BackendLike = None) -> np.ndarray:
    """The number of simple paths (at least one edge) from i to j for every ordered pair i != j.

    Returns an ``(N, N)`` array (zero on the diagonal); with ``by_length=True`` an
    ``(N, N, N)`` array whose ``[i, j, k]`` counts the paths of k edges; with
    ``source=s`` only the row of s: ``(N,)`` or ``(N, N)``. The counts are exact: uint64
    when every one fits, otherwise an object array of Python ints (they are accumulated
    in 128 bits on every backend). ``directed=False`` follows every edge both ways, as
    igraph's ``mode="all"``. Self-loops and repeated edges add no paths.

    ``graph``: see :func:`adjacency_of`.
    """
    adjacency = adjacency_of(graph, directed)
    n = adjacency.shape[0]
    sources = _sources(source, n)
    if not isinstance(by_length, (bool, np.bool_)):
        raise TypeError(f"by_length must be True or False, got {type(by_length).__name__} {by_length!r}")
    _check_count_size(get_backend(backend), n)

    def work(be):
        _check_count_size(be, n)
        return be.op("paths_count")(adjacency, sources)

    lo, hi = run(backend, "paths_count", work)
    if not by_length:
        lo, hi = host.add_words(lo, hi, axis=2)
    counts = host.to_counts(lo, hi)
    return counts[0] if source is not None else counts


# ---------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------
def simple_paths(graph, source: Optional[int] = None, target=None, *, directed: bool = True,
                 min_length: int = 1, max_length: Optional[int] = None, max_results: Optional[int] = None,
                 chunk_size: int = 1_000_000, backend: BackendLike = None, progress=None) -> Iterator[np.ndarray]:
    """Every simple path from ``source`` (None: every vertex) to ``target`` (None: every
    vertex; or one vertex, or a sequence of them), in chunks.

    Yields int32 arrays of at most ``chunk_size`` rows and ``max_length + 1`` columns
    (``max_length`` defaults to, and is capped at, N - 1): one path per row, vertices in
    order, padded with -1 after its end. Together the chunks list exactly the paths of
    ``min_length`` to ``max_length`` edges that igraph's ``Graph.get_all_simple_paths(source,
    to=target, minlen=min_length, maxlen=max_length, mode=...)`` lists, each once; the
    order is deterministic for one backend but not sorted (sort the rows for a canonical
    order). ``max_results`` stops after that many paths. Memory is bounded by
    ``chunk_size``, not by the number of paths. ``progress``: None shows a tqdm bar (when
    installed, on a terminal) once the listing takes a few seconds, True always, False never.

    Every argument is checked when this is called, before any device work.
    """
    adjacency = adjacency_of(graph, directed)
    n = adjacency.shape[0]
    if n > host.LIST_MAX_VERTICES:
        raise ValueError(f"graph has {n} vertices; listing handles at most {host.LIST_MAX_VERTICES}")
    sources = _sources(source, n)
    targets = _targets(target, n)
    min_length = as_int(min_length, "min_length", minimum=0)
    if max_length is not None:
        max_length = as_int(max_length, "max_length", minimum=1)
        if min_length > max_length:
            raise ValueError(f"min_length ({min_length}) must be <= max_length ({max_length})")
    if max_results is not None:
        max_results = as_int(max_results, "max_results", minimum=0)
    chunk_size = as_int(chunk_size, "chunk_size", minimum=1)
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be None, True or False, got {type(progress).__name__} {progress!r}")
    get_backend(backend)  # an unknown or unusable backend fails here, not at the first chunk
    lowest = max(min_length, 1)
    highest = n - 1 if max_length is None else min(max_length, n - 1)
    if lowest > highest or max_results == 0:
        return iter(())
    return _chunks(backend, adjacency, sources, targets, lowest, highest, max_results, chunk_size, progress)


def _chunks(spec, adjacency, sources, targets, min_length, max_length, max_results, chunk_size,
            progress) -> Iterator[np.ndarray]:
    backend = get_backend(spec)
    listing = run(backend, "paths_listing", lambda be: be.op("paths_listing")(
        adjacency, sources, targets, min_length, max_length), stateless=False)
    bar = _progress(backend, adjacency, sources, targets, min_length, max_length, max_results, progress)
    remaining = max_results
    try:
        while remaining is None or remaining > 0:
            want = chunk_size if remaining is None else min(chunk_size, remaining)
            rows = run(backend, "paths listing", lambda be: listing.next_chunk(want), stateless=False)
            if rows is None:
                break
            if remaining is not None:
                remaining -= len(rows)
            if bar is not None:
                bar.update(len(rows))
            yield rows
    finally:
        if bar is not None:
            bar.close()


def _on_terminal() -> bool:
    import sys

    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())


def _progress(backend, adjacency, sources, targets, min_length, max_length, max_results, progress):
    """A tqdm bar whose total comes from the count, or None."""
    if progress is False or (progress is None and not _on_terminal()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    n = adjacency.shape[0]
    total = None
    if n <= PROGRESS_COUNT_MAX_VERTICES and backend.op("paths_count_limit")(n) is None:
        lo, hi = run(backend, "paths_count", lambda be: be.op("paths_count")(adjacency, sources),
                     stateless=False)
        total = host.expected_listing_total(host.to_counts(lo, hi), targets, min_length, max_length)
        if max_results is not None:
            total = min(total, max_results)
    return tqdm(total=total, desc="simple paths", unit="paths", leave=False,
                delay=PROGRESS_DELAY_S if progress is None else 0.0,
                disable=None if progress is None else False)
