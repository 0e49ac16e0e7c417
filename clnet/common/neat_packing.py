"""A whole population of neat-python genomes packed at once, with structures reused.

Converting genome by genome (``FNN.from_neat`` then ``FNNPopulation``) prunes and orders
every network in Python and then concatenates the pieces, which for small networks
costs many times their evaluation. :class:`NeatPacker` instead:

- keys each genome by its *structure* (node keys and enabled connection keys, in order);
  a structure seen before (the common case in evolution: most offspring differ from a
  parent only in weights, biases and responses) reuses its *template*: the topological
  node order, the local source slots and offsets, and which enabled connection feeds
  each packed connection. Only a new structure is pruned and ordered, by the same steps
  that pack single graphs (:func:`clnet.common.packing.pack_graph`), so both forms agree;
- gathers every genome's numbers into flat lists and builds each array of the
  population with one NumPy operation, not one per genome;
- reuses the population's whole offset tables when the sequence of structures is the
  one it packed last (only weights changed).

What remains per genome is reading its genes, which no packing can avoid.
"""
from __future__ import annotations

from collections import OrderedDict
from operator import attrgetter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..functions import activation_id, aggregation_id, neat_activation_name
from .packing import PackedPopulation, _required_nodes, _topological_order

_NODE_FIELDS = attrgetter("bias", "response", "activation", "aggregation")

# Templates kept per packer: far more than the distinct structures of a population.
TEMPLATE_CACHE_SIZE = 20000


@dataclass(frozen=True, eq=False)
class Template:
    """The packed structure of one genome structure (see the module's text)."""

    order: Tuple[int, ...]         # evaluated node keys, topological order
    conn_index: np.ndarray         # packed connection -> index among the enabled connections
    conn_src: np.ndarray           # local source slots (int32)
    node_conn_start: np.ndarray    # (n_nodes + 1,) int32
    net_out: np.ndarray            # (n_outputs,) slots of the outputs

    @property
    def n_nodes(self) -> int:
        return len(self.order)


def _make_template(n_inputs: int, n_outputs: int, node_keys, conn_keys) -> Template:
    """Prune and order one structure with pack_graph's own steps (_required_nodes,
    _topological_order), skipping only the parsing of fields that a genome's genes hold."""
    node_set = set(node_keys)
    missing = [k for k in range(n_outputs) if k not in node_set]
    if missing:
        raise ValueError(f"output nodes {missing} are missing from the genome; outputs have keys 0..{n_outputs - 1}")
    incoming: Dict[int, List[int]] = {}
    for src, dst in conn_keys:
        if dst not in node_set or (src >= 0 and src not in node_set) or src < -n_inputs:
            raise ValueError(f"connection {(src, dst)} joins a node that is not in the genome "
                             f"(or an input pin beyond -{n_inputs})")
        incoming.setdefault(dst, []).append(src)
    required = _required_nodes(n_outputs, incoming)
    order = _topological_order(required, [(s, d, None) for s, d in conn_keys], incoming)
    slot = {-(i + 1): i for i in range(n_inputs)}
    for j, k in enumerate(order):
        slot[k] = n_inputs + j
    by_dst: Dict[int, List[Tuple[int, int]]] = {}
    for i, (src, dst) in enumerate(conn_keys):  # within a node: the genome's connection order
        if dst in required:
            by_dst.setdefault(dst, []).append((slot[src], i))
    conn_src: List[int] = []
    conn_index: List[int] = []
    starts = [0]
    for k in order:
        for s, i in by_dst.get(k, ()):
            conn_src.append(s)
            conn_index.append(i)
        starts.append(len(conn_src))
    return Template(order=tuple(order), conn_index=np.array(conn_index, dtype=np.int64),
                    conn_src=np.array(conn_src, dtype=np.int32),
                    node_conn_start=np.array(starts, dtype=np.int32),
                    net_out=np.array([slot[o] for o in range(n_outputs)], dtype=np.int32))


class NeatPacker:
    """Packs lists of neat-python genomes of one config into a :class:`PackedPopulation`."""

    def __init__(self, config):
        gc = getattr(config, "genome_config", config)
        try:
            self.n_inputs, self.n_outputs = int(gc.num_inputs), int(gc.num_outputs)
            input_keys, output_keys = list(gc.input_keys), list(gc.output_keys)
        except AttributeError as exc:
            raise TypeError(f"a neat-python config is needed ({exc})") from None
        if input_keys != [-(i + 1) for i in range(self.n_inputs)] or output_keys != list(range(self.n_outputs)):
            raise ValueError("from_neat expects neat-python's key convention: inputs -1..-n, outputs 0..n-1")
        self._templates: "OrderedDict[tuple, Template]" = OrderedDict()
        self._activations: Dict[str, int] = {}
        self._aggregations: Dict[str, int] = {}
        self._last: Optional[tuple] = None  # (templates, offset tables, weight starts) of the last call
        self.templates_built = 0  # how many structures were pruned and ordered (for tests and benchmarks)

    def _template(self, key) -> Template:
        t = self._templates.get(key)
        if t is None:
            t = _make_template(self.n_inputs, self.n_outputs, key[0], key[1])
            self.templates_built += 1
            self._templates[key] = t
            if len(self._templates) > TEMPLATE_CACHE_SIZE:
                self._templates.popitem(last=False)
        return t

    def _activation(self, name) -> int:
        i = self._activations.get(name)
        if i is None:
            i = self._activations[name] = activation_id(neat_activation_name(name), f"activation {name!r}")
        return i

    def _aggregation(self, name) -> int:
        i = self._aggregations.get(name)
        if i is None:
            i = self._aggregations[name] = aggregation_id(name, f"aggregation {name!r}")
        return i

    def pack(self, genomes: Sequence) -> PackedPopulation:
        """The population of ``genomes`` (genomes, or neat's ``(genome_id, genome)`` pairs)."""
        templates: List[Template] = []
        weights: List[float] = []
        weight_start: List[int] = []
        node_rows: List[tuple] = []  # (bias, response, activation, aggregation) per evaluated node
        read = _NODE_FIELDS
        for i, genome in enumerate(genomes):
            if isinstance(genome, tuple) and len(genome) == 2:
                genome = genome[1]
            try:
                node_genes, conn_genes = genome.nodes, genome.connections
                enabled = [(k, g.weight) for k, g in conn_genes.items() if g.enabled]
            except AttributeError as exc:
                raise TypeError(f"genomes[{i}] must be a neat-python genome ({exc})") from None
            t = self._template((tuple(node_genes), tuple(k for k, _ in enabled)))
            templates.append(t)
            weight_start.append(len(weights))
            weights.extend(w for _, w in enabled)
            try:
                node_rows.extend([read(node_genes[k]) for k in t.order])
            except AttributeError as exc:
                raise TypeError(f"genomes[{i}] has a node that is not a neat-python node gene ({exc})") from None
        if not templates:
            raise ValueError("a population needs at least one genome")
        tables = self._tables(templates, weight_start)
        bias, resp, act, agg = zip(*node_rows) if node_rows else ((), (), (), ())
        acts, aggs = self._activations, self._aggregations
        try:
            conn_w = np.asarray(weights, dtype=np.float64)[tables["gather"]]
            node_bias = np.asarray(bias, dtype=np.float64)
            node_resp = np.asarray(resp, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"genome weights, biases and responses must be real numbers ({exc})") from None
        act_ids = _ids(act, acts, self._activation)
        agg_ids = _ids(agg, aggs, self._aggregation)
        return PackedPopulation(
            self.n_inputs, self.n_outputs,
            net_node_start=tables["net_node_start"], net_out=tables["net_out"],
            node_act=np.asarray(act_ids, dtype=np.int32).reshape(-1),
            node_agg=np.asarray(agg_ids, dtype=np.int32).reshape(-1),
            node_conn_start=tables["node_conn_start"], node_bias=node_bias, node_resp=node_resp,
            conn_src=tables["conn_src"], conn_w=conn_w)

    def _tables(self, templates: List[Template], weight_start: List[int]) -> dict:
        """Offset tables of the population, and the gather index of its weights: reused
        whole when the structures are those of the previous call."""
        last = self._last
        if (last is not None and len(last[0]) == len(templates) and last[2] == weight_start
                and all(a is b for a, b in zip(last[0], templates))):
            return last[1]
        # Each table is the templates' pieces joined by one concatenate, then shifted by
        # each network's base with one repeat: no NumPy operation per genome.
        n_nodes = np.fromiter((t.n_nodes for t in templates), dtype=np.int64, count=len(templates))
        n_conns = np.fromiter((len(t.conn_src) for t in templates), dtype=np.int64, count=len(templates))
        node_base = np.zeros(len(templates) + 1, dtype=np.int64)
        np.cumsum(n_nodes, out=node_base[1:])
        conn_base = np.zeros(len(templates) + 1, dtype=np.int64)
        np.cumsum(n_conns, out=conn_base[1:])
        node_conn_start = np.zeros(int(node_base[-1]) + 1, dtype=np.int64)
        node_conn_start[1:] = np.concatenate([t.node_conn_start[1:] for t in templates])
        node_conn_start[1:] += np.repeat(conn_base[:-1], n_nodes)
        gather = np.concatenate([t.conn_index for t in templates])
        gather += np.repeat(np.asarray(weight_start, dtype=np.int64), n_conns)
        tables = dict(
            net_node_start=node_base.astype(np.int32),
            net_out=np.stack([t.net_out for t in templates]).astype(np.int32),
            node_conn_start=node_conn_start.astype(np.int32),
            conn_src=np.concatenate([t.conn_src for t in templates]).astype(np.int32),
            gather=gather)
        self._last = (templates, tables, list(weight_start))
        return tables


def _ids(names, known: Dict[str, int], resolve) -> List[int]:
    """The function ids of ``names``: one C-level lookup per name, and ``resolve`` (which
    checks and records a name) only for names not seen before."""
    try:
        return list(map(known.__getitem__, names))
    except KeyError:
        for name in set(names) - known.keys():
            resolve(name)
        return list(map(known.__getitem__, names))
