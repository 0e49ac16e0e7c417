"""Time the population FNN kernel per activation (150 networks x 1000 samples, float32).

    python tools/fnn_prof.py
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's clnet
import time, numpy as np, clnet, pyopencl as cl
from clnet.bench.neat_genomes import benchmark_population
config, genomes = benchmark_population(150)
pop = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])
x = np.random.default_rng(1).uniform(-1, 1, size=(1000, 8)).astype(np.float32)
be = clnet.get_backend("opencl")
print("clnet from", clnet.__file__)
pop(x, backend=be)
for _ in range(3):
    t=time.perf_counter(); pop(x, backend=be); print("total", (time.perf_counter()-t)*1e3)
# kernel only
knl, lanes = be._fnn_kernel("clnet_fnn_graph", np.float32, 1000)  # the launch clnet makes
local = be._fnn_local(2)
nbp = -(-1000 // lanes) * lanes
bufs = be._fnn_population_buffers(pop.packed, np.float32)
d_x, stride = be._fnn_inputs(x, lanes)
d_out = be.empty(150*1000*2*4); d_s = be.empty(pop.num_nodes*nbp*4)
P=150
for _ in range(3):
    t=time.perf_counter()
    knl(be.queue, (-(-1000//lanes), P), local, bufs["net_node_start"], bufs["net_out"], bufs["node_act"], bufs["node_agg"],
        bufs["node_conn_start"], bufs["node_bias"], bufs["node_resp"], bufs["conn_src"], bufs["conn_w"], d_x,
        np.int32(stride), np.int32(8), np.int32(2), np.int32(0), np.int32(0), np.int32(1000), np.int32(nbp), np.int32(1000), d_s, d_out)
    be.queue.finish(); print("kernel", (time.perf_counter()-t)*1e3)
from collections import Counter
print(Counter(pop.packed.node_act.tolist()), Counter(pop.packed.node_agg.tolist()))
names = clnet.functions.ACTIVATIONS
for act in [0, 14, 24, 7, 20, 22, 6, 5, 4, 21, 25, 2, 3, 19, 13]:
    pop.packed.node_act[:] = act
    pop.packed.device_cache.clear()
    bufs = be._fnn_population_buffers(pop.packed, np.float32)
    ts=[]
    for _ in range(15):
        t=time.perf_counter()
        knl(be.queue, (-(-1000//lanes), P), local, bufs["net_node_start"], bufs["net_out"], bufs["node_act"], bufs["node_agg"],
            bufs["node_conn_start"], bufs["node_bias"], bufs["node_resp"], bufs["conn_src"], bufs["conn_w"], d_x,
            np.int32(stride), np.int32(8), np.int32(2), np.int32(0), np.int32(0), np.int32(1000), np.int32(nbp), np.int32(1000), d_s, d_out)
        be.queue.finish(); ts.append((time.perf_counter()-t)*1e3)
    print(f"act {act:2d} {names[act]:14s} {min(ts):7.2f} ms")
