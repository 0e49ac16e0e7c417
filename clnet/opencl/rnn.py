"""Recurrent cells on OpenCL (kernels/rnn.cl): the RNN family of clnet/contract.py.

Weights are interleaved by gate (see rnn.cl's layout) and hidden units padded to Hp, a
multiple of the vector width; padded units have zero weights, so their h and c stay
zero. A state is two h buffers (a step reads one and writes the other) and, for an
LSTM, one c buffer, all on the device. Stacked layers pass their outputs from layer to
layer on the device: one upload of the inputs, one read-back of the last layer's outputs.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from typing import List, Optional, Tuple

import numpy as np

from ..common.cache import DeviceCache
from ..contract import RNNOps
from .runtime import cl

# How the kernels are launched (tile heights, work-group size, the batch below which a whole
# sequence runs in one launch, where a sequence's input projection happens) is the "rnn"
# family of clnet/opencl/tuning.py: defaults from the device's properties, tuned values from
# its cache file. The input projection x @ W_ih^T is either "fused" into each step's launch
# (the step kernel's reduction runs over I + H) or "batched": one large product per chunk of
# steps before the recurrence (what oneDNN does), its gates written and re-read.
# Batched projection: the gates of a long sequence in chunks of at most this many bytes.
GATE_BUDGET = 64 * 2**20
TRANSPOSE_TILE = 16  # rnn.cl's CLNET_TRANSPOSE_TILE
# A cell's uploaded gate rows are the transposes of its device weights that BPTT's backward
# reads: kept up to this size (both together), so that training after each weight update
# transposes nothing (two transposes cost 0.5 ms per 256-unit LSTM on Intel's runtime);
# larger cells free them, and BPTT transposes on the device when first asked.
KEEP_GATE_ROWS_BYTES = 32 * 2**20
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
KIND_DEFINE = {"lstm": "CLNET_LSTM", "gru": "CLNET_GRU", "rnn_tanh": "CLNET_RNN_TANH",
               "rnn_relu": "CLNET_RNN_RELU"}


def vector_width(dtype) -> int:
    """Hidden units per vector in rnn.cl and bptt.cl (passed to them as CLNET_VW)."""
    return 8 if np.dtype(dtype) == np.float64 else 16


def pad_to(n: int, vw: int) -> int:
    return -(-n // vw) * vw


# From this many vector blocks of hidden units on, their count is made odd (one more block
# when it is even). A weight row is G * Hp values long and a work-item reads one block of
# it per row of the product: with Hp a multiple of a large power of two (512 units: 8 KiB
# rows in float32) every row's block falls in the same few cache sets, and the panel a
# work-item streams no longer fits the L2 it would otherwise fit in. Measured on a 2-core
# Xeon, one LSTM step at B=1024, I=128: H=512 ran at 107 (PoCL) and 73 (Intel) GFLOP/s,
# H=528 at 167 and 133; below 32 blocks the panels fit anyway (H=256 padded to 272 ran
# 9-20% slower on PoCL, 15% faster on Intel's runtime), so only the large sizes pay the
# block (at most 3% more arithmetic).
ODD_BLOCKS_FROM = 32


def padded_hidden(hidden: int, vw: int) -> int:
    """Hidden units as laid out on the device: whole vectors of ``vw``, an odd number of
    them from :data:`ODD_BLOCKS_FROM` vectors on (see there). The extra units are padding
    (zero weights, zero state), like those that fill the last vector."""
    blocks = -(-hidden // vw)
    if blocks >= ODD_BLOCKS_FROM and blocks % 2 == 0:
        blocks += 1
    return blocks * vw


def row_launch(rows: int, batch: int, blocks: int, group: int):
    """Global and local sizes of a kernel whose work-items own ``rows`` batch rows by one
    block of units: whole groups of ``group`` work-items along the batch (the kernels
    return for rows past the batch)."""
    items = -(-batch // rows)
    return (-(-items // group) * group, blocks), (group, 1)


def interleave(w: np.ndarray, gates: int, hidden: int, hp: int, vw: int, dtype=np.float64) -> np.ndarray:
    """(G*H, K) gate-stacked weights -> (K, G*Hp) with columns (block, gate, lane), in
    ``dtype`` (converted once, on the first copy: weights change at every optimiser step)."""
    K = w.shape[1]
    padded = np.zeros((gates, hp, K), dtype)
    padded[:, :hidden] = w.reshape(gates, hidden, K)
    return np.ascontiguousarray(
        padded.reshape(gates, hp // vw, vw, K).transpose(3, 1, 0, 2).reshape(K, gates * hp))


def gate_rows(w: np.ndarray, gates: int, hidden: int, hp: int, vw: int, width: int, dtype,
              out: np.ndarray = None) -> np.ndarray:
    """(G*H, K) gate-stacked weights -> (G*Hp, width) in ``dtype``, rows in the interleaved
    column order of :func:`interleave` (block, gate, lane), padded rows and columns zero: the
    transpose of what :func:`interleave` gives (for ``width`` = K), made of whole-row copies
    only. The device transposes it (rnn_prepare): a host transpose of 1 MiB of weights costs
    about 2 ms, a row copy a tenth of that. With ``out`` (a C-contiguous (G*Hp, width) array
    of ``dtype``, e.g. a mapped device buffer) the rows are written there and ``out`` returned."""
    K = w.shape[1]
    blocks = hp // vw
    if out is None:
        if hidden == hp and K == width:
            # nothing to pad: the reordering and the conversion in one pass over fresh memory (an
            # optimiser replaces a 256-unit LSTM's weights at every minibatch; the zero-filled
            # copy and its reordering were three passes, 1.6 ms of a PPO minibatch's 12 on PoCL)
            return np.ascontiguousarray(w.reshape(gates, blocks, vw, K).transpose(1, 0, 2, 3),
                                        dtype=dtype).reshape(gates * hp, width)
        out = np.empty((gates * hp, width), dtype)
    # (block, gate, lane, column) seen as (gate, block, lane, column): unit u of gate g is
    # block u // vw, lane u % vw
    target = out.reshape(blocks, gates, vw, width).transpose(1, 0, 2, 3)
    if hidden != hp or K != width:
        out.fill(0)
    src = w.reshape(gates, hidden, K)
    whole = hidden // vw
    if whole:
        np.copyto(target[:, :whole, :, :K], src[:, :whole * vw].reshape(gates, whole, vw, K), casting="unsafe")
    if hidden > whole * vw:
        np.copyto(target[:, whole, :hidden - whole * vw, :K], src[:, whole * vw:], casting="unsafe")
    return out


@lru_cache(maxsize=256)
def interleaved_rows(gates: int, hidden: int, hp: int, vw: int) -> np.ndarray:
    """Where each gate-stacked row (gate g, unit j: row g * hidden + j) sits in the interleaved
    order of :func:`interleave` (block j // vw, gate g, lane j % vw), as one index array (read
    only, cached): the reorderings below are one gather each. Built from reshapes and moveaxis,
    a group's gradients cost about 20 us of NumPy calls per array, most of it per-call overhead."""
    g, j = np.divmod(np.arange(gates * hidden), hidden)
    rows = (j // vw) * (gates * vw) + g * vw + j % vw
    rows.setflags(write=False)
    return rows


def interleave_vector(v: np.ndarray, gates: int, hidden: int, hp: int, vw: int, dtype) -> np.ndarray:
    """A gate-stacked vector (G*H,) (a bias) in :func:`interleave`'s column order (G*Hp,),
    padded units zero, in ``dtype``: the one-column case of :func:`interleave`."""
    out = np.zeros(gates * hp, dtype)
    out[interleaved_rows(gates, hidden, hp, vw)] = v
    return out


def uninterleave(a: np.ndarray, gates: int, hidden: int, vw: int, axis: int) -> np.ndarray:
    """Inverse of :func:`interleave` along ``axis`` (G * Hp interleaved -> G * H stacked), in
    one gather."""
    return np.take(a, interleaved_rows(gates, hidden, a.shape[axis] // gates, vw), axis=axis)


def uninterleave_rows(a: np.ndarray, gates: int, hidden: int, vw: int, start: int, stop: int) -> np.ndarray:
    """Columns ``start:stop`` of ``a`` (..., G * Hp, C), whose rows are interleaved as
    :func:`interleave`'s columns, with the rows gate-stacked (..., G * H, stop - start), C-contiguous,
    in one gather (the weight gradients of BPTT, read back into fresh memory at every call)."""
    rows = interleaved_rows(gates, hidden, a.shape[-2] // gates, vw)
    return np.take(a[..., start:stop], rows, axis=-2)  # take's result is C-contiguous


def kernel_defines(kind: str, dtype, rows: int, *extra: str) -> tuple:
    return (f"CLNET_VW={vector_width(dtype)}", f"CLNET_GATES={GATES[kind]}", f"CLNET_RM={rows}",
            KIND_DEFINE[kind]) + extra


@dataclass(eq=False)
class CellWeights:
    """A cell's weights on one device: W_ih (Ip, G*Hp) and W_hh (Hp, G*Hp) interleaved,
    the input biases ``b_x`` and the recurrent ones ``b_h`` (G*Hp, interleaved), and a
    row of zeros. W_ih has ``ip`` = padded_hidden(inputs) rows, those past ``inputs`` zero,
    so that it also serves inputs stored in padded rows (a lower layer's h, BPTT's padded
    x); a step on unpadded inputs reads its first ``inputs`` rows. ``device_copies`` holds
    derived copies (BPTT's transposes), made on the device."""

    kind: str
    hidden: int
    hp: int
    gates: int
    inputs: int
    ip: int
    dtype: np.dtype
    w_ih: "cl.Buffer"
    w_hh: "cl.Buffer"
    b_x: "cl.Buffer"
    b_h: "cl.Buffer"
    zeros: "cl.Buffer"
    device_copies: DeviceCache = field(default_factory=DeviceCache, repr=False)
    # (W_ih rows (G*Hp, Ip), W_hh rows (G*Hp, Hp)): the uploaded gate rows, which are the
    # transposes BPTT's backward needs, kept for small cells (see KEEP_GATE_ROWS_BYTES)
    rows: Optional[Tuple["cl.Buffer", "cl.Buffer"]] = field(default=None, repr=False)
    # the cells of a group (clnet.CellGroup, rnn_prepare_group): every buffer above holds
    # ``members`` cells' arrays one after the other (zeros excepted: one row serves all)
    members: int = 1


@dataclass(eq=False)
class StateBuffers:
    """h and c of a batch, (B, Hp), double-buffered: ``h_bufs[cur]`` and ``c_bufs[cur]``
    are the state. Every operation that changes it writes the other pair and then
    publishes it with ONE assignment of ``cur``, so that an interrupt (Ctrl-C) leaves
    exactly the state before the call or exactly the state after it, never h of one and
    c of the other."""

    kind: str
    batch: int
    hidden: int
    hp: int
    dtype: np.dtype
    h_bufs: List["cl.Buffer"]
    c_bufs: Optional[List["cl.Buffer"]]
    cur: int = 0

    @property
    def h(self) -> "cl.Buffer":
        return self.h_bufs[self.cur]

    @property
    def c(self) -> Optional["cl.Buffer"]:
        return None if self.c_bufs is None else self.c_bufs[self.cur]

    def next_c(self, fallback: "cl.Buffer") -> "cl.Buffer":
        """The c buffer a change writes (``fallback``, a dummy, for cells without c)."""
        return fallback if self.c_bufs is None else self.c_bufs[1 - self.cur]


def publish(storages: List[StateBuffers]) -> None:
    """Make the buffers the call wrote the state of every one of ``storages``.

    The flips run in one C-level loop (deque over map): Python runs signal handlers only
    between bytecodes, so a KeyboardInterrupt cannot land between two layers' flips.
    """
    deque(map(setattr, storages, repeat("cur"), [1 - s.cur for s in storages]), maxlen=0)


@dataclass
class LayerInput:
    """Where a layer's inputs are: a buffer of rows of ``width`` values, and the input
    weights with that many rows (padded with zero rows when the rows are padded)."""

    buf: "cl.Buffer"
    width: int
    w_ih: "cl.Buffer"


class _MemberRows:
    """The gate rows of a group's members one after the other, (members * R, C) in ``dtype``,
    made on demand by ``fill(out=None)``: into ``out`` (a mapped device buffer) or into a new
    array. ``make(params, out)`` lays out one member's rows in ``out``."""

    def __init__(self, make, members, rows: int, cols: int, dtype):
        self.make, self.members = make, members
        self.shape = (len(members) * rows, cols)
        self.nbytes = self.shape[0] * cols * np.dtype(dtype).itemsize
        self.dtype = np.dtype(dtype)

    def fill(self, out: np.ndarray = None) -> np.ndarray:
        if out is None:
            out = np.empty(self.shape, self.dtype)
        per = self.shape[0] // len(self.members)
        for m, params in enumerate(self.members):
            self.make(params, out[m * per:(m + 1) * per])
        return out


class RNNKernels(RNNOps):
    def rnn_prepare(self, kind, params, hidden, dtype):
        return self._prepare_members(kind, [params], hidden, dtype)

    def rnn_prepare_group(self, kind, params, hidden, dtype):
        return self._prepare_members(kind, list(params), hidden, dtype)

    def _prepare_members(self, kind, members, hidden, dtype) -> CellWeights:
        """The weights of one cell, or of a group's cells one after the other in each buffer."""
        dt = np.dtype(dtype)
        G, H, vw = GATES[kind], hidden, vector_width(dt)
        hp = padded_hidden(H, vw)
        inputs = members[0]["weight_ih"].shape[1]
        ip = padded_hidden(inputs, vw)
        zeros = np.zeros(G * H)
        n = len(members)

        def stacked(make):
            return make(members[0]) if n == 1 else np.concatenate([make(p) for p in members])

        # every member's gate rows, made where _laid_out puts them (see there)
        rows_ih = _MemberRows(lambda p, out: gate_rows(p["weight_ih"], G, H, hp, vw, ip, dt, out), members,
                              G * hp, ip, dt)
        rows_hh = _MemberRows(lambda p, out: gate_rows(p["weight_hh"], G, H, hp, vw, hp, dt, out), members,
                              G * hp, hp, dt)
        # b_ih and b_hh stay apart, each added after its product as the reference does:
        # b_ih + b_hh folded in advance overflows float32 where the reference does not
        # (weights near 1e38), and the GRU's b_hn sits inside r * (W_hn h + b_hn) anyway.
        b_x = stacked(lambda p: interleave_vector(p.get("bias_ih", zeros), G, H, hp, vw, dt))
        b_h = stacked(lambda p: interleave_vector(p.get("bias_hh", zeros), G, H, hp, vw, dt))
        with self.lock:
            up = self.to_device
            (rows_ih_d, w_ih), (rows_hh_d, w_hh) = (self._laid_out(rows_ih, dt, "weight_ih", n),
                                                    self._laid_out(rows_hh, dt, "weight_hh", n))
            staged = [rows_ih_d, rows_hh_d]
            weights = CellWeights(
                kind=kind, hidden=H, hp=hp, gates=G, inputs=inputs, ip=ip, dtype=dt, w_ih=w_ih, w_hh=w_hh,
                b_x=up(b_x, "biases"), b_h=up(b_h, "biases"), zeros=up(np.zeros(hp, dtype=dt), "zeros"),
                members=n)
            owned = [weights.w_ih, weights.w_hh]
            if rows_ih.nbytes + rows_hh.nbytes <= KEEP_GATE_ROWS_BYTES:
                weights.rows = (staged[0], staged[1])
                owned += staged
            else:  # the in-order queue runs the transposes before anything a next owner enqueues
                self.recycle(staged)
            # an optimiser replaces the weights every update: the next ones reuse these buffers
            self.recycle_when_dropped(weights, owned)
            return weights

    def _laid_out(self, rows: "_MemberRows", dt, what: str, members: int = 1) -> Tuple["cl.Buffer", "cl.Buffer"]:
        """Device buffers of the gate rows ``rows`` (R, C) and of their transpose (C, R), both
        the caller's to own (they may go to the spare pool); for a group, ``rows`` are its
        ``members`` cells' (R / members, C) blocks one after the other, and each block is
        transposed in place. Up to small_upload_bytes() both are
        made on the host and created with their copy: no command at all, where PoCL spends
        30-80 us per command; larger ones are written straight into a spare buffer mapped
        into host memory and transposed on the device. The caller holds the lock."""
        self.check_alloc(rows.nbytes, what)
        per, cols = rows.shape[0] // members, rows.shape[1]
        if rows.nbytes <= self.small_upload_bytes():
            host = rows.fill()
            return self.copy_of(host, what), self.copy_of(
                np.ascontiguousarray(host.reshape(members, per, cols).transpose(0, 2, 1)), what)
        staged = self.reused(rows.nbytes, what)
        # Mapped: the rows are written once, into memory the pool has touched before (a CPU
        # device maps the buffer itself). Made in fresh host arrays and copied up, 2 MB of an
        # optimiser's weights per step cost 2.2 ms on Intel's runtime, most of it first
        # touches of new pages, against 0.3 ms for the same copies into touched memory. The
        # blocking map runs after every command enqueued before it, the buffer's last users
        # included.
        mapped, _ = cl.enqueue_map_buffer(self.queue, staged, cl.map_flags.WRITE_INVALIDATE_REGION, 0,
                                          rows.shape, dt, is_blocking=True)
        try:
            rows.fill(mapped)
        finally:
            mapped.base.release(self.queue)
        return staged, self.transposed(staged, per, cols, dt, what, members)

    def transposed(self, src: "cl.Buffer", rows: int, cols: int, dtype, what: str,
                   members: int = 1) -> "cl.Buffer":
        """A buffer (new, or a spare one of the pool) holding the (rows, cols) matrix in ``src``
        transposed (``members`` such matrices one after the other: each one transposed),
        enqueued without waiting (the in-order queue runs it before any kernel
        that reads it); the caller holds the lock and owns the result. ``src`` may be dropped
        at once: OpenCL keeps it until the copy ran."""
        dt = np.dtype(dtype)
        dst = self.reused(members * rows * cols * dt.itemsize, what) if rows and cols else self.empty(0, what)
        if rows and cols:
            knl = self.kernel("rnn", "clnet_rnn_transpose", dt, (f"CLNET_VW={vector_width(dt)}",))
            tile = TRANSPOSE_TILE
            gx = -(-cols // tile)
            # a few tiles per work-group along the columns: one tile per group cost both CPU
            # runtimes about twice as much per transpose (a 256-unit LSTM's W_hh: 0.2 against
            # 0.1 ms); the group must divide the grid
            group = next(g for g in (8, 4, 2, 1) if gx % g == 0)
            grid, local = (gx, -(-rows // tile)), (group, 1)
            if members > 1:
                grid, local = grid + (members,), local + (1,)
            knl(self.queue, grid, local, rows=rows, cols=cols, src=src, dst=dst)
        return dst

    def _rnn_kernel(self, w: CellWeights, name: str, rows: int, strip: int, k_block: int):
        """The project, recur or run kernel of ``w``'s cell kind with an RM = ``rows`` tile,
        ``strip`` tiles per work-item (CLNET_RT) and reduction blocks of ``k_block``."""
        extra = (f"CLNET_RT={strip}", f"CLNET_KC={k_block}") if strip > 1 else ()
        return self.kernel("rnn", f"clnet_rnn_{name}", w.dtype, kernel_defines(w.kind, w.dtype, rows, *extra))

    # -- state ------------------------------------------------------------------------------
    def rnn_state_new(self, kind, batch, hidden, dtype):
        dt = np.dtype(dtype)
        hp = padded_hidden(hidden, vector_width(dt))
        zeros = np.zeros((batch, hp), dtype=dt)
        self.check_alloc(zeros.nbytes, "hidden state")
        with self.lock:
            bufs = [self.copy_of(zeros, "hidden state") for _ in range(2)]
            c = [self.copy_of(zeros, "cell state") for _ in range(2)] if kind == "lstm" else None
        return StateBuffers(kind=kind, batch=batch, hidden=hidden, hp=hp, dtype=dt, h_bufs=bufs, c_bufs=c)

    def _read_rows(self, s: StateBuffers, buf, rows: int) -> np.ndarray:
        host = np.empty((rows, s.hp), dtype=s.dtype)
        cl.enqueue_copy(self.queue, host, buf, is_blocking=True)
        return host if s.hp == s.hidden else np.ascontiguousarray(host[:, :s.hidden])

    def rnn_state_read(self, storage, which):
        with self.lock:
            return self._read_rows(storage, storage.h if which == "h" else storage.c, storage.batch)

    def rnn_state_write(self, storage, h, c):
        def padded(a):
            out = np.zeros((storage.batch, storage.hp), dtype=storage.dtype)
            out[:, :storage.hidden] = a
            return out

        with self.lock:
            # both copies enqueued without waiting, then one wait: the host arrays live until it
            h_host = padded(h)
            cl.enqueue_copy(self.queue, storage.h_bufs[1 - storage.cur], h_host, is_blocking=False)
            if c is not None:
                c_host = padded(c)
                cl.enqueue_copy(self.queue, storage.c_bufs[1 - storage.cur], c_host, is_blocking=False)
            self.queue.finish()
            publish([storage])

    def rnn_state_reset(self, storage, keep):
        width = storage.hp
        n = storage.batch * width
        with self.lock:
            knl = self.kernel("rnn", "clnet_rnn_zero_rows", storage.dtype,
                              (f"CLNET_VW={vector_width(storage.dtype)}",))
            d_keep = self.to_device(keep.astype(storage.dtype), "reset mask")
            pairs = [(storage.h, storage.h_bufs[1 - storage.cur])]
            if storage.c_bufs is not None:
                pairs.append((storage.c, storage.c_bufs[1 - storage.cur]))
            for now, new in pairs:  # reset a copy, then publish it
                cl.enqueue_copy(self.queue, new, now, byte_count=n * storage.dtype.itemsize)
                knl(self.queue, (n,), self.any_local((1,)), B=storage.batch, W=width, buf=new, keep=d_keep)
            self.queue.finish()
            publish([storage])

    # -- stepping ---------------------------------------------------------------------------
    def rnn_step(self, weights, storage, x, keep):
        """One launch: the step kernel projects x itself; only x (and the mask) go up and h
        comes down. Buffers are reused between steps and h is double-buffered."""
        w, s = weights, storage
        B, I = x.shape
        with self.lock:
            cfg = self.params("rnn", kind=w.kind, batch=B, hidden=w.hidden)
            rows = cfg["step_rows"] * cfg["step_strip"]  # batch rows per work-item
            recur = self._rnn_kernel(w, "recur", cfg["step_rows"], cfg["step_strip"], cfg["k_block"])
            # The uploads do not wait: the in-order queue runs them before the kernel, and x and
            # keep stay referenced here until the blocking read of h below, the one wait per step
            # (or until the queue is drained, if the launch fails).
            keep_alive = []  # the host arrays of large uploads, until the read of h below
            d_x = self.upload("rnn.x", x, "inputs", keep_alive)
            d_keep = w.zeros if keep is None else self.upload("rnn.keep", keep, "reset mask", keep_alive)
            try:
                recur(self.queue, *row_launch(rows, B, s.hp // vector_width(s.dtype), cfg["group"]), B=B,
                      H=w.hidden, Hp=s.hp, Wt=w.w_hh, gx=w.zeros, gx_off=0, h_prev=s.h, hp_off=0,
                      h_next=s.h_bufs[1 - s.cur], hn_off=0, c_prev=s.c if s.c is not None else w.zeros,
                      c_next=s.next_c(w.zeros), keep=d_keep, keep_off=0, has_keep=int(keep is not None),
                      bias_h=w.b_h, zero_row=w.zeros, x=d_x, x_off=0, I=I, Wx=w.w_ih, bias_x=w.b_x)
            except BaseException:
                self.queue.finish()
                raise
            h = self._read_rows(s, s.h_bufs[1 - s.cur], B)
            publish([s])
            return h

    def rnn_sequence(self, weights, storage, xs, keeps):
        """T steps without a host round trip, then one read-back of every h (see
        :meth:`_run_layer` for how the steps are launched)."""
        return self.rnn_sequence_stacked([weights], [storage], xs, keeps)

    def rnn_sequence_stacked(self, layers, storages, xs, keeps):
        T, B, I = xs.shape
        s_last = storages[-1]
        item = s_last.dtype.itemsize
        with self.lock:
            source = LayerInput(self.to_device(xs, "inputs"), I, layers[0].w_ih)
            d_keep = layers[0].zeros if keeps is None else self.to_device(keeps, "reset masks")
            for l, (w, s) in enumerate(zip(layers, storages)):
                # Every layer's outputs stay on the device, in a buffer freed after the call
                # (not a kept workspace: T x B x Hp can be large).
                d_out = self.empty(T * B * s.hp * item, "hidden states of a layer")
                self._run_layer(w, s, source, d_keep, keeps is not None, d_out, T, B)
                if l + 1 < len(layers):
                    source = LayerInput(d_out, s.hp, layers[l + 1].w_ih)  # its rows padded as s's h
            host = np.empty((T, B, s_last.hp), dtype=s_last.dtype)
            cl.enqueue_copy(self.queue, host, d_out, is_blocking=True)
            publish(storages)  # every layer's new state at once, after all the work
        return host if s_last.hp == s_last.hidden else np.ascontiguousarray(host[:, :, :s_last.hidden])

    def _run_layer(self, w: CellWeights, s: StateBuffers, source: LayerInput, d_keep, has_keep: bool,
                   d_out, T: int, B: int) -> None:
        """Enqueue one layer's T steps into ``d_out`` (T, B, Hp) and write its state after
        the last step into the buffers :func:`publish` then makes current. Batches up to the
        tuned ``one_launch_batch`` run all T steps in one launch; otherwise each step is one
        launch, enqueued back to back, its input projection fused into it or batched per chunk
        (the tuned ``projection``)."""
        cfg = self.params("rnn", kind=w.kind, batch=B, hidden=w.hidden)
        rows = cfg["step_rows"] * cfg["step_strip"]  # batch rows per work-group of the one-launch kernel
        blocks = s.hp // vector_width(s.dtype)
        fused = cfg["projection"] == "fused"
        run = (self._rnn_kernel(w, "run", cfg["step_rows"], cfg["step_strip"], cfg["k_block"])
               if fused and B <= cfg["one_launch_batch"] else None)
        if run is not None and blocks <= run.work_group_size(self.device):
            run(self.queue, (-(-B // rows), blocks), (1, blocks), B=B, H=w.hidden, Hp=s.hp, T=T, Wt=w.w_hh, h0=s.h,
                out=d_out, c0=s.c if s.c is not None else w.zeros, c=s.next_c(w.zeros), keep=d_keep, has_keep=int(has_keep),
                bias_h=w.b_h, zero_row=w.zeros, x=source.buf, I=source.width, Wx=source.w_ih, bias_x=w.b_x)
        else:
            self._launch_steps(w, s, source, d_keep, has_keep, d_out, T, B, cfg)
        item = s.dtype.itemsize
        cl.enqueue_copy(self.queue, s.h_bufs[1 - s.cur], d_out, byte_count=B * s.hp * item,
                        src_offset=(T - 1) * B * s.hp * item)

    def _launch_steps(self, w: CellWeights, s: StateBuffers, source: LayerInput, d_keep, has_keep: bool,
                      d_out, T: int, B: int, cfg) -> None:
        """One launch per step (and, batched, one projection per chunk of steps)."""
        group, fused = cfg["group"], cfg["projection"] == "fused"
        rows = cfg["step_rows"] * cfg["step_strip"]  # batch rows per work-item
        hp, I = s.hp, source.width
        nc = w.gates * hp
        blocks = hp // vector_width(s.dtype)
        recur = self._rnn_kernel(w, "recur", cfg["step_rows"], cfg["step_strip"], cfg["k_block"])
        chunk = T if fused else max(1, min(T, GATE_BUDGET // (B * nc * s.dtype.itemsize)))
        if not fused:
            project = self._rnn_kernel(w, "project", cfg["project_rows"], cfg["project_strip"], cfg["k_block"])
            project_rows = cfg["project_rows"] * cfg["project_strip"]
            d_gx = self.empty(chunk * B * nc * s.dtype.itemsize, "projected gates")
        h_prev, prev_off = s.h, 0
        common = dict(B=B, H=w.hidden, Hp=hp, Wt=w.w_hh, h_next=d_out, c_next=s.next_c(w.zeros), keep=d_keep,
                      has_keep=int(has_keep), bias_h=w.b_h, zero_row=w.zeros)
        c_prev = s.c if s.c is not None else w.zeros  # the first step reads the state, the others c_next
        for t0 in range(0, T, chunk):
            m = min(chunk, T - t0) * B
            if not fused:
                project(self.queue, *row_launch(project_rows, m, blocks, group), M=m, K=I, Hp=hp, A=source.buf,
                        a_off=t0 * B * I, Wt=source.w_ih, bias=w.b_x, out=d_gx)
            for t in range(t0, t0 + m // B):
                if fused:  # the step projects its own inputs
                    x_args = dict(gx=w.zeros, gx_off=0, x=source.buf, x_off=t * B * I, I=I, Wx=source.w_ih,
                                  bias_x=w.b_x)
                else:  # the projection added the input biases already
                    x_args = dict(gx=d_gx, gx_off=(t - t0) * B * nc, x=w.zeros, x_off=0, I=0, Wx=w.zeros,
                                  bias_x=w.zeros)
                recur(self.queue, *row_launch(rows, B, blocks, group), **common, **x_args, h_prev=h_prev,
                      hp_off=prev_off, hn_off=t * B * hp, keep_off=t * B, c_prev=c_prev)
                h_prev, prev_off, c_prev = d_out, t * B * hp, common["c_next"]
