"""Feed-forward networks on OpenCL (kernels/fnn.cl): the FNN family of clnet/contract.py.

Both forms evaluate a batch in launches whose node values fit the tuned cache budget
(``fnn.scratch_mb``, at most :data:`SCRATCH_BUDGET` bytes). A population's packed arrays and a
layered network's structure and weights are uploaded once per backend and dtype and kept in
the object's ``device_copies``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict

import numpy as np

from ..common.packing import LayeredNetwork, PackedPopulation
from ..functions import ACTIVATIONS, AGGREGATIONS
from ..contract import FNNOps
from .runtime import cl

# Scratch for node values is split into launches of at most this many bytes, so that
# huge populations or batches run within a device's default allocation limits.
SCRATCH_BUDGET = 256 * 2**20
# A launch of a population evaluates at most about this many connection terms (a median's
# term counts MEDIAN_PASSES times: kernels/fnn.cl bisects over the bits of each value):
# about 0.2 s on PoCL with 2 cores (measured: 1.5 ns per term), so that long work is a
# series of launches and a KeyboardInterrupt takes effect between them instead of after
# minutes inside one kernel.
LAUNCH_TERMS = 2**27
MEDIAN_PASSES = {4: 34, 8: 66}  # by item size: float32, float64


# Activations that float builds compute with arithmetic, bit operations and selects only
# (kernels/clnet_functions.h, clnet_math.h): no builtin call per lane and no rarely-taken
# fallback (sin's, beyond 8192), so a lane loop of them vectorises under any compiler.
LANE_ACTIVATIONS = frozenset({
    "identity", "relu", "sigmoid", "elu", "selu", "abs", "square", "cube", "clamped", "log", "inv",
    "hat", "lelu", "neat.sigmoid", "neat.log", "neat.inv"})


def round_up(n: int, m: int) -> int:
    return ((n + m - 1) // m) * m


@dataclass
class BatchLayout:
    """How a batch of B samples is laid out in launches: samples per work-item (lanes),
    samples per launch, and whether all outputs fit one buffer (else each launch's part
    comes back in turn)."""

    lanes: int
    per_launch: int
    whole: bool
    group: int = 0  # work-items per group along the samples; 0: the implementation's choice
    align: int = 1  # with group 0: work-items along the samples come in multiples of this
    scratch: int = SCRATCH_BUDGET  # bytes of node values one launch may hold
    median_ranks: int = 0

    def items(self, nb: int) -> int:
        """Work-items along the samples for ``nb`` samples: whole groups, or with the
        implementation's choice of group a multiple of the native vector width (a prime count,
        2999 samples, left Intel's runtime only groups of one: 6x slower). Extra ones return."""
        n = -(-nb // self.lanes)
        return round_up(n, self.group or self.align)

    def local(self, dims: int):
        return None if not self.group else (self.group,) + (1,) * (dims - 1)


@dataclass(frozen=True)
class FNNLaunch:
    lanes: int
    group: int
    scratch: int  # bytes of node values one launch may hold (the tuned cache budget)
    median_ranks: int = 0  # largest fan-in whose median counts ranks (kernels/fnn.cl, CLNET_MEDIAN_FEW)


class FNNKernels(FNNOps):
    def _fnn_launch(self, form: str, batch: int) -> "FNNLaunch":
        """Samples per work-item and work-group size of ``form`` ("layered", "graph" or
        "graph_vector", see :meth:`_lane_form`) at this batch: the tuned or default parameters
        of clnet/opencl/tuning.py (family "fnn")."""
        c = self.params("fnn", batch=int(batch))
        scratch = min(c["scratch_mb"] * 2**20, self._scratch_budget())
        return FNNLaunch(self._fit_lanes(c[f"{form}_lanes"], batch), c[f"{form}_group"], scratch,
                         c["graph_median_ranks"])

    def _fit_lanes(self, lanes: int, batch: int) -> int:
        """``lanes``, halved while they would pad the batch by more than a quarter beyond one
        SIMD width (a batch of 20 runs 16-sample work-items, not 64)."""
        props = self.tuning.props  # read from the device once
        width = int(min(16, max(props.vector_width, props.native_width)))
        base = round_up(max(int(batch), 1), width)
        while lanes > width and round_up(batch, lanes) * 4 > base * 5:
            lanes //= 2
        return lanes

    def _scratch_budget(self) -> int:
        """The most bytes one scratch or output buffer may take (allocation limits)."""
        return int(min(SCRATCH_BUDGET, self.max_alloc // 2))

    def _fnn_layout(self, form: str, B: int, per_sample_bytes: int, out_bytes: int,
                    out_row_bytes: int) -> BatchLayout:
        """Samples per launch so that scratch (and, when the outputs do not fit one buffer,
        each launch's outputs) stay within budget; a multiple of the lanes."""
        launch = self._fnn_launch(form, B)
        lanes = launch.lanes
        budget = self._scratch_budget()
        # Node values are written once and read back within the launch: as many samples as
        # keep them within the cache budget (on a CPU, 2.6x faster at 10,000 samples than one
        # 256 MB launch), and within the allocation budget.
        per_launch = max(lanes, (launch.scratch // max(1, per_sample_bytes)) // lanes * lanes)
        per_launch = min(per_launch, round_up(B, lanes))
        whole = out_bytes <= budget
        if not whole:
            per_launch = max(lanes, min(per_launch, budget // out_row_bytes // lanes * lanes))
        align = self.tuning.props.native_width if launch.lanes == 1 else 1
        return BatchLayout(lanes, per_launch, whole, launch.group, align, launch.scratch, launch.median_ranks)

    def _fnn_inputs(self, x, lanes: int):
        """Inputs transposed to (n_inputs, B_padded), zero-padded to whole lanes."""
        stride = round_up(x.shape[0], lanes)
        xt = self.result_array((x.shape[1], stride), x.dtype)
        xt[:, x.shape[0]:] = 0
        xt[:, :x.shape[0]] = x.T
        return self.adopt(xt, "inputs"), stride  # made here, never changed: read in place on a CPU

    # -- layered form ----------------------------------------------------------------------
    def _layered_buffers(self, net: LayeredNetwork, dtype) -> Dict[str, "cl.Buffer"]:
        def upload():
            up = self.to_device
            return dict(structure=up(np.asarray(net.sizes, dtype=np.int32)),
                        acts=up(np.asarray(net.activations, dtype=np.int32)),
                        weights=up(net.weights.astype(dtype), "weights"),
                        biases=up(net.biases.astype(dtype), "biases"))

        return net.device_copies.get(self, ("opencl.fnn", np.dtype(dtype).name), upload)

    def fnn_layered(self, net, x, dtype):
        B, sizes = x.shape[0], net.sizes
        item = np.dtype(dtype).itemsize
        out = np.empty((B, sizes[-1]), dtype=dtype)
        per_sample = max(sum(sizes[1:-1]), 1) * item
        with self.lock:
            plan = self._fnn_layout("layered", B, per_sample, out.nbytes, sizes[-1] * item)
            knl = self.kernel("fnn", "clnet_fnn_layered", dtype, (f"CLNET_LANES={plan.lanes}",))
            bufs = self._layered_buffers(net, dtype)
            d_x, stride = self._fnn_inputs(x, plan.lanes)
            d_out = self.workspace("fnn.out", out.nbytes if plan.whole else plan.per_launch * sizes[-1] * item,
                                   "outputs")
            d_scratch = self.workspace("fnn.scratch", plan.per_launch * per_sample, "hidden-layer values")
            for b0 in range(0, B, plan.per_launch):
                nb = min(plan.per_launch, B - b0)
                knl(self.queue, (plan.items(nb),), plan.local(1),
                    n_layers=len(sizes) - 1, **bufs, inputs=d_x, in_stride=stride, b0=b0, nb=nb,
                    nb_pad=round_up(nb, plan.lanes), out_b0=0 if plan.whole else b0, scratch=d_scratch,
                    out=d_out)
                if not plan.whole:
                    cl.enqueue_copy(self.queue, out[b0:b0 + nb], d_out)
            if plan.whole:
                cl.enqueue_copy(self.queue, out, d_out)
            self.queue.finish()
        return out

    # -- graph form and populations ---------------------------------------------------------
    def _population_buffers(self, pop: PackedPopulation, dtype) -> Dict[str, "cl.Buffer"]:
        def upload():
            up = self.to_device
            return dict(
                net_node_start=up(pop.net_node_start), net_out=up(pop.net_out),
                node_act=up(pop.node_act), node_agg=up(pop.node_agg),
                node_conn_start=up(pop.node_conn_start),
                node_bias=up(pop.node_bias.astype(dtype)), node_resp=up(pop.node_resp.astype(dtype)),
                conn_src=up(pop.conn_src), conn_w=up(pop.conn_w.astype(dtype), "connection weights"))

        return pop.device_copies.get(self, ("opencl.fnn", np.dtype(dtype).name), upload)

    def _networks_per_launch(self, starts, p0: int, nb: int, nb_pad: int, n_out: int, item: int,
                             whole: bool, scratch: int) -> int:
        """End of the run of networks from p0 whose node values fit ``scratch`` bytes (and,
        when outputs come back launch by launch, whose outputs fit the allocation budget)."""
        budget = self._scratch_budget()
        P = len(starts) - 1
        limit = starts[p0] + scratch // (nb_pad * item)
        p1 = int(np.searchsorted(starts, limit, side="right")) - 1
        p1 = min(max(p1, p0 + 1), P)
        if not whole:
            p1 = min(p1, p0 + max(1, budget // (nb * n_out * item)))
        return p1

    def _terms_per_sample(self, pop: PackedPopulation, item: int) -> int:
        """Connection terms one sample of the whole population evaluates (medians weighted
        by their passes); computed once per population."""
        def count():
            fan_in = np.diff(pop.node_conn_start.astype(np.int64))
            median = pop.node_agg == AGGREGATIONS.index("median")
            return int(fan_in.sum() + (MEDIAN_PASSES[item] - 1) * fan_in[median].sum())

        return pop.device_copies.get(self, ("opencl.fnn.terms", item), count)

    def _functions(self, pop: PackedPopulation):
        """The ids of the activations and of the aggregations a population uses (computed
        once per population)."""
        return pop.device_copies.get(self, ("opencl.fnn.functions",),
                                     lambda: (np.unique(pop.node_act), np.unique(pop.node_agg)))

    def _lane_form(self, pop: PackedPopulation, dtype) -> str:
        """"graph_vector" for a float32 population whose every function is plain arithmetic
        (LANE_ACTIVATIONS, no median: its lane loops vectorise under every compiler), else
        "graph": which launch parameters of the fnn family it runs with."""
        if np.dtype(dtype) != np.float32:  # double builds call the builtins (clnet_functions.h)
            return "graph"
        acts, aggs = self._functions(pop)
        plain = {ACTIVATIONS[i] for i in acts} <= LANE_ACTIVATIONS
        return "graph_vector" if plain and AGGREGATIONS.index("median") not in aggs else "graph"

    def _function_defines(self, pop: PackedPopulation) -> tuple:
        """Build defines naming the one activation and the one aggregation of a population
        that uses a single one of each (kernels/fnn.cl: CLNET_ACTS, CLNET_AGGS), else none.
        Only that case is specialised: it is neat-python's default, and it compiles at most
        one program per function pair, where masks of any subset could compile one per
        generation of a population whose functions mutate."""
        acts, aggs = self._functions(pop)
        if len(acts) != 1 or len(aggs) != 1:
            return ()
        return (f"CLNET_ACTS={1 << int(acts[0])}", f"CLNET_AGGS={1 << int(aggs[0])}")

    def fnn_graph(self, pop, x, dtype):
        B, P, n_out = x.shape[0], pop.size, pop.n_outputs
        item = np.dtype(dtype).itemsize
        starts, largest = pop.device_copies.get(self, ("opencl.fnn.starts",), lambda: (
            pop.net_node_start.astype(np.int64), max(1, int(np.max(np.diff(pop.net_node_start))))))
        out = np.empty((P, B, n_out), dtype=dtype)
        terms = self._terms_per_sample(pop, item)
        with self.lock:
            # Batch chunk: as many samples as the largest network allows within the budget.
            plan = self._fnn_layout(self._lane_form(pop, dtype), B, largest * item, out.nbytes, n_out * item)
            # ... and within LAUNCH_TERMS; long work then waits for each launch, so that an
            # interrupt (Ctrl-C) is seen between launches.
            bounded = max(plan.lanes, LAUNCH_TERMS // max(terms, 1) // plan.lanes * plan.lanes)
            long_work = terms * B > LAUNCH_TERMS
            if bounded < plan.per_launch:
                plan = replace(plan, per_launch=bounded)
            knl = self.kernel("fnn", "clnet_fnn_graph", dtype,
                              (f"CLNET_LANES={plan.lanes}", f"CLNET_MEDIAN_FEW={plan.median_ranks}")
                              + self._function_defines(pop))
            bufs = self._population_buffers(pop, dtype)
            d_x, stride = self._fnn_inputs(x, plan.lanes)
            budget = self._scratch_budget()
            d_out = self.workspace("fnn.out", out.nbytes if plan.whole else budget, "population outputs")
            # a launch holds at least one whole network (even one larger than the cache budget)
            per_node = plan.per_launch * item
            d_scratch = self.workspace("fnn.scratch", min(max(plan.scratch, largest * per_node),
                                                          max(pop.num_nodes, 1) * per_node), "node values")
            for b0 in range(0, B, plan.per_launch):
                nb = min(plan.per_launch, B - b0)
                nb_pad = round_up(nb, plan.lanes)
                p0 = 0
                while p0 < P:
                    p1 = self._networks_per_launch(starts, p0, nb, nb_pad, n_out, item, plan.whole, plan.scratch)
                    knl(self.queue, (plan.items(nb), p1 - p0), plan.local(2), **bufs,
                        inputs=d_x, in_stride=stride, n_in=pop.n_inputs, n_out=n_out, p0=p0, b0=b0, nb=nb,
                        nb_pad=nb_pad, out_p0=0 if plan.whole else p0, out_b0=0 if plan.whole else b0,
                        out_batch=B if plan.whole else nb, scratch=d_scratch, out=d_out)
                    if long_work:
                        self.queue.finish()
                    if not plan.whole:
                        block = np.empty((p1 - p0, nb, n_out), dtype=dtype)
                        cl.enqueue_copy(self.queue, block, d_out)
                        out[p0:p1, b0:b0 + nb] = block
                    p0 = p1
            if plan.whole:
                cl.enqueue_copy(self.queue, out, d_out)
            self.queue.finish()
        return out
