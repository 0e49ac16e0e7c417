"""Simple paths on OpenCL (kernels/paths.cl): the paths family of clnet/contract.py.

Counting: per source, one launch of clnet_paths_count_layer per layer (popcount) of the
dynamic program, the two layer buffers swapped between launches, and one launch of
clnet_paths_count_reduce per layer that adds the work-items' totals in order into the
result buffer, which is read once after every source and layer. Nothing returns to the
host between layers.

Listing: the host extends the sources by a few edges (clnet.common.paths.extend_frontier)
until there are enough prefixes to keep every compute unit busy, and lists the short
paths it met on the way itself; each prefix is then the root of one depth-first walk on
the device (clnet_paths_list). A launch continues the unfinished walks, each for a
bounded number of steps and rows, so one chunk holds at most ``max_rows`` rows whatever
the number of paths.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..common import paths as host
from ..contract import PathsListing, PathsOps
from .runtime import cl

# Work-items per compute unit for a layer of the count (each owns a run of masks); a
# default measured on a 2-core CPU, not a property of other devices.
COUNT_ITEMS_PER_UNIT = 1024
# Bytes of one layer buffer for a batch of sources counted in the same launches.
COUNT_BATCH_BYTES = 256 << 20
# Prefixes (independent walks) per compute unit when listing.
LIST_WALKS_PER_UNIT = 2048
# Steps (edges tried) of all walks together in one listing launch, so that a launch has
# bounded duration whatever the graph.
LIST_STEPS_PER_LAUNCH = 1 << 25
LIST_MIN_STEPS = 1024

_DONE = 2


class PathsKernels(PathsOps):
    def paths_count_limit(self, n):
        if n > host.COUNT_MAX_VERTICES - 1:
            return f"masks hold at most {host.COUNT_MAX_VERTICES - 1} vertices besides the source"
        layer = host.count_layer_bytes(n)
        if layer > self.max_alloc:
            return (f"one layer of the count needs {layer / 2**20:.0f} MiB, more than device "
                    f"{self.device_name!r} allows in one buffer ({self.max_alloc / 2**20:.0f} MiB)")
        if 2 * layer > self.global_mem:
            return (f"two layers of the count need {2 * layer / 2**20:.0f} MiB, more than device "
                    f"{self.device_name!r} has ({self.global_mem / 2**20:.0f} MiB)")
        return None

    def paths_count(self, adjacency, sources):
        n_all = adjacency.shape[0]
        n = n_all - 1
        out = np.zeros((len(sources), max(n, 0), n_all, 2), dtype=np.uint64)
        if n >= 1:
            with self.lock:
                self._count(adjacency, sources, out)
        lo, hi = np.ascontiguousarray(out[..., 0]), np.ascontiguousarray(out[..., 1])
        return host.insert_source_axis(lo, sources, n_all), host.insert_source_axis(hi, sources, n_all)

    def _count(self, adjacency, sources, out):
        from math import comb

        n = adjacency.shape[0] - 1
        # The kernels use no real type: the program is built once, for float32.
        layer_kernel = self.kernel("paths", "clnet_paths_count_layer", np.float32)
        reduce_kernel = self.kernel("paths", "clnet_paths_count_reduce", np.float32)
        max_items = COUNT_ITEMS_PER_UNIT * max(1, int(self.device.max_compute_units))
        layer_bytes = host.count_layer_bytes(n + 1)
        budget = min(self.max_alloc, COUNT_BATCH_BYTES)
        batch = max(1, min(len(sources), budget // max(layer_bytes, 1)))
        per_source_items = max(1, max_items // batch)
        keep: List[np.ndarray] = []
        tables = [host.relabel(adjacency, int(s)) for s in sources]
        d_binom = self._workspaces.get(self, "paths binomials",
                                       lambda: self.to_device(host.BINOMIALS, "binomial table"))
        d_pred = self.upload("paths predecessors", np.stack([t[0] for t in tables]), "predecessors", keep)
        d_start = self.upload("paths starts", np.array([t[1] for t in tables], dtype=np.uint32),
                              "source successors", keep)
        layers = [self.workspace(f"paths count layer {x}", batch * layer_bytes, "a layer of the path count")
                  for x in "ab"]
        partials = [self.workspace(f"paths count partial {x}", batch * per_source_items * n * host.STATE_BYTES,
                                   "per work-item path totals") for x in "ab"]
        d_out = self.workspace("paths count out", out.nbytes, "path counts")
        cl.enqueue_fill_buffer(self.queue, d_out, np.zeros(1, dtype=np.uint64), 0, out.nbytes)  # k = 0
        for first in range(0, len(sources), batch):
            width = min(batch, len(sources) - first)
            prev_items = 0
            for k in range(1, n + 1):
                n_masks = comb(n, k)
                per_item = -(-n_masks // per_source_items)
                items = -(-n_masks // per_item)
                layer_kernel(self.queue, (max(items, n), width), self.any_local((1, 1)), n=n, k=k, n_masks=n_masks,
                             masks_per_item=per_item, items=items, prev_items=prev_items,
                             first_source=first, binom=d_binom, pred=d_pred, start=d_start,
                             prev=layers[(k + 1) % 2], next=layers[k % 2], partial=partials[k % 2],
                             prev_partial=partials[(k + 1) % 2], out=d_out)
                prev_items = items
            reduce_kernel(self.queue, (n, width), self.any_local((1, 1)), n=n, items=prev_items, k=n, first_source=first,
                          partial=partials[n % 2], out=d_out)
        cl.enqueue_copy(self.queue, out, d_out)
        self.queue.finish()

    def paths_listing(self, adjacency, sources, targets, min_length, max_length):
        return OpenCLPathsListing(self, adjacency, sources, targets, min_length, max_length)


class OpenCLPathsListing(PathsListing):
    """Walks below host-made prefixes on one device; the host's own short paths come first."""

    def __init__(self, backend, adjacency, sources, targets, min_length, max_length):
        self.be = backend
        self.width = max_length + 1
        self.min_length, self.max_length = min_length, max_length
        succ = host.successor_masks(adjacency)
        units = max(1, int(backend.device.max_compute_units))
        paths, visited = host.start_frontier(sources, self.width)
        ready, depth = [], 0
        while depth < max_length and 0 < len(paths) < LIST_WALKS_PER_UNIT * units:
            paths, visited = host.extend_frontier(paths, visited, depth, succ)
            depth += 1
            keep = host.accepted(paths, depth, targets, min_length)
            if keep.any():
                ready.append(paths[keep])
        self.ready = np.concatenate(ready) if ready else np.empty((0, self.width), dtype=np.int32)
        self.walks = len(paths) if depth < max_length else 0
        self.active = np.arange(self.walks, dtype=np.int32)
        if self.walks:
            info = np.empty((self.walks, 3), dtype=np.int32)
            info[:, 0] = info[:, 1] = depth
            info[:, 2] = 0
            self.d_paths = backend.copy_of(paths, "listing walks")
            self.d_info = backend.copy_of(info, "listing walk states")
            self.d_succ = backend.to_device(succ, "successor masks")
            self.target_bits = int(host.successor_masks(targets[None, :])[0])
            self.kernel = backend.kernel("paths", "clnet_paths_list", np.float32)
            self.compact = backend.kernel("paths", "clnet_paths_compact", np.float32)

    def next_chunk(self, max_rows):
        if len(self.ready):
            chunk, self.ready = self.ready[:max_rows], self.ready[max_rows:]
            return np.ascontiguousarray(chunk)
        while len(self.active):
            rows = self._launch(max_rows)
            if len(rows):
                return rows
        return None

    def _launch(self, max_rows: int) -> np.ndarray:
        be = self.be
        row_bytes = self.width * 4
        # The walks' rows and the compacted chunk share the device: each gets half a buffer at most.
        max_rows = max(1, min(max_rows, be.max_alloc // (2 * row_bytes)))
        active = self.active[:max_rows]
        items = len(active)
        cap = max(1, max_rows // items)
        budget = max(LIST_MIN_STEPS, LIST_STEPS_PER_LAUNCH // items)
        counts = np.empty(items, dtype=np.int32)
        info = np.empty((self.walks, 3), dtype=np.int32)
        with be.lock:
            keep: List[np.ndarray] = []
            d_active = be.upload("paths list active", active, "active walks", keep)
            d_rows = be.workspace("paths list rows", items * cap * row_bytes, "the rows of the walks")
            d_counts = be.workspace("paths list counts", counts.nbytes, "rows per walk")
            self.kernel(be.queue, (items,), be.any_local((1,)), width=self.width, min_length=self.min_length,
                        max_length=self.max_length, succ=self.d_succ, targets=self.target_bits,
                        active=d_active, state_path=self.d_paths, state_info=self.d_info, cap=cap,
                        step_budget=budget, rows=d_rows, counts=d_counts)
            cl.enqueue_copy(be.queue, counts, d_counts)
            cl.enqueue_copy(be.queue, info, self.d_info)
            offsets = np.zeros(items + 1, dtype=np.int32)
            np.cumsum(counts, out=offsets[1:])
            chunk = np.empty((int(offsets[-1]), self.width), dtype=np.int32)
            if len(chunk):
                d_offsets = be.upload("paths list offsets", offsets, "row offsets", keep)
                d_chunk = be.workspace("paths list chunk", chunk.nbytes, "a chunk of paths")
                self.compact(be.queue, (items,), be.any_local((1,)), width=self.width, cap=cap, rows=d_rows,
                             offsets=d_offsets, out=d_chunk)
                cl.enqueue_copy(be.queue, chunk, d_chunk)
            be.queue.finish()
        finished = info[active, 2] == _DONE
        self.active = np.concatenate([active[~finished], self.active[max_rows:]])
        return chunk
