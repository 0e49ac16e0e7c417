"""Feed-forward networks: layered (structure + one flat weight list) and evolved graphs.

Public API: :func:`fnn_forward`, :class:`FNN` (``from_structure``, ``from_graph``,
``from_neat``) and :class:`FNNPopulation`. Semantics: ``shared/docs/SEMANTICS.md``.
The OpenCL implementation is the mixin :class:`FNNKernels` at the bottom; the NumPy
reference is ``clnet_fallback.fnn``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from ._validate import as_float, as_int, as_real_array
from .backend import BackendLike, dispatch, get_backend
from .functions import activation_id, aggregation_id, neat_activation_name

__all__ = ["FNN", "FNNPopulation", "fnn_forward", "weight_count"]


# ---------------------------------------------------------------------------------------
# Packed graph form shared by single networks and populations
# ---------------------------------------------------------------------------------------
@dataclass
class PackedPopulation:
    """Networks packed back to back (no padding); arrays in float64, cast per dtype.

    ``net_node_start[p]:net_node_start[p+1]`` are network p's evaluated nodes in
    topological order; ``node_conn_start[k]:node_conn_start[k+1]`` node k's incoming
    connections. ``conn_src`` is local to the network: ``< n_inputs`` is an input pin,
    ``n_inputs + j`` the network's j-th node. ``net_out[p, o]`` is output o's slot.
    """

    n_inputs: int
    n_outputs: int
    net_node_start: np.ndarray
    net_out: np.ndarray
    node_act: np.ndarray
    node_agg: np.ndarray
    node_conn_start: np.ndarray
    node_bias: np.ndarray
    node_resp: np.ndarray
    conn_src: np.ndarray
    conn_w: np.ndarray
    # per-(backend, dtype) device copies, so that repeated evaluation uploads nothing
    device_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.net_node_start) - 1

    @property
    def num_nodes(self) -> int:
        return int(self.net_node_start[-1])

    @property
    def num_connections(self) -> int:
        return int(self.node_conn_start[-1])

    @staticmethod
    def concatenate(parts: Sequence["PackedPopulation"]) -> "PackedPopulation":
        n_in, n_out = parts[0].n_inputs, parts[0].n_outputs
        node_offsets = np.cumsum([0] + [q.num_nodes for q in parts])
        conn_offsets = np.cumsum([0] + [q.num_connections for q in parts])
        net_node_start = np.concatenate(
            [[0]] + [q.net_node_start[1:] + node_offsets[i] for i, q in enumerate(parts)])
        node_conn_start = np.concatenate(
            [[0]] + [q.node_conn_start[1:] + conn_offsets[i] for i, q in enumerate(parts)])
        cat = np.concatenate
        return PackedPopulation(
            n_in, n_out,
            net_node_start=net_node_start.astype(np.int32),
            net_out=cat([q.net_out for q in parts]).astype(np.int32),
            node_act=cat([q.node_act for q in parts]).astype(np.int32),
            node_agg=cat([q.node_agg for q in parts]).astype(np.int32),
            node_conn_start=node_conn_start.astype(np.int32),
            node_bias=cat([q.node_bias for q in parts]),
            node_resp=cat([q.node_resp for q in parts]),
            conn_src=cat([q.conn_src for q in parts]).astype(np.int32),
            conn_w=cat([q.conn_w for q in parts]),
        )


# Node and layer counts are int32 on the device; far below that, memory runs out first.
MAX_NODES = 2**24


def weight_count(structure: Sequence[int]) -> int:
    """Number of weights a layered structure needs: sum of n_l * n_(l-1)."""
    sizes = _check_structure(structure)
    return int(sum(a * b for a, b in zip(sizes[:-1], sizes[1:])))


def _check_structure(structure) -> List[int]:
    if isinstance(structure, (str, bytes)) or not hasattr(structure, "__len__"):
        raise TypeError(f"structure must be a list of layer sizes such as [2, 2, 1], got {structure!r}")
    sizes = []
    for i, n in enumerate(structure):
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"structure[{i}] must be an integer layer size, got {n!r}")
        if n < 1:
            raise ValueError(f"structure[{i}] must be a positive layer size, got {n}")
        sizes.append(int(n))
    if len(sizes) < 2:
        raise ValueError(f"structure needs at least an input and an output layer, got {list(sizes)}")
    if max(sizes) > MAX_NODES:
        raise ValueError(f"structure has a layer of {max(sizes)} neurons; at most {MAX_NODES} are supported")
    return sizes


def _layer_activations(activation, n_layers: int) -> List[int]:
    if isinstance(activation, str):
        return [activation_id(activation)] * n_layers
    if isinstance(activation, Iterable):
        names = list(activation)
        if len(names) != n_layers:
            raise ValueError(f"activation must be one name or one per non-input layer ({n_layers}), "
                             f"got {len(names)} names")
        return [activation_id(a, f"activation[{i}]") for i, a in enumerate(names)]
    raise TypeError(f"activation must be a name or a list of names, got {type(activation).__name__}")


# ---------------------------------------------------------------------------------------
# Graph building: pruning, topological order, cycle detection
# ---------------------------------------------------------------------------------------
_NODE_FIELDS = ("key", "bias", "response", "activation", "aggregation")
_CONN_FIELDS = ("src", "dst", "weight", "enabled")


def _field(obj, name, index, default, what):
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    if isinstance(obj, (tuple, list)):
        return obj[index] if index < len(obj) else default
    if hasattr(obj, name):
        return getattr(obj, name)
    if default is _REQUIRED:
        raise TypeError(f"{what} has no field {name!r}")
    return default


_REQUIRED = object()


def _parse_nodes(nodes) -> Dict[int, Tuple[float, float, int, int]]:
    if isinstance(nodes, Mapping):
        # {key: spec} form; the key in the mapping wins
        items = [(k, v) for k, v in nodes.items()]
    else:
        items = [(None, v) for v in nodes]
    parsed: Dict[int, Tuple[float, float, int, int]] = {}
    for i, (mkey, spec) in enumerate(items):
        what = f"nodes[{i}]"
        if isinstance(spec, Mapping) or isinstance(spec, (tuple, list)) or hasattr(spec, "bias") or mkey is None:
            key = mkey if mkey is not None else _field(spec, "key", 0, _REQUIRED, what)
        else:
            key = mkey
        key = as_int(key, f"{what}.key", minimum=0)
        if key in parsed:
            raise ValueError(f"node key {key} appears twice in nodes")
        bias = as_float(_field(spec, "bias", 1, 0.0, what), f"node {key} bias")
        resp = as_float(_field(spec, "response", 2, 1.0, what), f"node {key} response")
        act = activation_id(_field(spec, "activation", 3, "identity", what), f"node {key} activation")
        agg = aggregation_id(_field(spec, "aggregation", 4, "sum", what), f"node {key} aggregation")
        parsed[key] = (bias, resp, act, agg)
    return parsed


def _parse_connections(connections, n_inputs, node_keys) -> List[Tuple[int, int, float]]:
    parsed = []
    for i, spec in enumerate(connections):
        what = f"connections[{i}]"
        if isinstance(spec, Mapping) or isinstance(spec, (tuple, list)):
            src = _field(spec, "src", 0, _REQUIRED, what)
            dst = _field(spec, "dst", 1, _REQUIRED, what)
        else:  # neat-style object with .key = (src, dst)
            key = getattr(spec, "key", None)
            if key is None:
                raise TypeError(f"{what} must be (src, dst, weight[, enabled]), a mapping or an object "
                                f"with key/weight/enabled, got {type(spec).__name__}")
            src, dst = key
        src = as_int(src, f"{what} source")
        dst = as_int(dst, f"{what} destination")
        weight = as_float(_field(spec, "weight", 2, 1.0, what), f"{what} weight")
        enabled = _field(spec, "enabled", 3, True, what)
        if not isinstance(enabled, (bool, np.bool_, int, np.integer)):
            raise TypeError(f"{what} enabled must be a bool, got {enabled!r}")
        if dst < 0:
            raise ValueError(f"{what} ends at input pin {dst}; connections may only end at nodes")
        if dst not in node_keys:
            raise ValueError(f"{what} ends at node {dst}, which is not in nodes")
        if src < 0 and src < -n_inputs:
            raise ValueError(f"{what} starts at input pin {src}, but there are only {n_inputs} inputs "
                             f"(keys -1..-{n_inputs})")
        if src >= 0 and src not in node_keys:
            raise ValueError(f"{what} starts at node {src}, which is not in nodes")
        if bool(enabled):
            parsed.append((src, dst, weight))
    return parsed


def _find_cycle(nodes: Iterable[int], incoming: Dict[int, List[int]]) -> List[int]:
    """One cycle among ``nodes`` (every one of which lies on or downstream of a cycle)."""
    remaining = set(nodes)
    start = min(remaining)
    path, seen = [start], {start: 0}
    while True:
        preds = [s for s in incoming.get(path[-1], []) if s in remaining]
        nxt = preds[0]
        if nxt in seen:
            cyc = path[seen[nxt]:]
            return list(reversed(cyc)) + [cyc[-1]]
        seen[nxt] = len(path)
        path.append(nxt)


def pack_graph(n_inputs, n_outputs, nodes, connections) -> PackedPopulation:
    """Prune, order and pack one evolved network (see SEMANTICS.md, graph form)."""
    n_inputs = as_int(n_inputs, "n_inputs", minimum=1)
    n_outputs = as_int(n_outputs, "n_outputs", minimum=1)
    if n_inputs > MAX_NODES:
        raise ValueError(f"n_inputs must be at most {MAX_NODES}, got {n_inputs}")
    node_table = _parse_nodes(nodes)
    if n_outputs > len(node_table):
        raise ValueError(f"n_outputs is {n_outputs} but nodes has only {len(node_table)} entries; "
                         f"every output key 0..n_outputs-1 needs a node")
    missing = [k for k in range(n_outputs) if k not in node_table]
    if missing:
        raise ValueError(f"output nodes {missing} are missing from nodes; outputs have keys 0..{n_outputs - 1}")
    conns = _parse_connections(connections, n_inputs, node_table)

    incoming: Dict[int, List[int]] = {}
    for src, dst, _ in conns:
        incoming.setdefault(dst, []).append(src)
    # Only nodes with a path to an output are evaluated.
    required = set(range(n_outputs))
    frontier = deque(required)
    while frontier:
        node = frontier.popleft()
        for src in incoming.get(node, []):
            if src >= 0 and src not in required:
                required.add(src)
                frontier.append(src)

    # Kahn's algorithm on the required nodes, ties broken by key for a stable order.
    pending = {k: sum(1 for s in incoming.get(k, []) if s >= 0) for k in required}
    consumers: Dict[int, List[int]] = {}
    for src, dst, _ in conns:
        if dst in required and src >= 0:
            consumers.setdefault(src, []).append(dst)
    ready = sorted(k for k, n in pending.items() if n == 0)
    order: List[int] = []
    import heapq
    heapq.heapify(ready)
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for dst in consumers.get(k, []):
            pending[dst] -= 1
            if pending[dst] == 0:
                heapq.heappush(ready, dst)
    if len(order) != len(required):
        stuck = [k for k in required if k not in set(order)]
        cycle = _find_cycle(stuck, incoming)
        raise ValueError("connections form a cycle through nodes " + " -> ".join(map(str, cycle))
                         + "; feed-forward networks must be acyclic")

    slot = {-(i + 1): i for i in range(n_inputs)}
    for j, k in enumerate(order):
        slot[k] = n_inputs + j
    by_dst: Dict[int, List[Tuple[int, float]]] = {}
    for src, dst, w in conns:  # connection order within a node follows the caller's order
        if dst in required:
            by_dst.setdefault(dst, []).append((slot[src], w))
    conn_src, conn_w, starts = [], [], [0]
    for k in order:
        for s, w in by_dst.get(k, []):
            conn_src.append(s)
            conn_w.append(w)
        starts.append(len(conn_src))
    return PackedPopulation(
        n_inputs, n_outputs,
        net_node_start=np.array([0, len(order)], dtype=np.int32),
        net_out=np.array([[slot[o] for o in range(n_outputs)]], dtype=np.int32),
        node_act=np.array([node_table[k][2] for k in order], dtype=np.int32),
        node_agg=np.array([node_table[k][3] for k in order], dtype=np.int32),
        node_conn_start=np.array(starts, dtype=np.int32),
        node_bias=np.array([node_table[k][0] for k in order], dtype=np.float64),
        node_resp=np.array([node_table[k][1] for k in order], dtype=np.float64),
        conn_src=np.array(conn_src, dtype=np.int32),
        conn_w=np.array(conn_w, dtype=np.float64),
    )


def _layered_to_packed(sizes, weights, biases, acts) -> PackedPopulation:
    """A layered network as a packed graph, so that it can join a mixed population."""
    n_in = sizes[0]
    conn_src, starts, node_act = [], [0], []
    first_slot_prev = 0  # slot of the previous layer's first neuron
    slot_next = n_in
    for l in range(1, len(sizes)):
        for j in range(sizes[l]):
            conn_src.extend(range(first_slot_prev, first_slot_prev + sizes[l - 1]))
            starts.append(len(conn_src))
            node_act.append(acts[l - 1])
        first_slot_prev = slot_next
        slot_next += sizes[l]
    n_nodes = sum(sizes[1:])
    n_out = sizes[-1]
    return PackedPopulation(
        n_in, n_out,
        net_node_start=np.array([0, n_nodes], dtype=np.int32),
        net_out=np.array([list(range(n_in + n_nodes - n_out, n_in + n_nodes))], dtype=np.int32),
        node_act=np.array(node_act, dtype=np.int32),
        node_agg=np.zeros(n_nodes, dtype=np.int32),
        node_conn_start=np.array(starts, dtype=np.int32),
        node_bias=np.asarray(biases, dtype=np.float64),
        node_resp=np.ones(n_nodes),
        conn_src=np.array(conn_src, dtype=np.int32),
        conn_w=np.asarray(weights, dtype=np.float64),
    )


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
def _prepare_inputs(inputs, n_inputs: int, dtype) -> Tuple[np.ndarray, bool]:
    x = as_real_array(inputs, "inputs", dtype, ndim=(1, 2))
    single = x.ndim == 1
    if single:
        x = x[None, :]
    if x.shape[1] != n_inputs:
        raise ValueError(f"inputs must have {n_inputs} columns (one per network input), got shape "
                         f"{x.shape if not single else x.shape[1:]}")
    return x, single


class FNN:
    """A feed-forward network, layered or an evolved graph. Call it: ``net(inputs)``.

    ``inputs`` of shape ``(n_inputs,)`` give ``(n_outputs,)``; ``(B, n_inputs)`` give
    ``(B, n_outputs)``. Every call takes ``backend=`` and ``dtype=`` (float32 default).
    """

    def __init__(self, *, n_inputs, n_outputs, layered=None, packed=None):
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self._layered = layered  # (sizes, weights f64, biases f64, act ids) or None
        self._packed = packed

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def from_structure(cls, structure, weights, biases=None, activation="identity") -> "FNN":
        """A layered network: ``structure=[n0, ..., nL]`` and ONE flat weight list.

        Layer l's weights are an ``n_l x n_(l-1)`` row-major block (PyTorch's
        ``nn.Linear.weight`` layout), blocks in layer order. ``biases`` is one value per
        non-input neuron (default zeros); ``activation`` one name or one per layer.
        """
        sizes = _check_structure(structure)
        expected = weight_count(sizes)
        w = as_real_array(weights, "weights", np.float64, ndim=(1,))
        if w.size != expected:
            terms = " + ".join(f"{b}*{a}" for a, b in zip(sizes[:-1], sizes[1:]))
            raise ValueError(f"weights has {w.size} values but structure {sizes} needs {expected} "
                             f"(sum of n_l * n_(l-1): {terms})")
        n_bias = sum(sizes[1:])
        if biases is None:
            b = np.zeros(n_bias)
        else:
            b = as_real_array(biases, "biases", np.float64, ndim=(1,))
            if b.size != n_bias:
                raise ValueError(f"biases has {b.size} values but structure {sizes} has {n_bias} "
                                 f"non-input neurons (one bias each)")
        acts = _layer_activations(activation, len(sizes) - 1)
        return cls(n_inputs=sizes[0], n_outputs=sizes[-1], layered=(sizes, w, b, acts))

    @classmethod
    def from_graph(cls, n_inputs, n_outputs, nodes, connections) -> "FNN":
        """An evolved network: any DAG, neat-python conventions.

        ``nodes``: items with key, bias, response, activation, aggregation (mappings,
        tuples in that order, or objects); input pins are keys -1..-n_inputs, outputs
        0..n_outputs-1. ``connections``: items with src, dst, weight, enabled (mappings,
        tuples, or neat-style objects with ``key=(src, dst)``). Disabled connections are
        removed, nodes without a path to an output are not evaluated, and a cycle raises
        ValueError naming its nodes.
        """
        packed = pack_graph(n_inputs, n_outputs, nodes, connections)
        return cls(n_inputs=packed.n_inputs, n_outputs=packed.n_outputs, packed=packed)

    @classmethod
    def from_neat(cls, genome, config) -> "FNN":
        """The network of a neat-python genome, as ``neat.nn.FeedForwardNetwork.create`` builds it."""
        gc = getattr(config, "genome_config", config)
        try:
            n_in, n_out = int(gc.num_inputs), int(gc.num_outputs)
            genome_nodes, genome_conns = genome.nodes, genome.connections
        except AttributeError as exc:
            raise TypeError(f"from_neat needs a neat-python genome and its config ({exc})") from None
        if list(gc.input_keys) != [-(i + 1) for i in range(n_in)] or list(gc.output_keys) != list(range(n_out)):
            raise ValueError("from_neat expects neat-python's key convention: inputs -1..-n, outputs 0..n-1")
        nodes = [{"key": k, "bias": ng.bias, "response": ng.response,
                  "activation": neat_activation_name(ng.activation), "aggregation": ng.aggregation}
                 for k, ng in genome_nodes.items()]
        conns = [(cg.key[0], cg.key[1], cg.weight, cg.enabled) for cg in genome_conns.values()]
        return cls.from_graph(n_in, n_out, nodes, conns)

    # -- properties --------------------------------------------------------------------------
    @property
    def packed(self) -> PackedPopulation:
        if self._packed is None:
            self._packed = _layered_to_packed(*self._layered)
        return self._packed

    @property
    def num_connections(self) -> int:
        """Connections evaluated per input sample (after pruning)."""
        if self._layered is not None:
            return int(self._layered[1].size)
        return self.packed.num_connections

    @property
    def num_nodes(self) -> int:
        """Non-input nodes evaluated per input sample (after pruning)."""
        if self._layered is not None:
            return int(sum(self._layered[0][1:]))
        return self.packed.num_nodes

    def __repr__(self) -> str:
        kind = f"layered {self._layered[0]}" if self._layered is not None else "graph"
        return (f"<clnet.FNN {kind}: {self.n_inputs} inputs, {self.n_outputs} outputs, "
                f"{self.num_nodes} nodes, {self.num_connections} connections>")

    # -- evaluation ----------------------------------------------------------------------------
    def __call__(self, inputs, *, backend: BackendLike = None, dtype=None) -> np.ndarray:
        be = get_backend(backend)
        dt = be.check_dtype(dtype)
        x, single = _prepare_inputs(inputs, self.n_inputs, dt)
        if x.shape[0] == 0:
            out = np.empty((0, self.n_outputs), dtype=dt)
        elif self._layered is not None:
            sizes, w, b, acts = self._layered
            out = dispatch(backend, "fnn_layered", sizes, w, b, acts, x, dt)
        else:
            out = dispatch(backend, "fnn_graph", self.packed, x, dt)[0]
        return out[0] if single else out


def fnn_forward(structure, weights, inputs, *, biases=None, activation="identity",
                backend: BackendLike = None, dtype=None) -> np.ndarray:
    """Evaluate a layered network given only its structure and ONE flat weight list.

    >>> import clnet
    >>> clnet.fnn_forward([2, 2, 1], [1, 2, 3, 4, 5, 6], [1.0, 1.0], backend="numpy")
    array([57.], dtype=float32)

    (v3 = 1+2 = 3, v4 = 3+4 = 7, O1 = 5*3 + 6*7 = 57.)
    """
    net = FNN.from_structure(structure, weights, biases=biases, activation=activation)
    return net(inputs, backend=backend, dtype=dtype)


class FNNPopulation:
    """Many networks of different topologies, evaluated on one batch in ONE kernel launch.

    Networks are packed back to back with offset tables, so memory grows with the total
    number of nodes and connections, never with P times the largest network.
    ``pop(inputs)`` returns ``(P, B, n_outputs)`` (``(P, n_outputs)`` for one sample).
    """

    def __init__(self, nets: Sequence[FNN]):
        if isinstance(nets, FNN) or not hasattr(nets, "__iter__"):
            raise TypeError("FNNPopulation takes a list of clnet.FNN networks")
        nets = list(nets)
        if not nets:
            raise ValueError("FNNPopulation needs at least one network")
        for i, net in enumerate(nets):
            if not isinstance(net, FNN):
                raise TypeError(f"nets[{i}] must be a clnet.FNN, got {type(net).__name__}")
        n_in, n_out = nets[0].n_inputs, nets[0].n_outputs
        for i, net in enumerate(nets):
            if (net.n_inputs, net.n_outputs) != (n_in, n_out):
                raise ValueError(f"every network needs the same inputs and outputs: nets[0] has "
                                 f"{n_in} inputs and {n_out} outputs, nets[{i}] has {net.n_inputs} "
                                 f"and {net.n_outputs}")
        self.n_inputs, self.n_outputs = n_in, n_out
        self.packed = PackedPopulation.concatenate([net.packed for net in nets])

    def __len__(self) -> int:
        return self.packed.size

    @property
    def num_connections(self) -> int:
        return self.packed.num_connections

    @property
    def num_nodes(self) -> int:
        return self.packed.num_nodes

    def __repr__(self) -> str:
        return (f"<clnet.FNNPopulation of {len(self)} networks: {self.n_inputs} inputs, {self.n_outputs} "
                f"outputs, {self.num_nodes} nodes, {self.num_connections} connections in all>")

    def __call__(self, inputs, *, backend: BackendLike = None, dtype=None) -> np.ndarray:
        be = get_backend(backend)
        dt = be.check_dtype(dtype)
        x, single = _prepare_inputs(inputs, self.n_inputs, dt)
        if x.shape[0] == 0:
            out = np.empty((len(self), 0, self.n_outputs), dtype=dt)
        else:
            out = dispatch(backend, "fnn_graph", self.packed, x, dt)
        return out[:, 0] if single else out


# ---------------------------------------------------------------------------------------
# OpenCL implementation (mixed into every OpenCL backend, see clnet/families.py)
# ---------------------------------------------------------------------------------------
# Scratch for node values is split into launches of at most this many bytes, so that
# huge populations or batches run within a device's default allocation limits.
SCRATCH_BUDGET = 256 * 2**20


class FNNKernels:
    def _fnn_is_cpu(self) -> bool:
        import pyopencl as cl

        return bool(self.device.type & cl.device_type.CPU)

    def _fnn_lanes(self, batch=None) -> int:
        """Samples per work-item: 1 on GPUs (one sample per thread); on CPUs the SIMD width,
        or 2 or 4 times it for batches where that pads by at most a quarter: the per-node
        work (reading the node, dispatching on aggregation and activation) is then shared
        by more samples. Measured on PoCL/AVX-512, 150 networks x 1000 samples: 2.4 ms
        with 16 lanes, 1.6 ms with 64; with 4 samples 16 lanes stay best."""
        if not self._fnn_is_cpu():
            return 1
        width = int(min(16, max(1, self.device.preferred_vector_width_float)))
        if batch is None:
            return width
        base = _round_up(max(int(batch), 1), width)
        for mult in (4, 2):
            if _round_up(batch, width * mult) * 4 <= base * 5:
                return width * mult
        return width

    def _fnn_local(self, dims: int):
        """Work-group size: one work-item per group on CPUs (PoCL's own choice measured
        up to 1.5x slower there); the implementation's choice elsewhere."""
        return (1,) * dims if self._fnn_is_cpu() else None

    def _fnn_kernel(self, name: str, dtype, batch=None):
        lanes = self._fnn_lanes(batch)
        return self.kernel("fnn", name, dtype, defines=(f"CLNET_LANES={lanes}",)), lanes

    def _fnn_inputs(self, x, lanes: int):
        """Inputs transposed to (n_inputs, B_padded), zero-padded to whole lanes."""
        stride = _round_up(x.shape[0], lanes)
        xt = np.zeros((x.shape[1], stride), dtype=x.dtype)
        xt[:, :x.shape[0]] = x.T
        return self.to_device(xt, "inputs"), stride

    def _fnn_batch_chunk(self, B: int, per_sample_bytes: int, lanes: int) -> int:
        """Samples per launch so that scratch stays within budget (a multiple of lanes)."""
        nb = self._scratch_budget() // max(1, per_sample_bytes)
        nb = max(lanes, (nb // lanes) * lanes)
        return min(nb, _round_up(B, lanes))

    def _scratch_budget(self) -> int:
        return int(min(SCRATCH_BUDGET, self.max_alloc // 2))

    def fnn_layered(self, sizes, weights, biases, acts, x, dtype) -> np.ndarray:
        import pyopencl as cl

        B = x.shape[0]
        item = np.dtype(dtype).itemsize
        per_sample = max(sum(sizes[1:-1]), 1) * item
        out = np.empty((B, sizes[-1]), dtype=dtype)
        with self.lock:
            knl, lanes = self._fnn_kernel("clnet_fnn_layered", dtype, B)
            nb_max = self._fnn_batch_chunk(B, per_sample, lanes)
            d_struct = self.to_device(np.asarray(sizes, dtype=np.int32))
            d_acts = self.to_device(np.asarray(acts, dtype=np.int32))
            d_w = self.to_device(weights.astype(dtype), "weights")
            d_b = self.to_device(biases.astype(dtype), "biases")
            d_x, stride = self._fnn_inputs(x, lanes)
            whole = out.nbytes <= self._scratch_budget()
            if not whole:  # outputs too large for one buffer: each launch's rows come back in turn
                nb_max = max(lanes, min(nb_max, self._scratch_budget() // (sizes[-1] * item) // lanes * lanes))
            d_out = self.workspace("fnn.out", out.nbytes if whole else nb_max * sizes[-1] * item, "outputs")
            d_scratch = self.workspace("fnn.scratch", nb_max * per_sample, "hidden-layer values")
            for b0 in range(0, B, nb_max):
                nb = min(nb_max, B - b0)
                knl(self.queue, (-(-nb // lanes),), self._fnn_local(1),
                    np.int32(len(sizes) - 1), d_struct, d_acts, d_w, d_b, d_x,
                    np.int32(stride), np.int32(b0), np.int32(nb), np.int32(_round_up(nb, lanes)),
                    np.int32(0 if whole else b0), d_scratch, d_out)
                if not whole:
                    cl.enqueue_copy(self.queue, out[b0:b0 + nb], d_out)
            if whole:
                cl.enqueue_copy(self.queue, out, d_out)
            self.queue.finish()
        return out

    def _fnn_population_buffers(self, pop: PackedPopulation, dtype):
        key = (self.spec, id(self), np.dtype(dtype).name)
        bufs = pop.device_cache.get(key)
        if bufs is None:
            up = self.to_device
            bufs = dict(
                net_node_start=up(pop.net_node_start), net_out=up(pop.net_out),
                node_act=up(pop.node_act), node_agg=up(pop.node_agg),
                node_conn_start=up(pop.node_conn_start),
                node_bias=up(pop.node_bias.astype(dtype)), node_resp=up(pop.node_resp.astype(dtype)),
                conn_src=up(pop.conn_src), conn_w=up(pop.conn_w.astype(dtype), "connection weights"),
            )
            pop.device_cache[key] = bufs
        return bufs

    def fnn_graph(self, pop: PackedPopulation, x, dtype) -> np.ndarray:
        import pyopencl as cl

        B = x.shape[0]
        P = pop.size
        item = np.dtype(dtype).itemsize
        budget = self._scratch_budget()
        starts = pop.net_node_start.astype(np.int64)
        largest = max(1, int(np.max(np.diff(starts))))
        n_out = pop.n_outputs
        out = np.empty((P, B, n_out), dtype=dtype)
        whole = out.nbytes <= budget  # else each launch's block of outputs comes back in turn
        with self.lock:
            knl, lanes = self._fnn_kernel("clnet_fnn_graph", dtype, B)
            # Batch chunk: as many samples as the largest network allows within the budget.
            nb_max = self._fnn_batch_chunk(B, largest * item, lanes)
            bufs = self._fnn_population_buffers(pop, dtype)
            d_x, stride = self._fnn_inputs(x, lanes)
            if not whole:
                nb_max = max(lanes, min(nb_max, budget // (n_out * item) // lanes * lanes))
            d_out = self.workspace("fnn.out", out.nbytes if whole else budget, "population outputs")
            d_scratch = self.workspace("fnn.scratch", min(budget, max(pop.num_nodes, 1) * nb_max * item),
                                       "node values")
            for b0 in range(0, B, nb_max):
                nb = min(nb_max, B - b0)
                nb_pad = _round_up(nb, lanes)
                p0 = 0
                while p0 < P:
                    # As many networks as fit in the scratch budget for this batch chunk.
                    limit = starts[p0] + budget // (nb_pad * item)
                    p1 = int(np.searchsorted(starts, limit, side="right")) - 1
                    p1 = min(max(p1, p0 + 1), P)
                    if not whole:
                        p1 = min(p1, p0 + max(1, budget // (nb * n_out * item)))
                    knl(self.queue, (-(-nb // lanes), p1 - p0), self._fnn_local(2),
                        bufs["net_node_start"], bufs["net_out"], bufs["node_act"], bufs["node_agg"],
                        bufs["node_conn_start"], bufs["node_bias"], bufs["node_resp"],
                        bufs["conn_src"], bufs["conn_w"], d_x,
                        np.int32(stride), np.int32(pop.n_inputs), np.int32(n_out),
                        np.int32(p0), np.int32(b0), np.int32(nb), np.int32(nb_pad),
                        np.int32(0 if whole else p0), np.int32(0 if whole else b0), np.int32(B if whole else nb),
                        d_scratch, d_out)
                    if not whole:
                        block = np.empty((p1 - p0, nb, n_out), dtype=dtype)
                        cl.enqueue_copy(self.queue, block, d_out)
                        out[p0:p1, b0:b0 + nb] = block
                    p0 = p1
            if whole:
                cl.enqueue_copy(self.queue, out, d_out)
            self.queue.finish()
        return out


def _round_up(n: int, m: int) -> int:
    return ((n + m - 1) // m) * m
