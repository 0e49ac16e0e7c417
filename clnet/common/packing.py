"""Packed forms of feed-forward networks, shared by every backend.

:class:`LayeredNetwork` is a network given by its structure and one flat weight list;
:class:`PackedPopulation` holds evolved graphs packed back to back with offset tables
(one network or a whole population). :func:`pack_graph` prunes, orders and packs one
evolved network; :func:`layered_to_packed` turns a layered network into the graph form
so that it can join a mixed population. Both carry a :class:`DeviceCache`, so that a
backend uploads them once and reuses its copies on every later call.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from .._validate import as_float, as_int
from ..functions import activation_id, aggregation_id
from .cache import DeviceCache

# Node and layer counts are int32 on the device; far below that, memory runs out first.
MAX_NODES = 2**24


@dataclass(eq=False)
class LayeredNetwork:
    """A layered network: layer sizes, weights and biases (float64) and activation ids.

    ``weights`` holds layer l's ``n_l x n_(l-1)`` row-major block after layer l-1's;
    ``biases`` one value per non-input neuron, layer by layer.
    """

    sizes: List[int]
    weights: np.ndarray
    biases: np.ndarray
    activations: List[int]
    device_copies: DeviceCache = field(default_factory=DeviceCache, repr=False)

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

@dataclass(eq=False)
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
    # the backends' copies (per backend and dtype), so that repeated evaluation uploads nothing
    device_copies: DeviceCache = field(default_factory=DeviceCache, repr=False)

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


def _required_nodes(n_outputs: int, incoming: Dict[int, List[int]]) -> set:
    """The nodes with a path to an output: only those are evaluated."""
    required = set(range(n_outputs))
    frontier = deque(required)
    while frontier:
        node = frontier.popleft()
        for src in incoming.get(node, []):
            if src >= 0 and src not in required:
                required.add(src)
                frontier.append(src)
    return required


def _topological_order(required: set, conns, incoming: Dict[int, List[int]]) -> List[int]:
    """Kahn's algorithm on the required nodes, ties broken by key for a stable order; a
    cycle raises ValueError naming its nodes."""
    pending = {k: sum(1 for s in incoming.get(k, []) if s >= 0) for k in required}
    consumers: Dict[int, List[int]] = {}
    for src, dst, _ in conns:
        if dst in required and src >= 0:
            consumers.setdefault(src, []).append(dst)
    ready = sorted(k for k, n in pending.items() if n == 0)
    order: List[int] = []
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
    return order


def pack_graph(n_inputs, n_outputs, nodes, connections) -> PackedPopulation:
    """Prune, order and pack one evolved network (docs/SEMANTICS.md, graph form)."""
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
    required = _required_nodes(n_outputs, incoming)
    order = _topological_order(required, conns, incoming)
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


def layered_to_packed(net: LayeredNetwork) -> PackedPopulation:
    """A layered network as a packed graph, so that it can join a mixed population."""
    sizes, weights, biases, acts = net.sizes, net.weights, net.biases, net.activations
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

