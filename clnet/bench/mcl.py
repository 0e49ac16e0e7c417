"""Markov clustering: clnet.mcl against the mcl program and the markov_clustering package.

All in one run, on one planted-partition graph (made edge by edge, never N x N):

* mcl (``-te THREADS``, the same inflation and its default pruning), reading a label (abc)
  file as it does; its time without I/O is the full run minus a run with ``-L 0`` (no
  iterations: the same reading, loop setup, interpretation and writing);
* clnet.mcl reading the same file (pandas when installed, else NumPy) and without I/O;
* markov_clustering (pip install markov_clustering), in a child process stopped after
  ``--markov-timeout`` seconds.

Each contender runs in its own process; peak resident memory is that process's. The
clusterings are compared with ``clm dist``. Timings are facts of this machine only.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import subprocess
import tempfile
import time

import numpy as np

from .. import _cli as cli
from . import mcl_binary, ratio
from ..common.mcl_graphs import adjusted_rand_index, planted_edges


def _read_abc(path: str, n: int, dtype=np.float64):
    """The graph of a label file of ``a b w`` lines (node names are indices), symmetrised,
    its weights in ``dtype``."""
    import scipy.sparse as sp

    try:
        import pandas as pd

        table = pd.read_csv(path, sep="\t", header=None, names=["a", "b", "w"], dtype={"a": np.int64, "b": np.int64,
                                                                                       "w": np.float64})
        a, b, w = table["a"].to_numpy(), table["b"].to_numpy(), table["w"].to_numpy()
        del table
    except ImportError:
        data = np.loadtxt(path)
        a, b, w = data[:, 0].astype(np.int64), data[:, 1].astype(np.int64), data[:, 2]
        del data
    graph = sp.csr_matrix((w.astype(dtype, copy=False), (a, b)), shape=(n, n))
    del a, b, w
    return graph.maximum(graph.T).tocsr()  # label input is undirected, as mcl reads it


def _clnet_child(path, n, inflation, backend, conn):
    import clnet

    # Kernels are built on the first call (a one-time cost per process, timed apart).
    tb = time.perf_counter()
    clnet.mcl(np.kron(np.eye(2), np.ones((3, 3))), inflation, backend=backend)
    build = time.perf_counter() - tb
    t0 = time.perf_counter()
    graph = _read_abc(path, n, np.float32)  # clnet.mcl computes in float32 by default
    t1 = time.perf_counter()
    res = clnet.mcl(graph, inflation, backend=backend)
    t2 = time.perf_counter()
    conn.send(dict(build=build, backend=clnet.get_backend(backend).spec, read=t1 - t0, compute=t2 - t1,
                   clusters=res.clusters, iterations=res.iterations,
                   converged=res.converged, rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def _markov_child(path, n, inflation, conn):
    import markov_clustering as mc

    graph = _read_abc(path, n)
    conn.send({"started": True})  # the parent times a run it stops from here, without the reading
    t0 = time.perf_counter()
    result = mc.run_mcl(graph, inflation=inflation)
    clusters = mc.get_clusters(result)
    conn.send(dict(compute=time.perf_counter() - t0, clusters=[np.array(sorted(c)) for c in clusters],
                   rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


# How _in_child says that a child ran past its limit after its timed work began.
TIMED_OUT = "did not finish within"


def _in_child(target, args, timeout):
    """Run ``target(*args, conn)`` in a spawned child, which sends its result on ``conn``;
    return (the result or None, why not, seconds its timed work ran or None).

    A child may first send ``{"started": True}`` when its timed work begins (after reading
    its input): ``timeout`` then counts from that message, and the seconds returned are the
    time since it (a lower bound of the work's time when the child was stopped). Before it,
    ``timeout`` bounds the start itself. The parent holds only the reading end of the pipe,
    so a child killed by the kernel (out of memory), even halfway through sending, is seen
    at once as the end of the pipe, never waited for until the timeout."""
    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=args + (sender,))
    t0 = time.perf_counter()
    proc.start()
    sender.close()
    out, why, started = None, None, None
    try:
        while True:
            since = t0 if started is None else started
            left = None if timeout is None else timeout - (time.perf_counter() - since)
            if left is not None and left <= 0:
                why = (f"{TIMED_OUT} {timeout:.0f} s" if started is not None
                       else f"did not start its timed work within {timeout:.0f} s")
                break
            try:
                if not receiver.poll(1.0 if left is None else min(1.0, left)):
                    continue
                message = receiver.recv()
            except (EOFError, OSError):
                proc.join(5)
                code = proc.exitcode
                why = (f"was killed by signal {-code} (SIGKILL: most likely out of memory)" if code == -9
                       else f"exited with code {code} without a result")
                break
            if isinstance(message, dict) and message.get("started"):
                started = time.perf_counter()
                continue
            out = message
            break
        ran = None if started is None else time.perf_counter() - started
    finally:  # also on Ctrl-C: no contender is left running (and holding its memory)
        receiver.close()
        proc.join(5 if out is not None else 0)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return out, why, ran


def _timed_mcl(args):
    """(wall seconds, peak RSS bytes) of one mcl run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed with {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_maxrss * 1024


def _clnet_only(args) -> int:
    import scipy.sparse as sp

    import clnet

    n = args.nodes
    t0 = time.perf_counter()
    rows, cols, w, truth = planted_edges(n, max(1, n // args.cluster_size), args.degree, args.noise,
                                         np.random.default_rng(0))
    edges = len(rows) // 2
    graph = sp.csr_matrix((w.astype(np.float32), (rows, cols)), shape=(n, n))
    del rows, cols, w
    t1 = time.perf_counter()
    print(f"planted partition: {n} nodes, {edges} edges, {truth.max() + 1} planted clusters, made in "
          f"{t1 - t0:.1f} s; inflation {args.inflation}", flush=True)
    res = clnet.mcl(graph, args.inflation, backend=args.backend, progress=True)
    t2 = time.perf_counter()
    print(f"  clnet.mcl on {clnet.get_backend(args.backend).spec}: {t2 - t1:.2f} s (kernel build included), "
          f"{res.iterations} iterations, converged {res.converged}, {res.n_clusters} clusters, adjusted Rand "
          f"index against the planted partition {adjusted_rand_index(res.labels, truth):.4f}")
    print(f"  peak RSS of this whole command (generation included): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench mcl", __doc__)
    parser.add_argument("--nodes", type=int, default=100_000, help="nodes of the planted graph (default 100,000)")
    parser.add_argument("--degree", type=int, default=24, help="neighbours drawn per node in its own cluster")
    parser.add_argument("--noise", type=float, default=1.0, help="noise edges per node, anywhere")
    parser.add_argument("--cluster-size", type=int, default=100, help="mean planted cluster size")
    parser.add_argument("--inflation", type=float, default=2.0, help="MCL inflation, the same for both (default 2.0)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the mcl program (its -te; default 2)")
    parser.add_argument("--backend", default=None, help="clnet backend spec (default: the best usable one)")
    parser.add_argument("--markov-timeout", type=float, default=600.0,
                        help="seconds the markov_clustering package may run before it is stopped (default 600)")
    parser.add_argument("--skip-markov", action="store_true", help="do not run the markov_clustering package")
    parser.add_argument("--clnet-only", action="store_true",
                        help="only clnet.mcl, in this process: generate the graph, cluster it, report the time, "
                             "the clustering and the peak RSS of the whole command (the memory check at 1,000,000 "
                             "nodes; no mcl program needed)")
    args = parser.parse_args(argv)
    if args.clnet_only:
        return _clnet_only(args)
    if not mcl_binary.available():
        print("the mcl program is not installed (apt-get install mcl)")
        return 1
    n = args.nodes
    rows, cols, w, truth = planted_edges(n, max(1, n // args.cluster_size), args.degree, args.noise,
                                         np.random.default_rng(0))
    print(f"planted partition: {n} nodes, {len(rows) // 2} edges, {truth.max() + 1} planted clusters; "
          f"inflation {args.inflation}, mcl -te {args.threads}")
    with tempfile.TemporaryDirectory(prefix="clnet-bench-mcl-") as tmp:
        path = os.path.join(tmp, "graph.abc")
        half = rows < cols
        mcl_binary.write_abc(rows[half], cols[half], w[half], path)
        del rows, cols, w, half  # the contenders run in child processes and read the file
        out = os.path.join(tmp, "mcl.out")
        base = ["mcl", path, "--abc", "-I", str(args.inflation), "-te", str(args.threads), "-o", out]
        mcl_total, mcl_rss = _timed_mcl(base)
        mcl_io, _ = _timed_mcl(base[:-2] + ["-L", "0", "-o", out + ".io"])
        mcl_clusters = mcl_binary.read_label_clusters(out)
        mcl_compute = max(mcl_total - mcl_io, 1e-9)
        print(f"  mcl: {mcl_total:8.2f} s with I/O, {mcl_compute:8.2f} s without "
              f"(I/O and setup {mcl_io:.2f} s), peak RSS {mcl_rss / 2**30:.2f} GiB, {len(mcl_clusters)} clusters")
        got, why, _ = _in_child(_clnet_child, (path, n, args.inflation, args.backend), None)
        if got is None:
            print(f"  clnet.mcl {why}")
            return 1
        total = got["read"] + got["compute"]
        print(f"  clnet.mcl on {got['backend']}: {total:8.2f} s with I/O, {got['compute']:8.2f} s without "
              f"(reading {got['read']:.2f} s; kernel build before, {got['build']:.1f} s), "
              f"peak RSS {got['rss'] / 2**30:.2f} GiB, {len(got['clusters'])} clusters, {got['iterations']} "
              f"iterations, converged {got['converged']}")
        d = mcl_binary.split_join_distance(mcl_clusters, got["clusters"], n)
        print(f"  clm dist (mcl, clnet): {d[0]},{d[1]}")
        labels = np.zeros(n, np.int64)
        for cid, members in enumerate(got["clusters"]):
            labels[members] = cid
        print(f"  adjusted Rand index of clnet's clustering against the planted one: "
              f"{adjusted_rand_index(labels, truth):.4f}")
        print(ratio("clnet vs mcl, with I/O", mcl_total / total))
        print(ratio("clnet vs mcl, without I/O", mcl_compute / got["compute"], target=1.0))
        if not args.skip_markov:
            try:
                import markov_clustering  # noqa: F401
            except ImportError:
                print("  markov_clustering: not installed (pip install markov_clustering)")
                return 0
            mk, why, ran = _in_child(_markov_child, (path, n, args.inflation), args.markov_timeout)
            if mk is None:
                print(f"  markov_clustering: {why}" + (f" ({ran:.0f} s after it had read the graph)" if ran else ""))
                if why.startswith(TIMED_OUT):
                    # it ran at least this long: the speed-up is at least this ratio
                    print(ratio("clnet vs markov_clustering, lower bound", ran / got["compute"], target=20.0)
                          + f"; markov_clustering > {ran:.0f} s")
            else:
                dm = mcl_binary.split_join_distance(mcl_clusters, mk["clusters"], n)
                print(f"  markov_clustering: {mk['compute']:8.2f} s without I/O, peak RSS "
                      f"{mk['rss'] / 2**30:.2f} GiB, {len(mk['clusters'])} clusters, clm dist to mcl {dm[0]},{dm[1]}")
                print(ratio("clnet vs markov_clustering, without I/O", mk["compute"] / got["compute"], target=20.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
