"""Feed-forward networks: layered (structure + one flat weight list) and evolved graphs.

Public API: :func:`fnn_forward`, :class:`FNN` (``from_structure``, ``from_graph``,
``from_neat``) and :class:`FNNPopulation`. Semantics: ``docs/SEMANTICS.md``. This module
validates and packs (clnet.common.packing); the operations ``fnn_layered`` and
``fnn_graph`` of clnet/contract.py compute, on the NumPy reference
(``clnet_fallback.fnn``) or an OpenCL device (``clnet.opencl.fnn``).
"""
from __future__ import annotations

import weakref
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from ._validate import as_real_array
from .backend import BackendLike, call, get_backend
from .common.packing import MAX_NODES, LayeredNetwork, PackedPopulation, layered_to_packed, pack_graph
from .functions import activation_id, neat_activation_name

__all__ = ["FNN", "FNNPopulation", "fnn_forward", "weight_count"]


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


def _evaluate(operation: str, network, n_inputs: int, inputs, backend: BackendLike, dtype):
    """``operation`` (fnn_layered or fnn_graph) of ``network`` on the checked inputs, and
    whether a single sample was given. An empty batch gives an empty result of the right
    shape without reaching the backend."""
    dt = get_backend(backend).check_dtype(dtype)
    x, single = _prepare_inputs(inputs, n_inputs, dt)
    if x.shape[0] == 0:
        n_out = network.n_outputs
        shape = (0, n_out) if operation == "fnn_layered" else (network.size, 0, n_out)
        return np.empty(shape, dtype=dt), single
    return call(backend, operation, network, x, dt), single


class FNN:
    """A feed-forward network, layered or an evolved graph. Call it: ``net(inputs)``.

    ``inputs`` of shape ``(n_inputs,)`` give ``(n_outputs,)``; ``(B, n_inputs)`` give
    ``(B, n_outputs)``. Every call takes ``backend=`` and ``dtype=`` (float32 default).
    """

    def __init__(self, *, n_inputs, n_outputs, layered=None, packed=None):
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self._layered: LayeredNetwork = layered  # or None for a graph
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
        return cls(n_inputs=sizes[0], n_outputs=sizes[-1], layered=LayeredNetwork(sizes, w, b, acts))

    @classmethod
    def from_graph(cls, n_inputs, n_outputs, nodes, connections) -> "FNN":
        """An evolved network: any DAG, neat-python conventions.

        ``nodes``: items with key, bias, response, activation, aggregation (mappings,
        tuples in that order, or objects); input pins are keys -1..-n_inputs, outputs
        0..n_outputs-1. ``connections``: items with src, dst, weight, enabled (mappings,
        tuples, or neat-style objects with ``key=(src, dst)``). Disabled connections are
        removed, nodes without a path to an output are not evaluated, and a cycle raises
        ValueError naming its nodes.

        Defaults, where neat-python's own may differ:

        - a node's fields default to bias 0, response 1, aggregation "sum" and activation
          **"identity"** (neat-python's config usually says sigmoid: name it, e.g.
          ``activation="neat.sigmoid"``, or use :meth:`from_neat`, which copies it);
        - a connection given as ``(src, dst)`` has weight **1.0** and is enabled;
        - the same ``(src, dst)`` given twice is two connections: both terms enter the
          node's aggregation (summed for "sum"), as two genes with those keys would.

        >>> net = FNN.from_graph(1, 1, [dict(key=0)], [(-1, 0), (-1, 0, 2.0)])
        >>> net([3.0], backend="numpy")          # identity(1.0 * 3 + 2.0 * 3)
        array([9.], dtype=float32)
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
            self._packed = layered_to_packed(self._layered)
        return self._packed

    @property
    def num_connections(self) -> int:
        """Connections evaluated per input sample (after pruning)."""
        if self._layered is not None:
            return int(self._layered.weights.size)
        return self.packed.num_connections

    @property
    def num_nodes(self) -> int:
        """Non-input nodes evaluated per input sample (after pruning)."""
        if self._layered is not None:
            return int(sum(self._layered.sizes[1:]))
        return self.packed.num_nodes

    def __repr__(self) -> str:
        kind = f"layered {self._layered.sizes}" if self._layered is not None else "graph"
        return (f"<clnet.FNN {kind}: {self.n_inputs} inputs, {self.n_outputs} outputs, "
                f"{self.num_nodes} nodes, {self.num_connections} connections>")

    # -- evaluation ----------------------------------------------------------------------------
    def __call__(self, inputs, *, backend: BackendLike = None, dtype=None) -> np.ndarray:
        """The outputs for ``inputs``: ``(n_inputs,)`` gives ``(n_outputs,)``, ``(B, n_inputs)``
        gives ``(B, n_outputs)``. ``inputs`` may be a list, a NumPy array, a torch tensor or a
        DataFrame of real numbers (not a masked array). ``backend=`` a spec or backend (default:
        :func:`clnet.use_backend`, CLNET_BACKEND, else the best usable one); ``dtype=``
        float32 (default) or float64 where the backend has it; the result has that dtype."""
        if self._layered is not None:
            out, single = _evaluate("fnn_layered", self._layered, self.n_inputs, inputs, backend, dtype)
        else:
            out, single = _evaluate("fnn_graph", self.packed, self.n_inputs, inputs, backend, dtype)
            out = out[0]
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

    @classmethod
    def from_neat(cls, genomes, config) -> "FNNPopulation":
        """The networks of a list of neat-python genomes, packed as one population.

        ``genomes`` is a list of genomes or neat's ``(genome_id, genome)`` pairs (what an
        ``eval_genomes(genomes, config)`` function receives). Each network equals
        ``FNN.from_neat(genome, config)``, in the given order, but the population is packed
        without per-network objects, and a genome structure seen before (the same node keys
        and enabled connections) reuses its pruned and ordered form: across generations only
        the weights, biases and responses of such genomes are read. The structures are kept
        per ``config`` object.
        """
        packer = _neat_packer(config)
        pop = cls.__new__(cls)
        pop.n_inputs, pop.n_outputs = packer.n_inputs, packer.n_outputs
        pop.packed = packer.pack(list(genomes))
        return pop

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
        """Every network on the same inputs, in one launch: ``(B, n_inputs)`` gives
        ``(P, B, n_outputs)`` (row p is network p's outputs), ``(n_inputs,)`` gives
        ``(P, n_outputs)``. ``inputs``, ``backend=`` and ``dtype=`` as in :meth:`FNN.__call__`."""
        out, single = _evaluate("fnn_graph", self.packed, self.n_inputs, inputs, backend, dtype)
        return out[:, 0] if single else out


_NEAT_PACKERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _neat_packer(config):
    """The :class:`~clnet.common.neat_packing.NeatPacker` of ``config``, kept while it lives."""
    from .common.neat_packing import NeatPacker

    try:
        packer = _NEAT_PACKERS.get(config)
    except TypeError:  # not weak-referenceable: no reuse across calls
        return NeatPacker(config)
    if packer is None:
        packer = _NEAT_PACKERS[config] = NeatPacker(config)
    return packer
