"""A/B timing of the population FNN kernel per activation: kernels/ of this checkout
against another kernel folder (e.g. an older commit's), interleaved so that load from
other processes hits both alike. float32, 150 benchmark networks x 1000 samples.

    python tools/fnn_ab.py OLD_KERNEL_DIR [reps]
"""
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's clnet
import numpy as np  # noqa: E402
import pyopencl as cl  # noqa: E402

import clnet  # noqa: E402
from clnet.bench.neat_genomes import benchmark_population  # noqa: E402
from clnet.opencl import kernel_dir  # noqa: E402
from clnet.opencl.args import BoundKernel, signature  # noqa: E402


def main():
    old_dir = pathlib.Path(sys.argv[1])
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    be = clnet.get_backend("opencl")
    launch = be._fnn_launch("graph", 1000)  # the launch clnet makes for this batch
    lanes, local = launch.lanes, ((launch.group, 1) if launch.group else None)
    config, genomes = benchmark_population(150)
    pop = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])
    P, B = pop.packed.size, 1000
    x = np.random.default_rng(1).uniform(-1, 1, size=(B, 8)).astype(np.float32)
    d_x, stride = be._fnn_inputs(x, lanes)
    nb_pad = -(-B // lanes) * lanes
    d_out = be.empty(P * B * 2 * 4)
    d_s = be.empty(pop.num_nodes * nb_pad * 4)
    knls = {}
    for label, kdir in (("old", old_dir), ("new", kernel_dir())):
        src = (kdir / "fnn.cl").read_text()
        opts = ["-I", str(kdir), "-D", "CLNET_REAL=float", "-D", f"CLNET_LANES={lanes}"]
        knl = cl.Kernel(cl.Program(be.context, src).build(options=opts), "clnet_fnn_graph")
        knls[label] = BoundKernel(knl, signature(kdir / "fnn.cl", "clnet_fnn_graph"), np.dtype(np.float32),
                                  cl.MemoryObjectHolder)
    names = clnet.functions.ACTIVATIONS
    acts = [None] + list(range(len(names)))  # None: the benchmark's own mix
    original = pop.packed.node_act.copy()
    print(f"{'activation':16s} {'old ms':>8s} {'new ms':>8s}  speed-up")
    for act in acts:
        pop.packed.node_act[:] = original if act is None else act
        pop.packed.device_copies.clear()
        bufs = be._population_buffers(pop.packed, np.float32)
        args = dict(bufs, inputs=d_x, in_stride=stride, n_in=pop.packed.n_inputs, n_out=pop.packed.n_outputs,
                    p0=0, b0=0, nb=B, nb_pad=nb_pad, out_p0=0, out_b0=0, out_batch=B, scratch=d_s, out=d_out)
        ts = {"old": [], "new": []}
        for _ in range(reps + 1):
            for label, knl in knls.items():
                t = time.perf_counter()
                knl(be.queue, (-(-(-(-B // lanes)) // (launch.group or 1)) * (launch.group or 1), P), local, **args)
                be.queue.finish()
                ts[label].append((time.perf_counter() - t) * 1e3)
        o, n = min(ts["old"][1:]), min(ts["new"][1:])
        print(f"{'(benchmark mix)' if act is None else names[act]:16s} {o:8.2f} {n:8.2f}  {o / n:6.2f}x")


if __name__ == "__main__":
    main()
