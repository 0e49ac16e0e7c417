"""The backend contract: every operation a backend may implement, family by family.

A backend is a :class:`clnet.Backend` subclass that also inherits the families it
implements, for example ``class MyBackend(clnet.Backend, FNNOps)``. A family is
all or nothing: a backend that inherits one but leaves an operation out is refused when
it is loaded (:func:`check_backend`), with a message naming what is missing. An
operation of a family the backend does not inherit raises ``NotImplementedError``
naming the backend and the operation. The conformance suite checks that every declared
operation has the signature written here (``python -m clnet conformance``,
:func:`signature_mismatches`).

The public modules (:mod:`clnet.fnn`, :mod:`clnet.rnn`, :mod:`clnet.bptt`,
:mod:`clnet.pearson`) validate every argument before they call an operation, so an
operation receives exactly the types and shapes written in its docstring and never has
to check them again. Arrays are C-contiguous NumPy arrays of the call's ``dtype``
(float32 or float64) unless a docstring says otherwise. Results are new arrays the
caller owns.

Objects that an operation returns and later receives back (a cell's prepared weights,
a recurrent state's storage, a Pearson plan) belong to the backend: the public API only
passes them through, so their type is the backend's choice.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Type

import numpy as np

from .common.packing import LayeredNetwork, PackedPopulation
from .common.mcl import Columns, MCLParams
from .common.pearson import Prepared

__all__ = ["Family", "FNNOps", "RNNOps", "BPTTOps", "BPTTGroupOps", "MemberByMember", "PearsonOps", "PearsonPlan", "MCLOps", "MCLPlan", "FAMILIES",
           "ContractError", "families_of", "missing_operations", "check_backend",
           "signature_mismatches", "operation_family", "operation_family_by_name"]


class ContractError(TypeError):
    """A backend declares a family but does not implement all of its operations."""


def operation(fn):
    """Marks a method of a family as one of the contract's operations."""
    fn.__clnet_operation__ = True
    return fn


class Family:
    """Base of the operation families. ``name`` is the family's name."""

    name: str = ""

    @classmethod
    def operations(cls) -> List[str]:
        """The names of this family's operations, in declaration order."""
        return [k for k, v in vars(cls).items() if getattr(v, "__clnet_operation__", False)]


class FNNOps(Family):
    """Feed-forward networks: layered networks and packed evolved graphs (docs/SEMANTICS.md)."""

    name = "fnn"

    @operation
    def fnn_layered(self, net: LayeredNetwork, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Outputs ``(B, n_outputs)`` of a layered network for inputs ``x`` ``(B, n_inputs)``, B >= 1.

        ``net`` is the same object on every call for the same network: a backend may keep
        its copies in ``net.device_copies``.
        """
        raise NotImplementedError

    @operation
    def fnn_graph(self, pop: PackedPopulation, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Outputs ``(P, B, n_outputs)`` of every packed network for inputs ``x`` ``(B, n_inputs)``.

        A single network is a population of one. ``pop.device_copies`` may hold the
        backend's copies of the packed arrays between calls.
        """
        raise NotImplementedError


class RNNOps(Family):
    """Recurrent cells (LSTM, GRU, Elman RNN) with state kept by the backend.

    ``kind`` is one of ``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"``. ``keep``
    masks hold 1 where a state carries over and 0 where an episode started before the
    step (that row uses h = c = 0); ``None`` means nothing is reset.
    """

    name = "rnn"

    @operation
    def rnn_prepare(self, kind: str, params: Dict[str, np.ndarray], hidden: int, dtype: np.dtype) -> Any:
        """The backend's form of a cell's weights: ``params`` holds float64 ``weight_ih``
        ``(G*H, I)``, ``weight_hh`` ``(G*H, H)`` and, with biases, ``bias_ih`` and ``bias_hh``
        ``(G*H,)`` (PyTorch's layout). Called once per cell, backend and dtype."""
        raise NotImplementedError

    @operation
    def rnn_state_new(self, kind: str, batch: int, hidden: int, dtype: np.dtype) -> Any:
        """Storage for a zero state (h, and c for an LSTM) of ``batch`` rows."""
        raise NotImplementedError

    @operation
    def rnn_state_read(self, storage: Any, which: str) -> np.ndarray:
        """A copy of ``"h"`` or ``"c"`` as ``(batch, hidden)``."""
        raise NotImplementedError

    @operation
    def rnn_state_write(self, storage: Any, h: np.ndarray, c: Optional[np.ndarray]) -> None:
        """Overwrite h (and c unless None) with ``(batch, hidden)`` arrays."""
        raise NotImplementedError

    @operation
    def rnn_state_reset(self, storage: Any, keep: np.ndarray) -> None:
        """Zero the rows of h (and c) where ``keep`` ``(batch,)`` is 0."""
        raise NotImplementedError

    @operation
    def rnn_step(self, weights: Any, storage: Any, x: np.ndarray, keep: Optional[np.ndarray]) -> np.ndarray:
        """One step in place for inputs ``x`` ``(B, I)``; returns the new h ``(B, hidden)``."""
        raise NotImplementedError

    @operation
    def rnn_sequence(self, weights: Any, storage: Any, xs: np.ndarray,
                     keeps: Optional[np.ndarray]) -> np.ndarray:
        """T >= 1 steps for ``xs`` ``(T, B, I)`` with ``keeps`` ``(T, B)``; returns every h
        ``(T, B, hidden)`` and leaves the state at the last step."""
        raise NotImplementedError

    @operation
    def rnn_sequence_stacked(self, layers: Sequence[Any], storages: Sequence[Any], xs: np.ndarray,
                             keeps: Optional[np.ndarray]) -> np.ndarray:
        """``rnn_sequence`` through stacked layers: layer l's outputs are layer l+1's
        inputs, ``keeps`` applies to every layer, each storage is left at the last step.
        Returns the last layer's h ``(T, B, hidden)``. A device backend keeps the
        intermediate layers on the device."""
        raise NotImplementedError


class BPTTOps(Family):
    """Backpropagation through time over a stored rollout (``backward_sequence``)."""

    name = "bptt"

    @operation
    def rnn_backward(self, layers: Sequence[Any], xs: np.ndarray, h0: np.ndarray, c0: Optional[np.ndarray],
                     keeps: Optional[np.ndarray], gkeep: np.ndarray, dhs: np.ndarray,
                     dhT: Optional[np.ndarray], dcT: Optional[np.ndarray], burn_in: int) -> Dict[str, Any]:
        """Gradients through L stacked layers (prepared by ``rnn_prepare``) of one kind.

        ``xs`` ``(T, B, I)``; ``h0`` (and ``c0`` for an LSTM, else None) ``(L, B, H)``;
        ``keeps`` ``(T, B)`` resets as in :class:`RNNOps`; ``gkeep`` ``(T, B)`` is 0 where no
        gradient flows into the state before a step (a reset, a truncation boundary, the
        end of the burn-in); ``dhs`` ``(T, B, H)`` the (already masked) gradients of the
        last layer's outputs, zero before ``burn_in``; ``dhT``/``dcT`` ``(L, B, H)`` or None,
        those of the final states. Steps before ``burn_in`` carry no gradient.

        Returns ``{"layers": [{"weight_ih", "weight_hh", "bias_ih", "bias_hh"} per layer],
        "x": (T, B, I), "h0": (L, B, H), "c0": (L, B, H) or None}``.
        """
        raise NotImplementedError

    @operation
    def rnn_forward_saving(self, layers: Sequence[Any], xs: np.ndarray, h0: np.ndarray, c0: Optional[np.ndarray],
                           keeps: Optional[np.ndarray]) -> Tuple[np.ndarray, Any]:
        """The forward pass of :meth:`rnn_backward` alone (arguments alike), keeping what the
        backward needs: returns ``(hs, saved)``, the last layer's outputs ``(T, B, H)`` and an
        object of the backend's own that :meth:`rnn_backward_saved` takes, once (it may use
        the saved buffers up)."""
        raise NotImplementedError

    @operation
    def rnn_backward_saved(self, layers: Sequence[Any], saved: Any, gkeep: np.ndarray, dhs: np.ndarray,
                           dhT: Optional[np.ndarray], dcT: Optional[np.ndarray], burn_in: int,
                           inputs: bool = True) -> Dict[str, Any]:
        """:meth:`rnn_backward` through a forward pass saved by :meth:`rnn_forward_saving` with
        the same ``layers``: the same result, the forward not run again. With ``inputs`` False
        the caller does not want the first layer's input gradient: ``"x"`` may be None, and
        the backend may skip computing it (the other gradients are the same)."""
        raise NotImplementedError


class BPTTGroupOps(Family):
    """Cell groups (:class:`clnet.CellGroup`): cells of one kind and one shape that read the
    same inputs (an actor and a critic, an ensemble), recorded and run backwards together.

    ``n`` members; ``params`` as for :meth:`RNNOps.rnn_prepare`, one dict per member. This
    family is optional: for a backend that does not declare it, clnet runs a group member
    by member through :class:`BPTTOps` (:class:`MemberByMember`), with
    the same results. A device backend declares it to run the members side by side, in the
    launches of one cell.
    """

    name = "bptt_group"

    @operation
    def rnn_prepare_group(self, kind: str, params: Sequence[Dict[str, np.ndarray]], hidden: int,
                          dtype: np.dtype) -> Any:
        """The backend's form of the members' weights, in their order."""
        raise NotImplementedError

    @operation
    def rnn_forward_saving_group(self, weights: Any, xs: np.ndarray, h0: np.ndarray, c0: Optional[np.ndarray],
                                 keeps: Optional[np.ndarray]) -> Tuple[np.ndarray, Any]:
        """:meth:`BPTTOps.rnn_forward_saving` of every member of one layer over the shared
        ``xs`` ``(T, B, I)`` and ``keeps``; ``h0`` (and ``c0`` for an LSTM) ``(n, B, H)``.
        Returns ``(hs, saved)``: ``hs`` ``(n, T, B, H)``, and an object that
        :meth:`rnn_backward_saved_group` takes once."""
        raise NotImplementedError

    @operation
    def rnn_backward_saved_group(self, weights: Any, saved: Any, gkeep: np.ndarray, dhs: np.ndarray,
                                 dhT: Optional[np.ndarray], dcT: Optional[np.ndarray], burn_in: int,
                                 inputs: bool = True) -> List[Dict[str, Any]]:
        """:meth:`BPTTOps.rnn_backward_saved` of every member: ``gkeep`` ``(T, B)`` is shared,
        ``dhs`` ``(n, T, B, H)``, ``dhT``/``dcT`` ``(n, B, H)`` or None. Returns one result
        per member, each as :meth:`BPTTOps.rnn_backward` returns it (one layer; ``"x"``
        that member's own input gradient, or None without ``inputs``)."""
        raise NotImplementedError


class MemberByMember(BPTTGroupOps):
    """The "bptt_group" family written with :class:`BPTTOps` alone: each group operation is
    the single-cell operation once per member. A backend that implements RNNOps and BPTTOps
    may inherit it to declare the family (the NumPy reference does); clnet runs it for a
    backend that does not declare the family. The same results as a backend that runs the
    members side by side, one call per member."""

    def rnn_prepare_group(self, kind, params, hidden, dtype):
        return [self.rnn_prepare(kind, p, hidden, dtype) for p in params]

    def rnn_forward_saving_group(self, weights, xs, h0, c0, keeps):
        runs = [self.rnn_forward_saving([w], xs, h0[m:m + 1], None if c0 is None else c0[m:m + 1], keeps)
                for m, w in enumerate(weights)]
        return np.stack([hs for hs, _ in runs]), [saved for _, saved in runs]

    def rnn_backward_saved_group(self, weights, saved, gkeep, dhs, dhT, dcT, burn_in, inputs=True):
        # with inputs=True a backend written before ``inputs`` existed is asked as it was then
        extra = {} if inputs else {"inputs": False}
        return [self.rnn_backward_saved([w], s, gkeep, dhs[m], None if dhT is None else dhT[m:m + 1],
                                        None if dcT is None else dcT[m:m + 1], burn_in, **extra)
                for m, (w, s) in enumerate(zip(weights, saved))]


class PearsonPlan(Family):
    """Prepared rows on one backend, and the strip operations of the Pearson drivers.

    Made by :meth:`PearsonOps.pearson_plan`. ``strip_rows`` is the number of rows per
    strip the drivers use; every result is in the plan's dtype, with the rescued pairs
    already recomputed (clnet.common.pearson.patch_rescued).
    """

    name = "pearson plan"
    strip_rows: int = 1

    @operation
    def block(self, start: int, stop: int) -> np.ndarray:
        """r of rows start..stop-1 against every column: ``(stop - start, n_cols)``."""
        raise NotImplementedError

    @operation
    def dense(self) -> np.ndarray:
        """The whole ``(n_rows, n_cols)`` matrix."""
        raise NotImplementedError

    @operation
    def topk(self, start: int, stop: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Per row of the strip, the k largest r (the row itself excluded when the plan
        is symmetric), ties by lower column: int64 indices and values, ``(stop - start, k)``,
        padded with -1 / NaN."""
        raise NotImplementedError

    @operation
    def threshold(self, start: int, stop: int, t: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs of the strip with ``|r| >= t`` as global (rows, cols, values), the
        diagonal excluded when the plan is symmetric."""
        raise NotImplementedError

    def topk_symmetric(self, k: int, strips: Iterable[Tuple[int, int]]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Optional: the top-k of X against itself for all rows, consuming ``strips``, or
        None (nothing consumed) to let the driver call :meth:`topk` strip by strip."""
        return None


class PearsonOps(Family):
    """Pairwise Pearson correlation over standardised rows (clnet.common.pearson)."""

    name = "pearson"

    @operation
    def pearson_plan(self, rows: Prepared, cols: Optional[Prepared], dtype: np.dtype,
                     min_overlap: int) -> PearsonPlan:
        """A :class:`PearsonPlan` for ``rows`` against ``cols`` (None: rows against themselves)."""
        raise NotImplementedError


__all__ += ["PathsOps", "PathsListing"]


class PathsListing(Family):
    """A listing of simple paths in progress on one backend (made by :meth:`PathsOps.paths_listing`)."""

    name = "paths listing"

    @operation
    def next_chunk(self, max_rows: int) -> Optional[np.ndarray]:
        """Up to ``max_rows`` (>= 1) further paths, none listed before: int32 ``(rows, max_length + 1)``,
        one path per row in vertex order, padded with -1; None once every path was listed."""
        raise NotImplementedError


class PathsOps(Family):
    """Counting and listing simple paths (docs/SEMANTICS.md, Simple paths).

    ``adjacency`` is a C-contiguous bool ``(N, N)`` array, ``adjacency[i, j]`` an edge
    i -> j, with a false diagonal (an undirected graph arrives symmetric); ``sources`` an
    int64 array of distinct vertices.
    """

    name = "paths"

    @operation
    def paths_count_limit(self, n: int) -> Optional[str]:
        """None when this backend can count the paths of a graph of ``n`` vertices, else why not."""
        raise NotImplementedError

    @operation
    def paths_count(self, adjacency: np.ndarray, sources: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Exact counts as (lo, hi) uint64 words of 128-bit integers, each ``(S, N, N)``: at
        ``[s, j, k]`` the number of simple paths of k edges from ``sources[s]`` to j (zero for
        k = 0 and for j = sources[s])."""
        raise NotImplementedError

    @operation
    def paths_listing(self, adjacency: np.ndarray, sources: np.ndarray, targets: np.ndarray,
                      min_length: int, max_length: int) -> PathsListing:
        """A :class:`PathsListing` of every simple path from a source to a vertex where the bool
        ``(N,)`` ``targets`` is true, with min_length <= edges <= max_length (1 <= min_length
        <= max_length <= N - 1)."""
        raise NotImplementedError


class MCLPlan(Family):
    """One Markov clustering run's iterand, kept by the backend between iterations.

    Made by :meth:`MCLOps.mcl_plan` from the start matrix (loops added, columns
    stochastic). The public driver (clnet.mcl) decides when to stop and interprets the
    limit on the host.
    """

    name = "mcl plan"

    @operation
    def iterate(self, inflation: float) -> Tuple[float, int]:
        """One mcl iteration on the iterand: expansion (the plan's power), per-column
        pruning/selection/recovery (clnet.common.mcl.prune_thresholds) and rescaling,
        inflation with ``inflation`` and rescaling. Returns (chaos, nonzeros): the largest
        column chaos of the expanded iterand, as mcl measures it, and the entries kept."""
        raise NotImplementedError

    @operation
    def current(self) -> Columns:
        """The iterand now, as float64 :class:`clnet.common.mcl.Columns` (rows ascending)."""
        raise NotImplementedError


class MCLOps(Family):
    """Markov clustering with mcl's semantics (docs/SEMANTICS.md)."""

    name = "mcl"

    @operation
    def mcl_plan(self, start: Columns, dtype: np.dtype, params: MCLParams) -> MCLPlan:
        """An :class:`MCLPlan` whose iterand is ``start`` (column-stochastic, a loop on every
        non-empty column, float64 values) in ``dtype``."""
        raise NotImplementedError


FAMILIES: Tuple[Type[Family], ...] = (FNNOps, RNNOps, BPTTOps, BPTTGroupOps, PearsonOps, MCLOps, PathsOps)


def operation_family(name: str) -> Optional[Type[Family]]:
    """The family that declares operation ``name``, or None."""
    return next((f for f in FAMILIES if name in f.operations()), None)


def operation_family_by_name(name: str) -> Optional[Type[Family]]:
    """The family called ``name`` ("fnn", "rnn", "bptt", "pearson", "paths", ...), or None."""
    return next((f for f in FAMILIES if f.name == name), None)


def families_of(backend) -> List[Type[Family]]:
    """The families a backend (instance or class) declares by inheriting them."""
    cls = backend if isinstance(backend, type) else type(backend)
    return [f for f in FAMILIES if issubclass(cls, f)]


def missing_operations(backend) -> Dict[str, List[str]]:
    """Per declared family, the operations the backend leaves to the contract's stubs."""
    cls = backend if isinstance(backend, type) else type(backend)
    missing = {}
    for fam in families_of(cls):
        absent = [op for op in fam.operations()
                  if getattr(getattr(cls, op, None), "__clnet_operation__", False)]
        if absent:
            missing[fam.name] = absent
    return missing


def check_backend(backend) -> None:
    """Raise :class:`ContractError` when a declared family is implemented only in part."""
    missing = missing_operations(backend)
    if missing:
        name = getattr(backend, "spec", "") or getattr(backend, "__name__", type(backend).__name__)
        parts = "; ".join(f"family {fam!r} lacks {', '.join(ops)}" for fam, ops in missing.items())
        raise ContractError(f"backend {name!r} implements a family only in part: {parts}. Implement "
                            f"every operation of a family it inherits (see clnet/contract.py), or do "
                            f"not inherit that family")


def parameters_of(fn) -> List[Tuple[str, Any]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def signature_mismatches(backend) -> List[str]:
    """One line per declared operation whose parameters differ from the contract's (names,
    order and kinds), or that is missing; empty when the backend conforms."""
    cls = backend if isinstance(backend, type) else type(backend)
    problems = []
    for fam in families_of(cls):
        for op in fam.operations():
            mine = getattr(cls, op, None)
            if mine is None or getattr(mine, "__clnet_operation__", False):
                problems.append(f"{fam.name}.{op}: missing")
                continue
            want, got = parameters_of(vars(fam)[op]), parameters_of(mine)
            if want != got:
                problems.append(f"{fam.name}.{op}: parameters {[n for n, _ in got]} differ from the "
                                f"contract's {[n for n, _ in want]}")
    return problems
