"""Benchmark of simple paths: ``python -m clnet bench paths [--quick] [--igraph-sources K]``.

Every ratio is measured in this one run, against igraph and networkx on the same machine:

1. The seed's case, a random 13-vertex digraph with 91 arcs (seed 5; 52.8 million simple
   paths): counting every pair (target under 10 ms), and listing every path in chunks of
   one million in a child process, with its peak resident memory (targets: >= 10x faster
   than igraph, under 500 MB). igraph's ``get_all_simple_paths`` returns Python lists, so it
   is run one source at a time in a child process (``--igraph-sources`` of them, all 13 with
   ``--igraph-sources 13``) and its time for the whole graph is extrapolated from its rate
   when not every source ran; networkx's generator is timed on its first paths.
2. All-pairs counts on a dense N=20 digraph (density 0.8) and single-source counts on the
   complete graph on 24 vertices, where a listing would hold billions of paths: igraph is
   timed with ``max_results`` and its time for the whole listing is extrapolated from the
   count, shown as an extrapolation. ``--quick`` skips the NumPy fallback here.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np

from .. import _cli as cli

from . import best_time

SEED_VERTICES, SEED_ARCS, SEED = 13, 91, 5


def seed_graph() -> np.ndarray:
    """The seed's shape: 13 vertices, 91 of the 156 possible arcs, drawn with a fixed seed."""
    rng = np.random.default_rng(SEED)
    n = SEED_VERTICES
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    adjacency = np.zeros((n, n), dtype=bool)
    for index in rng.choice(len(pairs), SEED_ARCS, replace=False):
        adjacency[pairs[index]] = True
    return adjacency


def dense_graph(n: int, density: float, seed: int = 1) -> np.ndarray:
    adjacency = np.random.default_rng(seed).random((n, n)) < density
    np.fill_diagonal(adjacency, False)
    return adjacency


def _peak_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def clnet_listing(spec: str) -> dict:
    """Run in a child process: list every path of the seed graph in chunks, with peak memory."""
    import clnet

    graph = seed_graph()
    list(clnet.simple_paths(graph, max_results=10, backend=spec))  # kernels built before timing
    before = _peak_bytes()
    t0 = time.perf_counter()
    rows = 0
    for chunk in clnet.simple_paths(graph, chunk_size=1_000_000, backend=spec, progress=False):
        rows += len(chunk)
    return dict(seconds=time.perf_counter() - t0, rows=rows, peak_bytes=_peak_bytes(), start_bytes=before)


def igraph_listing(sources) -> dict:
    """Run in a child process: igraph's lists of every path from each source, one at a time."""
    import igraph

    graph = igraph.Graph.Adjacency(seed_graph().astype(int).tolist(), mode="directed")
    before = _peak_bytes()
    t0 = time.perf_counter()
    rows = 0
    for source in sources:
        found = graph.get_all_simple_paths(source)
        rows += len(found)
        del found
    return dict(seconds=time.perf_counter() - t0, rows=rows, peak_bytes=_peak_bytes(), start_bytes=before)


def _child(call: str, timeout: float) -> dict:
    code = f"import json; from clnet.bench.paths import *; print(json.dumps({call}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "child failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _optional(name: str):
    try:
        return __import__(name)
    except ImportError:
        print(f"   {name} is not installed: pip install {name} (comparison skipped)")
        return None


def _igraph_rate(ig, adjacency: np.ndarray, limit: int) -> float:
    """igraph's seconds per path when it lists ``limit`` paths from vertex 0."""
    graph = ig.Graph.Adjacency(adjacency.astype(int).tolist(), mode="directed")
    t0 = time.perf_counter()
    found = graph.get_all_simple_paths(0, max_results=limit)
    return (time.perf_counter() - t0) / max(len(found), 1)


def _years(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds:.0f} s"
    if seconds < 86400 * 365:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / (86400 * 365):.2g} years"


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench paths", __doc__)
    parser.add_argument("--backend", default=None, help="backend spec (default: the best usable one)")
    parser.add_argument("--quick", action="store_true", help="skip the NumPy fallback in part 2")
    parser.add_argument("--igraph-sources", type=int, default=2,
                        help="sources igraph lists in full in part 1 (1..13; default 2, the rest extrapolated)")
    args = parser.parse_args(argv)
    if not 1 <= args.igraph_sources <= SEED_VERTICES:
        parser.error(f"--igraph-sources must be between 1 and {SEED_VERTICES}, got {args.igraph_sources}")

    import clnet

    be = clnet.get_backend(args.backend)
    print(f"clnet {clnet.__version__} simple-paths benchmark; backend {be.spec} ({be.description})")
    ig, nx = _optional("igraph"), _optional("networkx")

    graph = seed_graph()
    print(f"\n1. the seed's case: {SEED_VERTICES} vertices, {int(graph.sum())} arcs, every ordered pair")
    counts = clnet.count_simple_paths(graph, backend=be)
    total = int(counts.sum())
    t_count = best_time(lambda: clnet.count_simple_paths(graph, backend=be), 20)
    t_count_fb = best_time(lambda: clnet.count_simple_paths(graph, backend="numpy"), 5)
    print(f"   simple paths: {total:,}")
    print(f"   count, clnet {be.spec:<24} {t_count * 1e3:9.2f} ms (target < 10 ms: "
          f"{'met' if t_count < 0.010 else 'NOT met'})")
    print(f"   count, clnet NumPy fallback          {t_count_fb * 1e3:9.2f} ms")
    mine = _child(f"clnet_listing({be.spec!r})", timeout=3600)
    mb = mine["peak_bytes"] / 1e6
    print(f"   list, clnet {be.spec:<25} {mine['seconds']:9.2f} s for {mine['rows']:,} paths in chunks of 1e6, "
          f"peak resident memory {mb:.0f} MB (target < 500 MB: {'met' if mb < 500 else 'NOT met'})")
    if ig is not None:
        sources = list(range(args.igraph_sources))
        theirs = _child(f"igraph_listing({sources!r})", timeout=7200)
        full = args.igraph_sources == SEED_VERTICES
        seconds = theirs["seconds"] if full else theirs["seconds"] / theirs["rows"] * total
        label = "measured" if full else (f"extrapolated from {theirs['rows']:,} paths of sources "
                                         f"0..{args.igraph_sources - 1} in {theirs['seconds']:.1f} s")
        grown = (theirs["peak_bytes"] - theirs["start_bytes"]) / max(theirs["rows"], 1)
        print(f"   list, igraph get_all_simple_paths      {seconds:9.2f} s ({label}); its lists grow by "
              f"{grown:.0f} bytes per path: {grown * total / 1e9:.1f} GB for the whole graph at once")
        speedup = seconds / mine["seconds"]
        print(f"   speed-up of the listing vs igraph: {speedup:.1f}x (target >= 10x: "
              f"{'met' if speedup >= 10 else 'NOT met'})")
    if nx is not None:
        g_nx = nx.DiGraph(graph)
        limit = 300_000
        t0 = time.perf_counter()
        got = sum(1 for _ in itertools.islice(nx.all_simple_paths(g_nx, 0, list(range(1, SEED_VERTICES))), limit))
        rate = (time.perf_counter() - t0) / got
        print(f"   list, networkx all_simple_paths       {rate * total:9.2f} s (extrapolated from its first "
              f"{got:,} paths); speed-up {rate * total / mine['seconds']:.1f}x")

    print("\n2. counts where a listing would hold billions of paths (igraph extrapolated from max_results)")
    cases = [("all pairs, N=20, density 0.8", dense_graph(20, 0.8), None, 10.0),
             ("one source, complete graph N=24", 1 - np.eye(24, dtype=np.int8), 0, 60.0)]
    for label, adjacency, source, target in cases:
        clnet.count_simple_paths(adjacency, source=source, backend=be)
        t_be = best_time(lambda: clnet.count_simple_paths(adjacency, source=source, backend=be), 2)
        result = clnet.count_simple_paths(adjacency, source=source, backend=be)
        paths = int(np.sum(result.astype(object)))
        print(f"   {label}: {paths:.3e} simple paths (exact: {paths:,})")
        print(f"      count, clnet {be.spec:<22} {t_be:9.2f} s (target < {target:g} s: "
              f"{'met' if t_be < target else 'NOT met'})")
        if not args.quick and be.spec != "numpy":
            t0 = time.perf_counter()
            clnet.count_simple_paths(adjacency, source=source, backend="numpy")
            print(f"      count, clnet NumPy fallback       {time.perf_counter() - t0:9.2f} s")
        if ig is not None:
            rate = _igraph_rate(ig, adjacency, 1_000_000)
            print(f"      list, igraph (extrapolated from 1e6 paths at {rate * 1e6:.2f} us/path): "
                  f"{_years(rate * paths)}; speed-up of counting {rate * paths / t_be:.2g}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
