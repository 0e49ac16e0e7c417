"""Running the ``mcl`` program (Debian package ``mcl``) on a graph, for tests and benchmarks.

The graph goes to mcl in its own matrix format (column j lists node j's entries, so an
asymmetric matrix reaches mcl exactly as clnet reads it) or as label (abc) input; the
clustering comes back as a list of member arrays in mcl's output order. ``clm dist``
gives the split/join distance between two clusterings.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

from clnet.common.mcl import Columns


def available() -> bool:
    return shutil.which("mcl") is not None and shutil.which("clm") is not None


def _columns(n: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> Columns:
    order = np.lexsort((rows, cols))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(cols, minlength=n)))).astype(np.int64)
    return Columns(n, indptr, rows[order].astype(np.int64), vals[order].astype(np.float64))


def graph_columns(graph) -> Columns:
    """A dense array or scipy.sparse matrix as columns, without any loop handling."""
    if hasattr(graph, "tocoo"):
        coo = graph.tocoo()
        coo.sum_duplicates()
        keep = coo.data != 0
        return _columns(graph.shape[0], coo.row[keep], coo.col[keep], coo.data[keep])
    arr = np.asarray(graph, dtype=np.float64)
    rows, cols = np.nonzero(arr)
    return _columns(arr.shape[0], rows, cols, arr[rows, cols])


def write_matrix(graph, path: str) -> None:
    """mcl's native matrix format: one line per column, ``j i:w ... $``."""
    c = graph_columns(graph)
    with open(path, "w") as f:
        f.write(f"(mclheader\nmcltype matrix\ndimensions {c.n}x{c.n}\n)\n(mclmatrix\nbegin\n")
        for j in range(c.n):
            lo, hi = c.indptr[j], c.indptr[j + 1]
            entries = " ".join(f"{i}:{w:.17g}" for i, w in zip(c.indices[lo:hi], c.data[lo:hi]))
            f.write(f"{j} {entries} $\n")
        f.write(")\n")


ABC_CHUNK_LINES = 1 << 20


def write_abc(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, path: str) -> None:
    """Label input, one ``a b w`` line per edge (nodes named by their index)."""
    with open(path, "w") as f:
        # In chunks: the text of a whole 20-million-edge graph as one array would take gigabytes.
        for at in range(0, max(1, len(rows)), ABC_CHUNK_LINES):
            part = slice(at, at + ABC_CHUNK_LINES)
            text = np.char.add(np.char.add(np.char.add(np.char.add(rows[part].astype(str), "\t"),
                                                       cols[part].astype(str)), "\t"),
                               np.char.mod("%.9g", weights[part]))
            f.write("\n".join(text.tolist()))
            f.write("\n")


def read_clusters(path: str) -> List[np.ndarray]:
    """The clusters of an mcl output file in its matrix format, in file order."""
    text = open(path).read()
    body = text[text.index("begin") + len("begin"):]
    body = body[:body.rindex(")")]
    clusters = []
    for entry in body.split("$"):
        tokens = entry.split()
        if tokens:
            clusters.append(np.array([int(t.split(":")[0]) for t in tokens[1:]], dtype=np.int64))
    return clusters


def read_label_clusters(path: str) -> List[np.ndarray]:
    """The clusters of mcl's label output (one line of tab-separated labels per cluster)."""
    with open(path) as f:
        return [np.array(sorted(int(t) for t in line.split()), dtype=np.int64) for line in f if line.strip()]


def run(graph_path: str, inflation: float = 2.0, *, abc: bool = False, threads: int = 1,
        extra: Sequence[str] = (), out_path: Optional[str] = None) -> Tuple[List[np.ndarray], str]:
    """Cluster the graph file with mcl; returns (clusters, mcl's log)."""
    own = out_path is None
    out = out_path or tempfile.mktemp(prefix="clnet-mcl-", suffix=".out")
    cmd = ["mcl", graph_path, "-I", repr(float(inflation)), "-o", out, "-te", str(threads)] + list(extra)
    if abc:
        cmd.insert(2, "--abc")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    try:
        clusters = read_label_clusters(out) if abc else read_clusters(out)
    finally:
        if own and os.path.exists(out):
            os.unlink(out)
    return clusters, done.stderr


def cluster(graph, inflation: float = 2.0, *, extra: Sequence[str] = ()) -> List[np.ndarray]:
    """mcl's clustering of a dense array or scipy.sparse matrix (native matrix input)."""
    with tempfile.TemporaryDirectory(prefix="clnet-mcl-") as tmp:
        path = os.path.join(tmp, "graph.mci")
        write_matrix(graph, path)
        return run(path, inflation, extra=extra)[0]


def write_clusters(clusters: Sequence[np.ndarray], n: int, path: str) -> None:
    with open(path, "w") as f:
        f.write(f"(mclheader\nmcltype matrix\ndimensions {n}x{len(clusters)}\n)\n(mclmatrix\nbegin\n")
        for cid, members in enumerate(clusters):
            f.write(f"{cid} {' '.join(str(int(m)) for m in members)} $\n")
        f.write(")\n")


def split_join_distance(a: Sequence[np.ndarray], b: Sequence[np.ndarray], n: int) -> Tuple[int, int]:
    """``clm dist``'s split/join distance between two clusterings of n nodes: (a to b, b to a)."""
    with tempfile.TemporaryDirectory(prefix="clnet-clm-") as tmp:
        pa, pb = os.path.join(tmp, "a.cls"), os.path.join(tmp, "b.cls")
        write_clusters(a, n, pa)
        write_clusters(b, n, pb)
        done = subprocess.run(["clm", "dist", pa, pb], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"clm dist failed ({done.returncode}): {done.stderr[-2000:]}")
    match = re.search(r"d1=(\d+)\s+d2=(\d+)", done.stdout)
    if match is None:
        raise RuntimeError(f"could not read clm dist's output: {done.stdout!r}")
    return int(match.group(1)), int(match.group(2))
