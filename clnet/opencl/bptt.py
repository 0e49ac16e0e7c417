"""Backpropagation through time on OpenCL (kernels/bptt.cl): the BPTT family of clnet/contract.py.

Three passes, all on the device (see bptt.cl): the forward re-run saving activations
layer by layer, the backward step by step from the top layer down (a layer's input
gradient is the output gradient of the layer below), and per layer one product for the
weight gradients and one for the input gradient (the first layer's skipped when the caller
wants no input gradient: RecordedSequence.backward(inputs=False)). Everything is enqueued without waiting;
the host reads the gradients once, at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import List, Optional, Tuple

import numpy as np

from ..contract import BPTTOps
from . import rnn as R
from .runtime import cl

# Saved vectors per unit block of a step (bptt.cl's CLNET_SLOTS): LSTM i, f, g, o and c;
# GRU r, z, n and W_hn h + b_hn; an Elman RNN needs nothing but its h.
SLOTS = {"lstm": 5, "gru": 4, "rnn_tanh": 0, "rnn_relu": 0}
# Row tiles, the register tiles of the gradient products (rows x vectors of VW, see
# clnet_bptt_gemm), their work-group size and the one-launch batch limit are the "bptt"
# family of clnet/opencl/tuning.py.


# The backward step's work-items may compute up to this fraction more unit blocks than there are
# (the last group of BN blocks padded with copies, not stored) to take more than one block each.
BLOCK_WASTE = 0.15


def backward_blocks(rows: int, blocks: int) -> int:
    """Unit blocks per work-item of the backward step: as many as keep the rows x blocks
    accumulators within 24 of AVX-512's 32 vector registers and the blocks computed past
    the last (when they do not divide ``blocks``) within :data:`BLOCK_WASTE`. One block per
    work-item loads more than it multiplies (a weight vector and RM broadcasts per RM FMAs):
    the odd block counts of padded_hidden, and 7 or 13 blocks (H = 100, 200), had run on it."""
    return next(bn for bn in (4, 2, 1)
                if rows * bn <= 24 and -(-blocks // bn) * bn <= (1 + BLOCK_WASTE) * blocks)


def backward_groups(blocks: int, bn: int) -> int:
    """Work-items along the units of the backward step: ``blocks`` in groups of ``bn``."""
    return -(-blocks // bn)


@dataclass
class BackWeights:
    """A layer's weights as the backward needs them: W_ih with padded input rows (Ip, G*Hp, the
    forward's own buffer), its transpose, and W_hh's transpose, gate rows interleaved."""

    ip: int
    w_ih: "cl.Buffer"
    w_ih_t: "cl.Buffer"
    w_hh_t: "cl.Buffer"


@dataclass
class Sizes:
    """The shape of one backward_sequence call and the launch geometry chosen for it."""

    T: int
    B: int
    I: int
    H: int
    hp: int
    kind: str
    dtype: np.dtype
    burn_in: int
    rows: int
    blocks: int
    bn: int
    one_launch: bool = False
    config: dict = None  # the "bptt" parameters of clnet/opencl/tuning.py this call runs with
    members: int = 1     # the cells of a group (clnet.CellGroup), run side by side in each launch

    @property
    def nc(self) -> int:
        return R.GATES[self.kind] * self.hp

    @property
    def item(self) -> int:
        return self.dtype.itemsize

    @property
    def grid(self) -> Tuple[int, int]:
        return (-(-self.B // self.rows), self.blocks)

    def launch(self, grid, local):
        """``grid`` and ``local`` with the third dimension of a group's members (none for one cell)."""
        if self.members == 1:
            return tuple(grid), tuple(local)
        return tuple(grid) + (self.members,), tuple(local) + (1,)

    def steps(self, first: int, backwards: bool) -> List[Tuple[int, int]]:
        """The (t0, t1) ranges of the launches of a pass over steps first..T-1."""
        if self.one_launch:
            return [(first, self.T)]
        order = range(self.T - 1, first - 1, -1) if backwards else range(first, self.T)
        return [(t, t + 1) for t in order]


@dataclass
class SavedLayer:
    """What the forward pass of one layer leaves for its backward: h0 and every h, the
    initial c, the saved activations, and where the layer's inputs are."""

    hs: "cl.Buffer"
    c0: "cl.Buffer"
    save: "cl.Buffer"
    x_buf: "cl.Buffer"
    x_base: int
    x_width: int


@dataclass
class SavedForward:
    """A forward pass kept for backward passes (rnn_forward_saving): the inputs' shape, every
    layer's saved buffers (its own, not the shared workspaces) and the reset masks."""

    shape: Tuple[int, int, int]
    layers: List[SavedLayer]
    d_keep: "cl.Buffer"
    has_keep: bool
    sizes: "Sizes"  # the forward's launch geometry, so the backward runs with the same tuning


@dataclass
class PendingGradients:
    """Host arrays a layer's gradients are being read into (filled at the final finish)."""

    weights: np.ndarray
    bias_sums: np.ndarray
    dh0: Optional[np.ndarray]
    dc0: Optional[np.ndarray]
    x_width: int


class _SmallResults:
    """Several small arrays in one device buffer, each in a sub-buffer at an offset the device
    accepts (its base address alignment), holding their initial contents (zeros, or the
    array given with each shape, zero-padded to ``width``) and read back with one command
    (:meth:`read`: the host arrays it returns are filled at the queue's next finish). Up to
    the device's small_upload_bytes() the buffer is made with its contents (no command); a
    larger one is the shared workspace ``bptt.small``, written without waiting: on Intel's
    CPU runtime a new buffer of a few hundred KB costs more than a copy command, and the
    in-order queue reads one layer's results before the next layer's write. The caller
    holds the lock."""

    def __init__(self, runtime, parts, dtype, width: int):
        dt = np.dtype(dtype)
        align = max(int(runtime.device.mem_base_addr_align) // 8, dt.itemsize)
        self.offsets, self.shapes, self.dtype, total = [], [], dt, 0
        for shape, _ in parts:
            self.offsets.append(total)
            self.shapes.append(shape)
            total += -(-prod(shape) * dt.itemsize // align) * align
        self.host = np.zeros(max(total, align), dtype=np.uint8)
        for (shape, init), off in zip(parts, self.offsets):
            if init is not None:
                self._view(off, shape)[...] = padded(init, width, dt)
        self.runtime = runtime
        if self.host.nbytes <= runtime.small_upload_bytes():
            self.device = runtime.copy_of(self.host, "small results")
        else:  # self.host outlives the write: it is the read's destination
            self.device = runtime.workspace("bptt.small", self.host.nbytes, "small results")
            cl.enqueue_copy(runtime.queue, self.device, self.host, is_blocking=False)
        self.buffers = [self.device.get_sub_region(off, prod(shape) * dt.itemsize)
                        for shape, off in zip(self.shapes, self.offsets)]

    def _view(self, offset, shape):
        return self.host[offset:offset + prod(shape) * self.dtype.itemsize].view(self.dtype).reshape(shape)

    def read(self):
        """Enqueue the one read (not waiting); returns the host arrays it fills, in order."""
        cl.enqueue_copy(self.runtime.queue, self.host, self.device, is_blocking=False)
        return [self._view(off, shape) for shape, off in zip(self.shapes, self.offsets)]


def padded(a: np.ndarray, width: int, dtype) -> np.ndarray:
    """``a`` with its last axis zero-padded to ``width``, in ``dtype``, C-contiguous."""
    if a.shape[-1] == width:
        return np.ascontiguousarray(a, dtype=dtype)
    out = np.zeros(a.shape[:-1] + (width,), dtype=dtype)
    out[..., :a.shape[-1]] = a
    return out


class BPTTKernels(BPTTOps):
    def _back_weights(self, w: R.CellWeights) -> BackWeights:
        def make():
            # transposes of the forward's interleaved weights, made on the device (no host work
            # per optimiser step); w_ih's padded input rows are zero
            nc = w.gates * w.hp
            if w.rows is not None:  # the uploaded gate rows are these transposes
                return BackWeights(w.ip, w.w_ih, *w.rows)
            with self.lock:
                back = BackWeights(w.ip, w.w_ih, self.transposed(w.w_ih, w.ip, nc, w.dtype, "weight_ih", w.members),
                                   self.transposed(w.w_hh, w.hp, nc, w.dtype, "weight_hh", w.members))
                self.recycle_when_dropped(w, (back.w_ih_t, back.w_hh_t))
                return back

        return w.device_copies.get(self, "bptt", make)

    def _bptt_kernel(self, sz: Sizes, name: str, rows: int, tile=(1, 1), blocks: int = 1):
        gm, gn = tile
        extra = (f"CLNET_SLOTS={SLOTS[sz.kind]}", f"CLNET_BN={blocks}", f"CLNET_GM={gm}", f"CLNET_GN={gn}")
        return self.kernel("bptt", f"clnet_bptt_{name}", sz.dtype,
                           R.kernel_defines(sz.kind, sz.dtype, rows, *extra))

    def _bptt_sizes(self, layers, xs, burn_in: int) -> Sizes:
        T, B, I = xs.shape
        w = layers[0]
        cfg = self.params("bptt", kind=w.kind, batch=B, hidden=w.hidden)
        rows = cfg["rows"]
        blocks = w.hp // R.vector_width(w.dtype)
        sz = Sizes(T, B, I, w.hidden, w.hp, w.kind, w.dtype, burn_in, rows, blocks, backward_blocks(rows, blocks))
        sz.config = cfg
        sz.members = w.members
        if B <= cfg["one_launch_batch"]:
            fwd = self._bptt_kernel(sz, "forward", rows)
            bwd = self._bptt_kernel(sz, "backward", rows, blocks=sz.bn)
            sz.one_launch = (blocks <= fwd.work_group_size(self.device)
                             and backward_groups(blocks, sz.bn) <= bwd.work_group_size(self.device))
        return sz

    def rnn_backward(self, layers, xs, h0, c0, keeps, gkeep, dhs, dhT, dcT, burn_in):
        sz = self._bptt_sizes(layers, xs, burn_in)
        backs = [self._back_weights(w) for w in layers]
        with self.lock:
            keep_alive = []  # host arrays of transfers not waited for
            d_keep = layers[0].zeros if keeps is None else self.to_device(keeps, "reset masks")
            d_x = self.upload("bptt.x", padded(xs, backs[0].ip, sz.dtype), "inputs", keep_alive)
            saved = self._forward_layers(sz, layers, backs, d_x, h0, c0, d_keep, keeps is not None)
            return self._backward_layers(sz, layers, backs, saved, d_keep, keeps is not None, gkeep, dhs, dhT, dcT,
                                         keep_alive)

    def rnn_forward_saving(self, layers, xs, h0, c0, keeps):
        """The forward pass into buffers of its own (not the shared workspaces), kept by the
        returned :class:`SavedForward` for one backward pass (which zeroes rows of the saved
        states in place, as rnn_backward's does)."""
        sz = self._bptt_sizes(layers, xs, 0)
        backs = [self._back_weights(w) for w in layers]
        with self.lock:
            d_keep = layers[0].zeros if keeps is None else self.to_device(keeps, "reset masks")
            d_x = self.to_device(padded(xs, backs[0].ip, sz.dtype), "inputs")
            saved = self._forward_layers(sz, layers, backs, d_x, h0, c0, d_keep, keeps is not None, private=True)
            if sz.members == 1:
                out = np.empty((sz.T, sz.B, sz.hp), dtype=sz.dtype)
                cl.enqueue_copy(self.queue, out, saved[-1].hs, src_offset=sz.B * sz.hp * sz.item, is_blocking=True)
            else:  # every member's h0 and outputs in one read; the h0 rows are dropped here
                whole = np.empty((sz.members, sz.T + 1, sz.B, sz.hp), dtype=sz.dtype)
                cl.enqueue_copy(self.queue, whole, saved[-1].hs, is_blocking=True)
                out = whole[:, 1:]
        hs = np.ascontiguousarray(out[..., :sz.H]) if (sz.hp != sz.H or sz.members > 1) else out
        return hs, SavedForward(xs.shape, saved, d_keep, keeps is not None, sz)

    # -- cell groups (clnet.CellGroup): the "bptt_group" family --------------------------------
    # A group's prepared weights (RNNKernels.rnn_prepare_group) hold its cells one after the
    # other in each buffer; every launch of the forward, the backward and the products gets a
    # third grid dimension over the members, so a group costs the commands and waits of ONE
    # cell (the kernels find each member's part of every buffer, see bptt.cl).
    # A group of one is a plain cell (its buffers hold one member): its results get the member axis here.
    def rnn_forward_saving_group(self, weights, xs, h0, c0, keeps):
        hs, saved = self.rnn_forward_saving([weights], xs, h0[None], None if c0 is None else c0[None], keeps)
        return (hs[None] if weights.members == 1 else hs), saved

    def rnn_backward_saved_group(self, weights, saved, gkeep, dhs, dhT, dcT, burn_in, inputs=True):
        if weights.members == 1:
            dhs, dhT, dcT = dhs[0], None if dhT is None else dhT[:1], None if dcT is None else dcT[:1]
        else:
            dhT, dcT = None if dhT is None else dhT[None], None if dcT is None else dcT[None]
        res = self.rnn_backward_saved([weights], saved, gkeep, dhs, dhT, dcT, burn_in, inputs)
        return [res] if weights.members == 1 else res

    def rnn_backward_saved(self, layers, saved, gkeep, dhs, dhT, dcT, burn_in, inputs=True):
        forward: SavedForward = saved
        # the forward's parameters, not a new lookup: the tuning may have changed in between
        # (an override of the tuner or a test)
        sz = replace(forward.sizes, burn_in=burn_in)
        backs = [self._back_weights(w) for w in layers]
        with self.lock:
            grads = self._backward_layers(sz, layers, backs, forward.layers, forward.d_keep, forward.has_keep, gkeep,
                                          dhs, dhT, dcT, [], inputs)
            # the queue has finished (_backward_layers waits for its reads) and the recording is
            # used up (RecordedSequence hands it over once): its buffers serve the next one
            self.recycle([b for layer in forward.layers for b in (layer.hs, layer.save)])
            forward.layers = []
            return grads

    def _backward_layers(self, sz: Sizes, layers, backs, saved, d_keep, has_keep: bool, gkeep, dhs, dhT, dcT,
                         keep_alive, inputs: bool = True):
        """Passes 2 and 3 over every layer from the top down, given the saved forward; the
        caller holds the lock. Returns the gradients read back (without the first layer's
        input gradient unless ``inputs``)."""
        pending: List[PendingGradients] = [None] * len(layers)
        burn_in = sz.burn_in
        d_gkeep = self.to_device(gkeep, "gradient masks")
        d_grad = self.upload("bptt.dhs", padded(dhs, sz.hp, sz.dtype), "output gradients", keep_alive)
        for l in reversed(range(len(layers))):
            # a layer's dx is the gradient of the outputs of the layer below
            final = (None if dhT is None else dhT[l], None if dcT is None else dcT[l])
            # a lower layer needs this layer's input gradient; the first one's only when asked for
            pending[l], d_grad = self._backward_layer(sz, l, layers[l], backs[l], saved[l], d_grad, final,
                                                      d_keep, has_keep, d_gkeep, inputs or l > 0)
        dx = None
        if inputs and sz.members > 1:  # one read of every member's; the burn-in rows were not written
            dx = np.empty((sz.members, sz.T, sz.B, backs[0].ip), dtype=sz.dtype)
            cl.enqueue_copy(self.queue, dx, d_grad, is_blocking=False)
        elif inputs:
            dx = np.zeros((sz.T, sz.B, backs[0].ip), dtype=sz.dtype)
            cl.enqueue_copy(self.queue, dx[burn_in:], d_grad, src_offset=burn_in * sz.B * backs[0].ip * sz.item,
                            is_blocking=False)
        self.queue.finish()
        if sz.members == 1:
            return self._gradients(sz, layers, pending, dx)
        if dx is not None:
            dx[:, :burn_in] = 0
        return self._per_member(self._gradients(sz, layers, pending, dx), sz.members)

    def _forward_layers(self, sz: Sizes, layers, backs, d_x, h0, c0, d_keep, has_keep: bool,
                        private: bool = False) -> List[SavedLayer]:
        """Pass 1: every layer forward, saving h, c and the gate activations (into the shared
        workspaces, or, when ``private``, into buffers of this pass alone)."""
        def buffer(name, nbytes, what):
            return self.reused(nbytes, what) if private else self.workspace(name, nbytes, what)

        lstm = sz.kind == "lstm"
        fwd = self._bptt_kernel(sz, "forward", sz.rows)
        grid, local = sz.launch(sz.grid, (1, sz.blocks) if sz.one_launch else (1, 1))
        n = sz.members
        saved = []
        x_buf, x_base, x_width = d_x, 0, backs[0].ip
        for l, (w, back) in enumerate(zip(layers, backs)):
            d_h0 = self.to_device(padded(h0[l], sz.hp, sz.dtype), "initial state")
            d_hs = buffer(f"bptt.hs{l}", n * (sz.T + 1) * sz.B * sz.hp * sz.item, "hidden states of the sequence")
            c0_rows = padded(c0[l], sz.hp, sz.dtype) if lstm else None
            # both made with their copy of c0: no copy command (see runtime.small_upload_bytes)
            d_c0 = self.to_device(c0_rows, "initial cell state") if lstm else w.zeros
            d_c = self.copy_of(c0_rows, "cell state") if lstm else w.zeros
            d_save = buffer(f"bptt.save{l}", n * sz.T * sz.B * SLOTS[w.kind] * sz.hp * sz.item,
                                    "saved activations")
            for t0, t1 in sz.steps(0, backwards=False):
                # a group's members share the inputs (x_member 0)
                fwd(self.queue, grid, local, B=sz.B, H=sz.H, Hp=sz.hp, T=sz.T, t0=t0, t1=t1, Wt=w.w_hh, h0=d_h0,
                    hs=d_hs, c=d_c, keep=d_keep, has_keep=int(has_keep), bias_h=w.b_h, zero_row=w.zeros, x=x_buf,
                    x_base=x_base, I=x_width, Wx=back.w_ih, bias_x=w.b_x, save=d_save, x_member=0)
            saved.append(SavedLayer(d_hs, d_c0, d_save, x_buf, x_base, x_width))
            x_buf, x_base, x_width = d_hs, sz.B * sz.hp, sz.hp
        return saved

    def _backward_layer(self, sz: Sizes, l: int, w, back: BackWeights, saved: SavedLayer, d_dhs, final,
                        d_keep, has_keep: bool, d_gkeep, input_gradient: bool = True):
        """Pass 2 and 3 of one layer: the backward steps, then the gradient products.
        Returns the pending reads of its gradients and the buffer of its input gradient
        (None, and its product not run, without ``input_gradient``)."""
        dhT, dcT = final
        n = sz.members
        state = (sz.B, sz.hp) if n == 1 else (n, sz.B, sz.hp)
        zeros = np.zeros(state, sz.dtype)
        d_dhT = self.to_device(padded(dhT, sz.hp, sz.dtype) if dhT is not None else zeros, "final state gradient")
        # The bias sums, dh0 and the carried dc (dc0 at the end) share one small buffer, made
        # with its initial contents and read back in one command: PoCL spends 30-80 us of host
        # time per command (runtime.small_upload_bytes), and these were three reads. A small
        # cell's weight gradients join them (a fourth read saved).
        lead = () if n == 1 else (n,)  # a group's results: one block per member
        w_shape = lead + (sz.nc, saved.x_width + sz.hp)
        w_small = prod(w_shape) * sz.item <= self.small_upload_bytes()
        small = _SmallResults(self, [(lead + (sz.grid[0], 2 * sz.nc if sz.kind == "gru" else sz.nc), None),
                                     (state, None),
                                     (state, dcT if sz.kind == "lstm" and dcT is not None else None)]
                              + ([(w_shape, None)] if w_small else []), sz.dtype, sz.hp)
        d_bias, d_dh0, d_carry = small.buffers[:3]
        d_dG = self.workspace("bptt.dG", n * sz.T * sz.B * sz.nc * sz.item, "gate gradients")
        d_dGx = (self.workspace("bptt.dGx", n * sz.T * sz.B * sz.nc * sz.item, "input gate gradients")
                 if sz.kind == "gru" else d_dG)
        bwd = self._bptt_kernel(sz, "backward", sz.rows, blocks=sz.bn)
        groups = backward_groups(sz.blocks, sz.bn)
        grid, local = sz.launch((sz.grid[0], groups), (1, groups) if sz.one_launch else (1, 1))
        for t0, t1 in sz.steps(-1 if sz.burn_in == 0 else sz.burn_in, backwards=True):
            bwd(self.queue, grid, local, B=sz.B, Hp=sz.hp, T=sz.T, t0=t0, t1=t1, t_low=sz.burn_in, Wb=back.w_hh_t,
                hs=saved.hs, c0=saved.c0, save=saved.save, keep=d_keep, has_keep=int(has_keep), gkeep=d_gkeep,
                dhs=d_dhs, dhs_off=0, dhT=d_dhT, carry=d_carry, dG=d_dG, dGx=d_dGx, dh0=d_dh0, dbias=d_bias)
        d_w = self._weight_gradients(sz, w, saved, d_dG, d_dGx, small.buffers[3] if w_small else None)
        d_dx = None
        if input_gradient:
            xw = saved.x_width
            d_dx = self.workspace(f"bptt.dx{l % 2}", n * sz.T * sz.B * xw * sz.item, "input gradients")
            k0 = sz.burn_in * sz.B
            # a group: each member's dx from its own gate gradients and W_ih
            self._gemm(sz, "inputs", (sz.T - sz.burn_in) * sz.B, xw, sz.nc, d_dGx, k0 * sz.nc, sz.nc, 1,
                       back.w_ih_t, 0, xw, d_dx, k0 * xw, xw,
                       members=(sz.T * sz.B * sz.nc, sz.nc * xw, 0, sz.T * sz.B * xw))
        # Read back without waiting (the in-order queue finishes each read before the next
        # layer reuses the workspaces); one finish at the end.
        bias_sums, dh0, dc0, *small_weights = small.read()
        reads = PendingGradients(small_weights[0] if w_small else np.empty(w_shape, dtype=sz.dtype), bias_sums,
                                 dh0 if sz.burn_in == 0 else None,
                                 dc0 if sz.burn_in == 0 and sz.kind == "lstm" else None, saved.x_width)
        if not w_small:
            cl.enqueue_copy(self.queue, reads.weights, d_w, is_blocking=False)
        return reads, d_dx

    def _weight_gradients(self, sz: Sizes, w, saved: SavedLayer, d_dG, d_dGx, d_w=None):
        """[dW_ih | dW_hh] = dG^T @ [X | H_prev] over the steps after the burn-in, into ``d_w``
        (a workspace when None)."""
        xw, hp, nc = saved.x_width, sz.hp, sz.nc
        k0, K = sz.burn_in * sz.B, (sz.T - sz.burn_in) * sz.B
        if d_w is None:
            d_w = self.workspace("bptt.w", sz.members * nc * (xw + hp) * sz.item, "weight gradients")
        x_rows = (saved.x_buf, saved.x_base + k0 * xw, xw)
        # a group's member strides: its gate gradients, its states and its result; the inputs are shared
        g_ms, hs_ms, w_ms = sz.T * sz.B * nc, (sz.T + 1) * sz.B * hp, nc * (xw + hp)
        if sz.kind == "gru":  # dW_ih and dW_hh come from different gate gradients
            self._gemm(sz, "weights", nc, xw, K, d_dGx, k0 * nc, 1, nc, *x_rows, d_w, 0, xw + hp,
                       members=(g_ms, 0, 0, w_ms))
            self._gemm(sz, "weights", nc, hp, K, d_dG, k0 * nc, 1, nc, saved.hs, k0 * hp, hp, d_w, xw, xw + hp,
                       members=(g_ms, hs_ms, 0, w_ms))
        else:
            self._gemm(sz, "weights", nc, xw, K, d_dG, k0 * nc, 1, nc, *x_rows, d_w, 0, xw + hp,
                       right=(saved.hs, k0 * hp, hp, hp), members=(g_ms, 0, hs_ms, w_ms))
        return d_w

    def _gemm(self, sz: Sizes, tile, M, N, K, A, a_off, sam, sak, Bm, b_off, ldb, C, c_off, ldc, right=None,
              members=(0, 0, 0, 0)):
        """C = A @ Bm (see clnet_bptt_gemm); ``right`` = (B2, offset, ldb2, N2) appends the
        columns of a second matrix to Bm's N. For a group (``sz.members`` > 1) one product per
        member, each matrix moved on by its stride in ``members`` (A, Bm, B2, C) per member."""
        gm, gn, group = sz.config[f"{tile}_rows"], sz.config[f"{tile}_vectors"], sz.config["group"]
        vw = R.vector_width(sz.dtype)
        knl = self._bptt_kernel(sz, "gemm", 1, (gm, gn))
        B2, b2_off, ldb2, N2 = right if right is not None else (Bm, b_off, ldb, 0)
        items = -(-M // gm)  # whole groups along M; the kernel returns past M
        grid, local = sz.launch((-(-items // group) * group, -(-((N + N2) // vw) // gn)), (group, 1))
        a_ms, b1_ms, b2_ms, c_ms = members
        knl(self.queue, grid, local, M=M, N=N + N2, K=K, A=A, a_off=a_off, sam=sam, sak=sak, B1=Bm, b1_off=b_off,
            ldb1=ldb, N1=N, B2=B2, b2_off=b2_off, ldb2=ldb2, C=C, c_off=c_off, ldc=ldc, a_ms=a_ms, b1_ms=b1_ms,
            b2_ms=b2_ms, c_ms=c_ms)

    def _gradients(self, sz: Sizes, layers, pending: List[PendingGradients], dx: np.ndarray) -> dict:
        """The gradients read back, un-interleaved into PyTorch's layout. A group's arrays keep
        their leading member axis throughout: one un-interleave serves every member."""
        L, H, vw, nc = len(layers), sz.H, R.vector_width(sz.dtype), sz.nc
        lstm = sz.kind == "lstm"
        lead = () if sz.members == 1 else (sz.members,)
        results = []
        dh0 = np.zeros((L,) + lead + (sz.B, H), dtype=sz.dtype)
        dc0 = np.zeros((L,) + lead + (sz.B, H), dtype=sz.dtype) if lstm else None
        for l, (w, got) in enumerate(zip(layers, pending)):
            G = w.gates
            sums = got.bias_sums.sum(axis=-2)
            b_hh = b_ih = sums[..., :nc]
            if sz.kind == "gru":  # the input side differs in the n gate only
                b_ih = b_hh.reshape(lead + (-1, G, vw)).copy()
                b_ih[..., 2, :] = sums[..., nc:].reshape(lead + (-1, G, vw))[..., 2, :]
                b_ih = b_ih.reshape(lead + (-1,))
            results.append({
                "weight_ih": R.uninterleave_rows(got.weights, G, H, vw, 0, w.inputs),
                "weight_hh": R.uninterleave_rows(got.weights, G, H, vw, got.x_width, got.x_width + H),
                "bias_ih": R.uninterleave(b_ih, G, H, vw, -1),
                "bias_hh": R.uninterleave(b_hh, G, H, vw, -1)})
            if got.dh0 is not None:
                dh0[l] = got.dh0[..., :H]
                if lstm:
                    dc0[l] = got.dc0[..., :H]
        return {"layers": results, "x": None if dx is None else np.ascontiguousarray(dx[..., :sz.I]),
                "h0": dh0, "c0": dc0}

    @staticmethod
    def _per_member(res: dict, members: int) -> List[dict]:
        """A group's gradients (:meth:`_gradients`, one layer, a member axis) as one result per member."""
        layer = res["layers"][0]
        return [{"layers": [{k: np.ascontiguousarray(v[m]) for k, v in layer.items()}],
                 "x": None if res["x"] is None else res["x"][m],
                 "h0": np.ascontiguousarray(res["h0"][:, m]),
                 "c0": None if res["c0"] is None else np.ascontiguousarray(res["c0"][:, m])}
                for m in range(members)]
