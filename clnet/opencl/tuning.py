"""Tunable kernel parameters: declared per family, defaulted from the device's reported
properties, tuned by measurement (``python -m clnet tune``) and kept per device in a cache file.

Each family of kernels declares, in :data:`FAMILIES`, the parameters that change how fast it
runs but not what it computes: tile heights, samples per work-item, work-group sizes, the
batch below which a whole sequence runs in one launch, and so on. Each parameter names its
allowed values and a default computed from :class:`DeviceProperties` (and the shape being
run); a family's constraint rejects combinations the kernels or the device cannot take.

Tuned values live in one JSON file per device (see :func:`cache_path`), keyed by platform,
device, driver version and clnet version; a call looks up the tuned entry of its family whose
shape is nearest its own (:meth:`DeviceTuning.lookup`) and uses it only within the family's
``reach`` of that shape, else the defaults. Untuned devices run on the defaults.
Nothing here measures anything: the measuring is clnet/opencl/tuner.py, run only on request.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from ..common.files import write_atomically

FORMAT = 2  # version of the cache file's layout (2: rnn and bptt entries carry the hidden size)
ENV_DIR = "CLNET_TUNING_DIR"


@dataclass(frozen=True)
class DeviceProperties:
    """What a device reports about itself: the only inputs of the default parameters."""

    kind: str            # "cpu", "gpu" or "accelerator"
    compute_units: int
    vector_width: int    # CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT
    native_width: int    # CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT
    local_memory: int    # bytes
    max_group: int       # CL_DEVICE_MAX_WORK_GROUP_SIZE
    max_alloc: int
    cache: int = 0       # CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, bytes (0: not reported)

    @classmethod
    def of(cls, device) -> "DeviceProperties":
        import pyopencl as cl
        t = device.type
        kind = "gpu" if t & cl.device_type.GPU else "cpu" if t & cl.device_type.CPU else "accelerator"
        return cls(kind, int(device.max_compute_units), max(1, int(device.preferred_vector_width_float)),
                   max(1, int(device.native_vector_width_float)), int(device.local_mem_size),
                   int(device.max_work_group_size), int(device.max_mem_alloc_size),
                   int(getattr(device, "global_mem_cache_size", 0) or 0))

    @property
    def simd(self) -> bool:
        """True for CPUs whose compiler vectorises the kernels' own lane loops: they report a
        preferred float vector width above 1 (PoCL: 16). Such a device runs several vectors of
        samples per work-item."""
        return self.kind != "gpu" and self.vector_width > 1

    @property
    def vectorises_work_items(self) -> bool:
        """True for CPUs that report a preferred width of 1 but a native width above 1 (Intel's
        runtime: 1 and 16): the implementation packs neighbouring work-items of a group into
        one vector itself. One sample per work-item in groups of whole native vectors then
        beats explicit lane loops on gathers (measured: 3x on the population kernel); where the
        loads are contiguous (the layered kernel) explicit lanes still win, so the families
        decide per kernel."""
        return self.kind != "gpu" and self.vector_width == 1 and self.native_width > 1


@dataclass(frozen=True)
class Tunable:
    name: str
    values: Tuple[Any, ...]
    default: Callable[[DeviceProperties, Mapping[str, Any]], Any]  # (device, shape) -> value
    doc: str


@dataclass(frozen=True)
class TunableFamily:
    """The tunable parameters of one kernel family. ``exact`` shape fields must match for a
    tuned entry to apply (an LSTM entry never configures a GRU); ``nearest`` fields pick the
    entry nearest in log scale. ``reach`` bounds how far a measurement is trusted: an entry
    applies only to shapes whose ``nearest`` fields differ from its own by at most that factor
    in all (the product of the per-field ratios, larger over smaller); beyond it the call runs
    on the defaults. None: every shape uses the nearest entry, however far."""

    name: str
    params: Tuple[Tunable, ...]
    exact: Tuple[str, ...]
    nearest: Tuple[str, ...]
    constraint: Callable[[Mapping[str, Any], DeviceProperties, Mapping[str, Any]], bool]
    reach: Optional[float] = None
    # Row-tile heights along the batch: a tuned height is applied at another batch only if it
    # spreads that batch's tiles over the compute units at least as evenly as the default
    # height does (see tile_balance).
    balanced: Tuple[str, ...] = ()
    # Parameters whose best values depend on each other (samples per work-item and work-items
    # per group): the tuner searches each such set jointly, every combination, instead of one
    # parameter at a time (which, from Intel's old defaults, never reached one sample per
    # work-item in groups of 16: each half of that change alone was slower).
    coupled: Tuple[Tuple[str, ...], ...] = ()

    def param(self, name: str) -> Tunable:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"family {self.name!r} has no tunable parameter {name!r}; it has "
                       f"{', '.join(p.name for p in self.params)}")

    def defaults(self, props: DeviceProperties, shape: Mapping[str, Any]) -> Dict[str, Any]:
        config = {p.name: p.default(props, shape) for p in self.params}
        if not self.constraint(config, props, shape):  # a declaration bug, not a user error
            raise AssertionError(f"default {self.name} parameters {config} break their own constraint")
        return config

    def check(self, config: Mapping[str, Any]) -> None:
        """ValueError unless every entry names a parameter and one of its allowed values."""
        for name, value in config.items():
            p = self.param(name)
            if value not in p.values:
                raise ValueError(f"{self.name}.{name}={value!r} is not allowed: expected one of {list(p.values)}")

    def allowed(self, config: Mapping[str, Any], props: DeviceProperties, shape: Mapping[str, Any]) -> bool:
        return self.constraint(config, props, shape)

    def sweep(self, props: DeviceProperties, shape: Mapping[str, Any]) -> List[Dict[str, Any]]:
        """The defaults, then every allowed value of every parameter with the others at their
        defaults: the configurations the correctness tests run (each value the tuner may
        pick is run at least once)."""
        base = self.defaults(props, shape)
        out = [dict(base)]
        for p in self.params:
            for v in p.values:
                c = dict(base, **{p.name: v})
                if c not in out and self.allowed(c, props, shape):
                    out.append(c)
        return out


def _pick(values, wanted):
    """The allowed value nearest ``wanted`` (ties to the smaller)."""
    numeric = [v for v in values if isinstance(v, (int, float))]
    return min(numeric, key=lambda v: (abs(math.log(max(v, 1)) - math.log(max(wanted, 1))), v))


# -- FNN: kernels/fnn.cl ------------------------------------------------------------------------
# Lanes: samples per work-item (the kernel's CLNET_LANES loops). Groups: work-items per group,
# 0 = the implementation's own choice.
LANES = (1, 2, 4, 8, 16, 32, 64)
GROUPS = (0, 1, 4, 16, 64, 256)


def _fnn_lanes(props, shape):
    # Per-node work (reading the node, dispatching on its functions) is shared by every lane
    # of a work-item: several SIMD widths per work-item where the kernel does its own SIMD.
    # Where the compiler also packs work-items (Intel's runtime), one native vector per
    # work-item measured faster than four (layered kernel, 250-2999 samples: 1.2-1.8x).
    if props.simd:
        return min(64, props.vector_width * 4)
    return min(64, props.native_width) if props.vectorises_work_items else 1


def _fnn_group(props, shape):
    # a work-item that is already a SIMD tile runs alone in its group
    return 1 if props.simd or props.vectorises_work_items else _one_sample_group(props)


def _one_sample_group(props):
    # One sample per work-item: groups of whole native vectors (GPU practice: 64-256; on a CPU
    # that vectorises across work-items, one native vector's worth).
    wanted = props.native_width if props.vectorises_work_items else max(64, props.native_width * 4)
    return min(_pick(GROUPS[1:], wanted), props.max_group)


def _fnn_graph_lanes(props, shape):
    # The population kernel gathers its operands through each connection's source, and its
    # loop bounds change from node to node: a compiler that vectorises across work-items
    # does that better than the lane loops do.
    return 1 if props.vectorises_work_items else _fnn_lanes(props, shape)


def _fnn_graph_group(props, shape):
    return 1 if props.simd else _one_sample_group(props)  # (simd and packing exclude each other)


def _fnn_vector_lanes(props, shape):
    # A population whose functions are all plain arithmetic in float builds (sum, max, ...,
    # sigmoid, relu, log: no builtin calls, no median; clnet.opencl.fnn.LANE_ACTIVATIONS):
    # there the lane loops vectorise under every compiler, and on Intel's runtime two native
    # vectors of samples per work-item beat packed work-items (neat-python's default sum and
    # sigmoid, 250-2,999 samples: 1.4-1.9x; with tanh or sin, packing stays 1.5-2x faster).
    if props.vectorises_work_items:
        return min(64, props.native_width * 2)
    return _fnn_lanes(props, shape)


def _fnn_vector_group(props, shape):
    return 1 if props.simd or props.vectorises_work_items else _one_sample_group(props)


SCRATCH_MB = (1, 2, 4, 8, 16, 32, 64, 256)


# Cache one compute unit of a CPU device can count on. A runtime reports the cache of the
# whole chip (PoCL: the last level), shared by every core of the socket, also those a virtual
# machine never sees: a 2-core VM on a 5th-generation Xeon reports 300 MiB, and defaults sized
# from that ran 2-3x slower than from its share (FNN scratch at 20,000 samples 68 against
# 24 ms, Pearson strips at 4,000 rows 222 against 112 ms on PoCL). Server chips carry about
# 2-5 MiB of last-level cache per core; PoCL counts hardware threads as compute units, so
# on a machine with two threads per core this allows twice that per core. On the 2-core
# Zen 5 (32 MiB L3) it moves PoCL's FNN scratch from 32 to 8 MiB, not measured there; on
# the Xeon VM 8 and 32 MiB ran alike (25.9 and 24.1 ms at 20,000 samples).
CACHE_PER_COMPUTE_UNIT = 4 * 2**20


def cache_share(props) -> int:
    """Bytes of the reported cache this device's compute units can count on (see above)."""
    return int(min(props.cache, props.compute_units * CACHE_PER_COMPUTE_UNIT))


def _fnn_scratch(props, shape):
    # A launch's node values are written once and read back by later nodes of the same
    # network: on a CPU they should stay in the device's share of the cache (cache_share;
    # PoCL reports the last level, Intel's runtime the L2), but a launch also costs tens of
    # microseconds, so it holds at least 4 MB (a million float32 node values, about half a millisecond of work). GPUs
    # stream their scratch through memory anyway and want the most work per launch.
    if props.kind == "gpu":
        return SCRATCH_MB[-1]
    return _pick(SCRATCH_MB, max(4, cache_share(props) // 2**20))


def _fnn_median_ranks(props, shape):
    # Where the compiler vectorises the lane loops (PoCL), the bisection's passes are already
    # SIMD loops over the lanes and its table-free form measured faster (an all-median
    # population: 18.8 against 22.7 ms); where work-items are packed (Intel's runtime: 88 to
    # 23 ms), counting ranks among a few kept terms beats 33 passes over them. On a GPU the
    # kept keys would be indexed at run time (spilled to memory) and neither way has been
    # measured: the bisection, which ran there before, until the tuner says otherwise.
    return 16 if props.vectorises_work_items else 0


def _fnn_ok(c, props, shape):
    return all(c[f"{form}_group"] <= props.max_group for form in ("layered", "graph", "graph_vector"))


FNN = TunableFamily(
    "fnn",
    (Tunable("layered_lanes", LANES, _fnn_lanes, "samples per work-item, layered kernel"),
     Tunable("layered_group", GROUPS, _fnn_group, "work-items per group, layered kernel (0: implementation's)"),
     Tunable("graph_lanes", LANES, _fnn_graph_lanes, "samples per work-item, population (graph) kernel"),
     Tunable("graph_group", GROUPS, _fnn_graph_group, "work-items per group, population kernel (0: implementation's)"),
     Tunable("graph_vector_lanes", LANES, _fnn_vector_lanes,
             "samples per work-item, population kernel, when every function is plain arithmetic"),
     Tunable("graph_vector_group", GROUPS, _fnn_vector_group,
             "work-items per group, population kernel, likewise (0: implementation's)"),
     Tunable("scratch_mb", SCRATCH_MB, _fnn_scratch, "MiB of node values per launch (both kernels)"),
     Tunable("graph_median_ranks", (0, 8, 16), _fnn_median_ranks,
             "largest fan-in whose median counts ranks instead of bisecting (population kernel)")),
    exact=(), nearest=("batch",), constraint=_fnn_ok,
    coupled=(("layered_lanes", "layered_group"), ("graph_lanes", "graph_group"),
             ("graph_vector_lanes", "graph_vector_group")))

# -- RNN: kernels/rnn.cl ------------------------------------------------------------------------
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
ROWS = (1, 2, 4, 6, 8, 12)
# Accumulator vectors one work-item may hold (rows x gates): within the 32 vector registers
# of the widest CPU SIMD units, leaving room for the operands.
REGISTER_TILE = 24
ROW_GROUPS = (1, 2, 4, 8, 16, 32, 64)
ONE_LAUNCH = (0, 32, 64, 128, 256, 512)
# The recurrent tiles' best values depend on the batch (row tiles per compute unit) and on the
# hidden size (the length of each tile's reductions, what stays in cache), and a tuner's
# winner is often a noise-sized gain at its own shape: measured at shapes away from the
# tuner's, the nearest entry ran up to 9% slower than the defaults (README, Tuning). An entry
# is trusted within a factor of 2 of its shape (batch ratio times hidden ratio), where the
# number of row tiles per compute unit and the reduction length change by at most 2x.
RECURRENT_REACH = 2.0


def _register_rows(props, gates, batch=None):
    """Tallest tile within :data:`REGISTER_TILE`; at batches too small to give every compute
    unit four tiles, the next smaller height (more work-items spread better)."""
    fits = [r for r in ROWS if r * gates <= REGISTER_TILE]
    if props.kind == "gpu":
        return 1 if batch is not None else 2  # one row per work-item, many work-items
    best = fits[-1]
    if batch is not None and -(-batch // best) < 4 * props.compute_units and len(fits) > 1:
        return fits[-2]
    return best


def _rnn_step_rows(props, shape):
    return _register_rows(props, GATES[shape["kind"]], shape.get("batch", 1))


def _rnn_project_rows(props, shape):
    return _register_rows(props, GATES[shape["kind"]])


def _row_group(props, shape):
    return 1 if props.kind != "gpu" else min(64, props.max_group)


def _one_launch(props, shape):
    # All steps in one launch pays off while the fixed cost of a launch per step dominates:
    # up to a few dozen rows per compute unit. GPUs: a launch per step (the one-launch kernel
    # runs a work-group per row tile, too few work-items for a GPU).
    return 0 if props.kind == "gpu" else _pick(ONE_LAUNCH[1:], 64 * props.compute_units)


def _projection(props, shape):
    # CPUs: fused into each step (one longer reduction per launch); GPUs: one large product
    # of many steps first, GPU practice.
    return "batched" if props.kind == "gpu" else "fused"


ROW_STRIPS = (1, 2, 4, 8)
K_BLOCKS = (32, 64, 128, 256)
# Bytes of a reduction block of weights (k_block rows of a work-item's G vectors) that a
# strip of row tiles re-reads from the L1 data cache: a third to a half of the 32-48 KiB
# of current x86 cores, the rest for the rows of the strip and the accumulators.
STRIP_BLOCK_BYTES = 16 * 2**10


def _row_strip(props, shape, one_launch: bool):
    """Row tiles per work-item (kernels/rnn.cl, CLNET_RT). A CPU work-item with one tile
    streams its panel of the weights from L2 for every RM rows; a strip re-reads each block
    of it from L1 (see rnn.cl). The one-launch sequence kernel runs a work-group per strip:
    there, the tallest strip that still gives every compute unit one; the step kernel, up to
    four tiles while every compute unit still gets two groups. Measured on a 2-core Xeon
    (model 167): one LSTM step at B=256, H=256 on PoCL, 82 GFLOP/s with one tile, 129 with
    two, 123 with four, 97 with eight in a quiet hour of 3 December 2026 06:30 UTC, and
    54-72 / 62 / 90-91 / 62-81 at 11:27 the same day; per-step sequences at B=1,000-1,500
    (H=300-512) ran 4 tiles >= 2 tiles on PoCL and on Intel's runtime in 11 of 12 pairs
    (e.g. B=1,024, H=512, Intel's runtime: 48 / 74 / 89 / 95 GFLOP/s for 1 / 2 / 4 / 8).
    GPUs: one tile (the private arrays of a strip would live in slow memory there)."""
    if props.kind == "gpu":
        return 1
    rows = _register_rows(props, GATES[shape["kind"]], shape.get("batch", 1))
    batch = shape.get("batch", 1)
    fits = [s for s in ROW_STRIPS if -(-batch // (rows * s)) >= props.compute_units * (1 if one_launch else 2)]
    return min(fits[-1] if fits else 1, ROW_STRIPS[-1] if one_launch else 4)


def _rnn_step_strip(props, shape):
    return _row_strip(props, shape, shape.get("batch", 1) <= _one_launch(props, shape))


def _rnn_project_strip(props, shape):
    return 1 if props.kind == "gpu" else 4  # many rows (T * B) per launch; not measured


def _k_block(props, shape):
    per_k = GATES[shape["kind"]] * 16 * 4  # one row of a work-item's weight block, float32
    return _pick(K_BLOCKS, STRIP_BLOCK_BYTES // per_k)


def _rnn_ok(c, props, shape):
    g = GATES[shape["kind"]]
    return (c["step_rows"] * g <= 48 and c["project_rows"] * g <= 48 and c["group"] <= props.max_group)


RNN = TunableFamily(
    "rnn",
    (Tunable("step_rows", ROWS, _rnn_step_rows, "batch rows per work-item of the step kernel"),
     Tunable("project_rows", ROWS, _rnn_project_rows, "rows per work-item of the batched input projection"),
     Tunable("group", ROW_GROUPS, _row_group, "work-items per group along the batch (step and projection)"),
     Tunable("one_launch_batch", ONE_LAUNCH, _one_launch, "largest batch whose sequence runs in one launch"),
     Tunable("projection", ("fused", "batched"), _projection, "a sequence's input projection: per step or per chunk"),
     Tunable("step_strip", ROW_STRIPS, _rnn_step_strip,
             "row tiles per work-item of the step and one-launch kernels (reduction in blocks)"),
     Tunable("project_strip", ROW_STRIPS, _rnn_project_strip, "row tiles per work-item of the batched input projection"),
     Tunable("k_block", K_BLOCKS, _k_block, "reduction block of a strip of row tiles")),
    exact=("kind",), nearest=("batch", "hidden"), constraint=_rnn_ok, reach=RECURRENT_REACH,
    balanced=("step_rows",))

# -- BPTT: kernels/bptt.cl ----------------------------------------------------------------------
GEMM_ROWS = (2, 4, 8, 12, 16)
GEMM_VECTORS = (1, 2, 4)


def _bptt_rows(props, shape):
    """Of the two register-tile heights, the one whose row tiles spread most evenly over the
    compute units (a one-launch pass runs one work-group per tile from start to end, so an
    uneven split leaves a unit idle); the taller on a tie."""
    g = GATES[shape["kind"]]
    if props.kind == "gpu":
        return 1
    fits = [r for r in ROWS if r * g <= REGISTER_TILE]
    batch, units = shape.get("batch", 1), props.compute_units

    return max(reversed(fits[-2:]), key=lambda rows: tile_balance(batch, rows, units))


def tile_balance(batch: int, rows: int, units: int) -> float:
    """Fraction of the compute units' time spent on real rows when ``batch`` rows are cut
    into tiles of ``rows``, one tile per unit at a time: 1.0 when the tiles fill every round
    and every tile is full. A short last tile counts for its rows only: 8 rows in tiles of
    6 keep 2 units busy for a 6-row round but do 8 rows of work (0.67), and had been counted
    as balanced (2 tiles on 2 units), so BPTT at a batch of 8 (a PPO minibatch of 8
    environments) ran one unit on 6 rows while the other idled after 2."""
    batch = max(1, int(batch))
    tiles = -(-batch // rows)
    return batch / (-(-tiles // units) * units * rows)


def _gemm_rows(props, shape):
    return 4 if props.kind == "gpu" else 12


def _gemm_vectors(props, shape):
    return 1 if props.kind == "gpu" else 2


def _bptt_ok(c, props, shape):
    return (c["rows"] * GATES[shape["kind"]] <= 48 and c["weights_rows"] * c["weights_vectors"] <= 32
            and c["inputs_rows"] * c["inputs_vectors"] <= 32 and c["group"] <= props.max_group)


BPTT = TunableFamily(
    "bptt",
    (Tunable("rows", ROWS, _bptt_rows, "batch rows per work-item of the forward and backward passes"),
     Tunable("weights_rows", GEMM_ROWS, _gemm_rows, "rows of the register tile of the weight-gradient product"),
     Tunable("weights_vectors", GEMM_VECTORS, _gemm_vectors, "vectors per row of that tile"),
     Tunable("inputs_rows", GEMM_ROWS, lambda p, s: 4 if p.kind == "gpu" else 8,
             "rows of the register tile of the input-gradient product"),
     Tunable("inputs_vectors", GEMM_VECTORS, _gemm_vectors, "vectors per row of that tile"),
     Tunable("group", ROW_GROUPS, _row_group, "work-items per group of the products and per-step passes"),
     Tunable("one_launch_batch", ONE_LAUNCH, _one_launch, "largest batch whose passes run in one launch")),
    exact=("kind",), nearest=("batch", "hidden"), constraint=_bptt_ok, reach=RECURRENT_REACH,
    balanced=("rows",))

# -- Pearson: kernels/pearson.cl ----------------------------------------------------------------
MB = 2**20


def _strip_mb(props, shape):
    # A strip of r is written once and read back at once by the top-k or threshold selection:
    # on a CPU it should stay in the device's share of the cache (half of it, the rest holding
    # the rows), at least 16 MiB so that a launch has work; tuned on both CPU runtimes of a
    # 2-core Zen 5 (32 MiB L3) and of a 2-core Xeon VM to 16 MiB at 4,000 rows (1.3-2x against
    # 96 MiB). GPUs stream it:
    # a quarter of the largest allocation. Never above clnet.common.pearson.STRIP_BUDGET.
    if props.kind != "gpu":
        return _pick(STRIPS, max(16, cache_share(props) // MB // 2))
    return _pick(STRIPS, max(16, props.max_alloc // MB // 4))


STRIPS = (16, 32, 64, 96)


def _pearson_order(props, shape):
    # A CPU takes work-groups one after another, dimension 0 first: with the row blocks
    # there, a column panel stays in cache while the strip's rows pass over it, and the
    # columns are read from memory once per strip instead of once per row block. A GPU runs
    # them side by side: neighbouring work-items on neighbouring columns.
    return "columns" if props.kind == "gpu" else "rows"


def _complete_cols(props, shape):
    # One column vector per work-item by default. Two halve the loads per multiply-add
    # (2 vector loads and 8 row values feed 16 of them instead of 1 and 8 feeding 8); on both
    # CPU runtimes of a 2-core Zen 5 that made no difference beyond the noise at 1,000-3,000
    # rows, where the kernel already runs at about 140 GFLOP/s against numpy's 180 for a
    # float32 matmul. Left to the tuner, per device.
    return 1


def _pearson_ok(c, props, shape):
    return c["strip_mb"] * MB <= props.max_alloc and c["list_group"] <= props.max_group


PEARSON = TunableFamily(
    "pearson",
    (Tunable("row_block", (2, 4, 8), lambda p, s: 4, "rows per work-item of the masked pair kernel"),
     Tunable("complete_rows", (4, 8, 16), lambda p, s: 8, "rows per work-item of the complete-data kernel"),
     Tunable("complete_cols", (1, 2), _complete_cols, "column vectors per work-item of the complete-data kernel"),
     Tunable("sparse_rows", (2, 4, 8), lambda p, s: 8, "rows per work-item of the few-missing kernel"),
     Tunable("strip_mb", STRIPS, _strip_mb, "MiB of r per strip"),
     # 0.5: at 30% missing the tuner chose the corrected sums on both CPU runtimes (1.2-1.3x
     # faster than the masked products at 1,000 and 4,000 rows); beyond half, unmeasured
     Tunable("sparse_missing_max", (0.0, 0.05, 0.1, 0.25, 0.5, 1.0), lambda p, s: 0.5,
             "largest fraction missing computed as totals minus corrections"),
     Tunable("list_group", (1, 4, 8, 16, 32), lambda p, s: 8 if p.kind != "gpu" else 32,
             "work-items per group of the top-k selection"),
     Tunable("order", ("columns", "rows"), _pearson_order,
             "which of column groups and row blocks the pair kernels take first")),
    exact=(), nearest=("rows",), constraint=_pearson_ok,
    coupled=(("complete_rows", "complete_cols"),))  # one register tile: searched together

# Host arrays up to the limit reach the device as a buffer made with its copy, larger ones by a
# copy command into a kept buffer. The costs are the runtime's, not anything a device reports
# (README, Tuning). CPU default: PoCL's best. A GPU allocates device memory, so its default is low.
TRANSFERS = TunableFamily(
    "transfers",
    (Tunable("small_upload_kib", (0, 4, 16, 64, 256), lambda p, s: 256 if p.kind == "cpu" else 4,
             "KiB up to which a host array goes to the device as a new buffer made with its copy"),),
    exact=(), nearest=(), constraint=lambda c, p, s: True)

FAMILIES: Dict[str, TunableFamily] = {f.name: f for f in (FNN, RNN, BPTT, PEARSON, TRANSFERS)}


# -- the cache file ---------------------------------------------------------------------------
def cache_dir() -> Path:
    """``$CLNET_TUNING_DIR``, else ``$XDG_CACHE_HOME/clnet/tuning``, else ``~/.cache/clnet/tuning``."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clnet" / "tuning"


def device_identity(device) -> Dict[str, str]:
    from .. import __version__
    return {"platform": device.platform.name.strip(), "device": device.name.strip(),
            "driver": str(device.driver_version).strip(), "clnet": __version__, "format": FORMAT}


def cache_path(identity: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() else "-" for ch in identity["device"])[:40].strip("-")
    return cache_dir() / f"{safe}-{digest}.json"


def _distance(a: Mapping[str, Any], b: Mapping[str, Any], fields) -> float:
    return sum(abs(math.log(max(float(a[f]), 1.0)) - math.log(max(float(b[f]), 1.0))) for f in fields)


def within_reach(family: TunableFamily, tuned: Mapping[str, Any], shape: Mapping[str, Any]) -> bool:
    """True when an entry tuned at ``tuned`` may configure a call at ``shape`` (see
    :attr:`TunableFamily.reach`)."""
    if family.reach is None:
        return True
    return _distance(tuned, shape, family.nearest) <= math.log(family.reach) + 1e-9


class DeviceTuning:
    """The tuned entries of one device (loaded once, lazily) and per-call lookups of a
    family's parameters for a shape: nearest tuned entry, else the declared defaults; then
    any override set by :meth:`overriding` (the tests and the tuner)."""

    def __init__(self, device, props: Optional[DeviceProperties] = None):
        self.identity = device_identity(device)
        self.props = props or DeviceProperties.of(device)
        self.path = cache_path(self.identity)
        self._entries: Optional[Dict[str, List[dict]]] = None
        self._memo: Dict[tuple, Dict[str, Any]] = {}
        self.overrides: Dict[str, Dict[str, Any]] = {}
        self.ignore_cache = False  # see untuned()
        self._lock = threading.Lock()

    # loading ---------------------------------------------------------------------------------
    def entries(self) -> Dict[str, List[dict]]:
        if self._entries is None:
            self._entries = self._load()
        return self._entries

    def _load(self) -> Dict[str, List[dict]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("identity") != self.identity:
                raise ValueError("it was written for another device, driver or clnet version")
            entries = data["entries"]
            for name, rows in entries.items():
                family = FAMILIES[name]
                for row in rows:
                    family.check(row["params"])
                    missing = set(family.exact + family.nearest) - set(row["shape"])
                    if missing:
                        raise ValueError(f"a {name} entry lacks {sorted(missing)}")
                    for field in family.nearest:  # the lookup takes logarithms of these
                        value = row["shape"][field]
                        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                            raise ValueError(f"a {name} entry's {field} is {value!r}, not a finite number")
            return entries
        except Exception as exc:  # corrupt, foreign or from an older clnet: never fatal
            warnings.warn(f"clnet: ignoring the tuning file {self.path} ({type(exc).__name__}: {exc}); the "
                          f"device runs on its default parameters. Re-run `python -m clnet tune` to rewrite it.",
                          RuntimeWarning, stacklevel=3)
            return {}

    @property
    def tuned(self) -> bool:
        return bool(self.entries())

    # lookups -----------------------------------------------------------------------------------
    @staticmethod
    def families() -> Dict[str, "TunableFamily"]:
        """The tunable families, by name (for code outside the OpenCL backend, like the
        conformance suite, which must not import it)."""
        return FAMILIES

    def defaults_for(self, family_name: str, **shape) -> Dict[str, Any]:
        """The declared defaults of ``family_name`` on this device at ``shape``."""
        return FAMILIES[family_name].defaults(self.props, shape)

    def lookup(self, family_name: str, **shape) -> Dict[str, Any]:
        key = (family_name,) + tuple(sorted(shape.items()))
        hit = None if self.ignore_cache else self._memo.get(key)
        if hit is None:
            family = FAMILIES[family_name]
            missing = [f for f in family.nearest if f not in shape]
            if missing:  # checked tuned or not, so that an untuned test run catches the caller too
                raise ValueError(f"a {family_name} lookup needs the shape fields {sorted(missing)}; it got "
                                 f"{sorted(shape)}")
            hit = family.defaults(self.props, shape)
            rows = [] if self.ignore_cache else [r for r in self.entries().get(family_name, [])
                                                 if all(r["shape"].get(f) == shape.get(f) for f in family.exact)]
            if rows:
                best = min(rows, key=lambda r: _distance(r["shape"], shape, family.nearest))
                candidate = dict(hit, **best["params"])
                for name in family.balanced:
                    units, batch = self.props.compute_units, shape.get("batch", 1)
                    if tile_balance(batch, candidate[name], units) < tile_balance(batch, hit[name], units):
                        candidate[name] = hit[name]  # a height that left no unit idle at the tuned batch may here
                if within_reach(family, best["shape"], shape) and family.allowed(candidate, self.props, shape):
                    hit = candidate
            if not self.ignore_cache:
                self._memo[key] = hit
        override = self.overrides.get(family_name)
        return dict(hit, **override) if override else hit

    def force(self, family_name: str, config: Mapping[str, Any], setitem=None) -> None:
        """Run ``family_name`` with ``config`` from now on (validated). ``setitem`` (for example
        pytest's ``monkeypatch.setitem``) is used instead of plain assignment when given."""
        FAMILIES[family_name].check(config)
        merged = dict(self.overrides.get(family_name) or {}, **config)
        (setitem or dict.__setitem__)(self.overrides, family_name, merged)

    def overriding(self, family_name: str, config: Mapping[str, Any]):
        """Context manager: run with ``config`` (validated) in place of the looked-up values."""
        family = FAMILIES[family_name]
        family.check(config)
        tuning = self

        class _Override:
            def __enter__(self):
                with tuning._lock:
                    self.before = tuning.overrides.get(family_name)
                    tuning.overrides[family_name] = dict(config)
                return tuning

            def __exit__(self, *exc):
                with tuning._lock:
                    if self.before is None:
                        tuning.overrides.pop(family_name, None)
                    else:
                        tuning.overrides[family_name] = self.before
                return False
        return _Override()

    def untuned(self):
        """Context manager: run on the declared defaults, as if the device had no cache file
        (the benchmarks' "untuned" figures)."""
        import contextlib

        @contextlib.contextmanager
        def scope():
            before = self.ignore_cache
            self.ignore_cache = True
            try:
                yield self
            finally:
                self.ignore_cache = before
        return scope()

    # saving ------------------------------------------------------------------------------------
    def save(self, entries: Mapping[str, List[dict]]) -> Path:
        """Write ``entries`` atomically (a temporary file in the same folder, then a rename),
        replacing the families they name and keeping the others."""
        merged = dict(self.entries())
        merged.update({k: list(v) for k, v in entries.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps({"identity": self.identity, "entries": merged}, indent=1,
                                               sort_keys=True), durable=True)
        self._entries, self._memo = merged, {}
        return self.path

    def forget(self) -> None:
        """Drop what was loaded (the next lookup re-reads the file)."""
        self._entries, self._memo = None, {}


def overriding(backend, family: str, **values):
    """Context manager: ``backend`` runs ``family`` with ``values`` in place of its tuned or
    default parameters (a backend without tunable kernels, like NumPy's, is left alone)."""
    import contextlib
    tuning = getattr(backend, "tuning", None)
    return tuning.overriding(family, values) if isinstance(tuning, DeviceTuning) else contextlib.nullcontext()


def describe(family: TunableFamily) -> Iterator[str]:
    for p in family.params:
        yield f"{family.name}.{p.name}: {p.doc}; one of {list(p.values)}"
