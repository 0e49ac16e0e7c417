"""A reduced conformance pass meant to run under Oclgrind (see tests/test_oclgrind.py).

    oclgrind --data-races --uninitialized python tests/oclgrind_pass.py float32
    oclgrind --data-races --uninitialized python tests/oclgrind_pass.py float64

Every device buffer is kept alive until the process ends: Oclgrind 21.10 reports false
"uninitialized value" diagnostics when a new buffer reuses the address range of a freed
one (shown by tests/test_oclgrind.py's own control case). Never reusing memory is also
the stricter check: a kernel that read stale data would read a fresh, uninitialised
buffer here and be reported.

Small sizes, every kernel and code path (backpropagation through time included): every
activation and aggregation with one sample per work-item and with SIMD lanes, batch
sizes that are not multiples of the lane count or work-group size, work split into
several launches, float32 and float64.
Each result is also compared with the NumPy reference, so a wrong answer fails too.
Exits non-zero on a mismatch; Oclgrind's own diagnostics are judged by the caller.
"""
import importlib
import sys

import numpy as np
import pyopencl as cl

_KEEP_ALIVE = []
_Buffer = cl.Buffer


def _kept_buffer(*args, **kwargs):
    buf = _Buffer(*args, **kwargs)
    _KEEP_ALIVE.append(buf)
    return buf


cl.Buffer = _kept_buffer

import clnet
from clnet.opencl import fnn
from clnet.opencl.tuning import FAMILIES, overriding
from clnet.functions import ACTIVATIONS, AGGREGATIONS

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def check(name, run, be, dt, family="fnn"):
    """Compare ``run(be, dt)`` with the float64 reference, as the conformance suite does."""
    from clnet.conformance import Comparison, compare

    cmp = Comparison(name, run(be, dt), run("numpy", "float64"), run("numpy", dt))
    _, _, msg = compare(cmp, name.split(".")[0] if name.split(".")[0] in ("rnn", "pearson") else family,
                        np.dtype(dt))
    print(f"{'FAIL' if msg else 'ok  '} {name}" + (f"\n{msg}" if msg else ""), flush=True)
    return not msg


def lanes_variants(be):
    """One sample per work-item, one SIMD width, several (clnet/opencl/tuning.py's lanes)."""
    for lanes in (1, 16, 64):
        with overriding(be, "fnn", layered_lanes=lanes, graph_lanes=lanes, graph_vector_lanes=lanes):
            yield lanes


def sweep(be, family, shape):
    """(label, parameters) of every value of every tunable parameter of ``family``, the
    others at their defaults: the configurations the tuner may pick."""
    fam = FAMILIES[family]
    configs = fam.sweep(be.tuning.props, shape)
    base = configs[0]
    for c in configs:
        yield ", ".join(f"{k}={v}" for k, v in c.items() if base[k] != v) or "defaults", c


@case
def fnn_every_activation(be, dtypes):
    ok = True
    rng = np.random.default_rng(1)
    s = [2, 3, 2]
    for lanes in lanes_variants(be):
        for act in ACTIVATIONS:
            w = rng.normal(size=clnet.weight_count(s))
            x = rng.normal(size=(5, 2))
            for dt in dtypes:
                ok &= check(f"fnn.layered {act} lanes={lanes} {dt}",
                            lambda b, d: clnet.fnn_forward(s, w, x, activation=act, backend=b, dtype=d), be, dt)
    return ok


@case
def fnn_every_aggregation(be, dtypes):
    ok = True
    rng = np.random.default_rng(2)
    nodes = [dict(key=0, aggregation="sum")]
    conns = []
    key = 10
    for agg in AGGREGATIONS:
        for fan_in in range(5):  # 0..4 terms: empty, single, even and odd medians
            nodes.append(dict(key=key, aggregation=agg, activation="tanh", bias=0.1))
            conns += [(-(i % 3) - 1, key, float(rng.normal())) for i in range(fan_in)]
            conns.append((key, 0, 1.0))
            key += 1
    net = clnet.FNN.from_graph(3, 1, nodes, conns)
    x = rng.normal(size=(7, 3))
    for lanes in lanes_variants(be):
        for dt in dtypes:
            ok &= check(f"fnn.graph every aggregation lanes={lanes} {dt}",
                        lambda b, d: net(x, backend=b, dtype=d), be, dt)
    return ok


@case
def fnn_split_launches(be, dtypes):
    ok = True
    rng = np.random.default_rng(3)
    nets = [clnet.FNN.from_structure([2, int(h), 2], rng.normal(size=4 * int(h)), activation="sigmoid")
            for h in rng.integers(1, 6, size=9)]
    pop = clnet.FNNPopulation(nets)
    x = rng.normal(size=(21, 2))
    saved = fnn.SCRATCH_BUDGET
    fnn.SCRATCH_BUDGET = 1024  # a few networks and lanes per launch, outputs in pieces
    try:
        for lanes in lanes_variants(be):
            for dt in dtypes:
                ok &= check(f"fnn.population split launches lanes={lanes} {dt}",
                            lambda b, d: pop(x, backend=b, dtype=d), be, dt)
                layered = clnet.FNN.from_structure([2, 9, 9, 2], rng.normal(size=117), activation="relu")
                ok &= check(f"fnn.layered split batch lanes={lanes} {dt}",
                            lambda b, d: layered(x, backend=b, dtype=d), be, dt)
    finally:
        fnn.SCRATCH_BUDGET = saved
    return ok


def _rnn_cells(seed):
    return [("lstm", clnet.LSTMCell(3, 5, seed=seed)), ("gru", clnet.GRUCell(3, 5, seed=seed)),
            ("rnn_tanh", clnet.RNNCell(3, 5, seed=seed)),
            ("rnn_relu", clnet.RNNCell(3, 5, nonlinearity="relu", seed=seed)),
            ("lstm_nobias", clnet.LSTMCell(3, 5, bias=False, seed=seed))]


def _rnn_run(cell, xs, resets, mode, backend, dtype):
    """Steps or a whole sequence from a non-zero stored state, returning every h (and c)."""
    T, B, _ = xs.shape
    rng = np.random.default_rng(11)
    state = cell.initial_state(B, backend=backend, dtype=dtype)
    h0 = rng.normal(size=(B, cell.hidden_size))
    state.set(h0, h0 * 0.5 if isinstance(cell, clnet.LSTMCell) else None)
    if mode == "step":
        hs = np.stack([cell.step(xs[t], state, reset=resets[t]) for t in range(T)])
    else:
        hs = cell.sequence(xs, state, resets=resets)
    state.reset(resets[0])  # the state's own reset kernel
    extra = [state.h] + ([state.c] if isinstance(cell, clnet.LSTMCell) else [])
    return np.concatenate([np.asarray(hs).ravel()] + [np.asarray(e).ravel() for e in extra])


@case
def rnn_every_cell_and_path(be, dtypes):
    ok = True
    rng = np.random.default_rng(4)
    for projection in ("fused", "batched"):
        with overriding(be, "rnn", projection=projection, one_launch_batch=128):
            for B in (1, 3, 130):  # 130 > one_launch_batch: one launch per step
                xs = rng.normal(size=(4, B, 3))
                resets = rng.random((4, B)) < 0.3
                for name, cell in _rnn_cells(B):
                    for mode in ("step", "sequence"):
                        if mode == "step" and projection == "batched":
                            continue  # a single step has one code path
                        for dt in dtypes:
                            ok &= check(f"rnn.{name} {mode} {projection} B={B} {dt}",
                                        lambda b, d: _rnn_run(cell, xs, resets, mode, b, d), be, dt)
    stacked = clnet.LSTM(3, 5, num_layers=2, seed=1)
    gru = clnet.GRU(3, 5, num_layers=2, seed=2)
    xs = rng.normal(size=(3, 2, 3))
    for dt in dtypes:
        ok &= check(f"rnn.stacked_lstm {dt}", lambda b, d: stacked(xs, backend=b, dtype=d)[0], be, dt)
        ok &= check(f"rnn.stacked_gru {dt}", lambda b, d: gru(xs, backend=b, dtype=d)[0], be, dt)
    return ok


@case
def pearson_every_path(be, dtypes):
    """Complete, sparse-missing and dense-missing data; dense, cross, diff, top-k (device
    symmetric lists, per-strip candidates, host selection) and threshold; strips that end
    mid-tile; pairs marked for the host's float64 rescue (their counter is an atomic)."""
    P = importlib.import_module("clnet.common.pearson")  # strip sizes

    ok = True
    rng = np.random.default_rng(5)
    base = rng.normal(size=(37, 23)) + np.linspace(0, 3, 23)
    few = base.copy()
    few[rng.random(few.shape) < 0.1] = np.nan
    many = base.copy()
    many[rng.random(many.shape) < 0.5] = np.nan
    many[3, :] = np.inf
    for X in (few, many):  # rows 6 and 7 share 3 nearly coinciding values: rescued pairs
        X[6:8] = np.nan
        X[6, 10:] = rng.normal(size=13)
        X[7, 3:10] = rng.normal(size=7)
        X[6, :3] = 5 + 1e-3 * rng.normal(size=3)
        X[7, :3] = -4 + 1e-3 * rng.normal(size=3)
    Y = rng.normal(size=(5, 23))
    saved = P.STRIP_BUDGET
    P.STRIP_BUDGET = 4096  # several strips, the last one partial
    try:
        for label, X in (("complete", base), ("10% missing", few), ("50% missing", many)):
            for dt in dtypes:
                ok &= check(f"pearson.dense {label} {dt}", lambda b, d: clnet.pearson(X, backend=b, dtype=d), be, dt)
                ok &= check(f"pearson.cross {label} {dt}", lambda b, d: clnet.pearson(X, Y, backend=b, dtype=d), be, dt)
                ok &= check(f"pearson.diff {label} {dt}",
                            lambda b, d: clnet.pearson(X, transform="diff", min_overlap=3, backend=b, dtype=d), be, dt)
                for k in (3, 20, 30):  # symmetric device lists, per-strip candidates, host selection
                    ok &= check(f"pearson.topk k={k} {label} {dt}",
                                lambda b, d: clnet.pearson_topk(X, k, backend=b, dtype=d, progress=False)[1], be, dt)
                ok &= check(f"pearson.threshold {label} {dt}",
                            lambda b, d: clnet.pearson_threshold(X, 0.3, backend=b, dtype=d, progress=False).toarray(),
                            be, dt)
    finally:
        P.STRIP_BUDGET = saved
    return ok


@case
def mcl_every_path(be, dtypes):
    """Markov clustering: the cutoff alone, selection, recovery, pruning off, expansion 3
    (an unpruned intermediate product), several column blocks joined on the device, fewer
    lanes than columns, and columns that touch every row."""
    from clnet.common.mcl_graphs import planted_edges
    from clnet.opencl import mcl

    rng = np.random.default_rng(8)
    rows, cols, w, _ = planted_edges(40, 4, 4, 0.5, rng)
    g = np.zeros((40, 40))
    g[rows, cols] = w
    ok = True
    saved = mcl.BLOCK_TERMS, mcl.LANES
    mcl.BLOCK_TERMS, mcl.LANES = 300, 5
    try:
        for label, kw in (("defaults", {}), ("select and recover", dict(select=4, recover=7)),
                          ("recover", dict(prune=0.05, recover=12, recover_pct=95)),
                          ("no pruning", dict(prune=0.0, select=10**6, recover=10**6)),
                          ("expansion 3", dict(expansion=3))):
            for dt in dtypes:
                ok &= check(f"mcl {label} {dt}", lambda b, d: clnet.mcl(g, 2.0, backend=b, dtype=d, **kw).labels,
                            be, dt, family="mcl")
        # a complete graph: every column touches all N rows before its last terms, so the row
        # record writes its spare slot, and the last column's is the scratch's last element
        complete = np.ones((9, 9))
        for dt in dtypes:
            ok &= check(f"mcl complete graph {dt}", lambda b, d: clnet.mcl(complete, 2.0, backend=b, dtype=d).labels,
                        be, dt, family="mcl")
    finally:
        mcl.BLOCK_TERMS, mcl.LANES = saved
    return ok


@case
def bptt_every_cell(be, dtypes):
    """backward_sequence of every cell kind and stacked layers, with resets, truncation,
    burn-in, masks and final-state gradients, through the one-launch and the per-step paths."""
    from clnet.conformance import Comparison, compare

    ok = True
    rng = np.random.default_rng(4)
    models = [("lstm", clnet.LSTMCell(2, 17, seed=1)), ("gru", clnet.GRUCell(3, 5, seed=2)),
              ("rnn_tanh", clnet.RNNCell(1, 17, seed=3)),
              ("rnn_relu", clnet.RNNCell(2, 3, nonlinearity="relu", seed=4)),
              ("stacked_lstm", clnet.LSTM(2, 9, num_layers=2, seed=5)), ("stacked_gru", clnet.GRU(3, 4, 2, seed=6)),
              # float64: 7 blocks of 8 units, taken 4 per work-item of the backward step (the last
              # group computes one block past the end, not stored)
              ("lstm_7_blocks", clnet.LSTMCell(2, 50, seed=7))]
    for one_launch in (True, False):
        with overriding(be, "bptt", one_launch_batch=128 if one_launch else 0):
            for name, model in models:
                T, B = 4, 3
                lstm = "lstm" in name
                lead = (2, B, model.hidden_size) if name.startswith("stacked") else (B, model.hidden_size)
                args = dict(xs=rng.normal(size=(T, B, model.input_size)),
                            initial_state=((rng.normal(size=lead), rng.normal(size=lead)) if lstm
                                           else rng.normal(size=lead)),
                            resets=rng.random((T, B)) < 0.3, grad_hs=rng.normal(size=(T, B, model.hidden_size)),
                            grad_final=(rng.normal(size=lead), None) if lstm else rng.normal(size=lead),
                            truncate=2, burn_in=int(one_launch), mask=rng.random((T, B)) < 0.7)
                for dt in dtypes:
                    got = model.backward_sequence(**args, backend=be, dtype=dt)
                    ref = model.backward_sequence(**args, backend="numpy", dtype="float64")
                    ctl = model.backward_sequence(**args, backend="numpy", dtype=dt)
                    msgs = [compare(Comparison(k, got[k], ref[k], ctl[k]), "bptt", np.dtype(dt))[2] for k in ref]
                    msg = "\n".join(m for m in msgs if m)
                    label = f"bptt {name} {'one launch' if one_launch else 'per step'} {dt}"
                    print(f"{'FAIL' if msg else 'ok  '} {label}" + (f"\n{msg}" if msg else ""), flush=True)
                    ok &= not msg
    return ok


@case
def bptt_cell_groups(be, dtypes):
    """clnet.CellGroup: members side by side in each launch (the kernels' third grid
    dimension), through the one-launch and the per-step paths, every member against its own
    float64 reference; one group with weights large enough to be laid out by the device's
    transposes (also one per member)."""
    from clnet.conformance import Comparison, compare

    ok = True
    rng = np.random.default_rng(8)
    groups = [("lstm", [clnet.LSTMCell(2, 17, seed=s) for s in (1, 2)]),
              ("gru", [clnet.GRUCell(3, 5, seed=s) for s in (3, 4, 5)]),
              ("rnn_tanh", [clnet.RNNCell(1, 17, seed=s) for s in (6, 7)]),
              ("lstm_7_blocks", [clnet.LSTMCell(2, 50, seed=s) for s in (8, 9)])]
    large = ("lstm_device_layout", [clnet.LSTMCell(2, 260, seed=s) for s in (10, 11)])
    for one_launch in (True, False):
        with overriding(be, "bptt", one_launch_batch=128 if one_launch else 0):
            for name, cells in groups + ([large] if one_launch else []):
                group = clnet.CellGroup(cells)
                T, B, H, n = 3, 3, cells[0].hidden_size, len(cells)
                lstm = name.startswith("lstm")
                starts = [(rng.normal(size=(B, H)), rng.normal(size=(B, H))) if lstm else rng.normal(size=(B, H))
                          for _ in cells]
                xs, resets = rng.normal(size=(T, B, cells[0].input_size)), rng.random((T, B)) < 0.3
                grads, mask = rng.normal(size=(n, T, B, H)), rng.random((T, B)) < 0.7
                for dt in (dtypes if name != large[0] else dtypes[:1]):
                    got = group.record_sequence(xs, starts, resets, backend=be, dtype=dt).backward(
                        grads, truncate=2, burn_in=int(one_launch), mask=mask)
                    msgs = []
                    for m, cell in enumerate(cells):
                        args = dict(xs=xs, initial_state=starts[m], resets=resets, grad_hs=grads[m], truncate=2,
                                    burn_in=int(one_launch), mask=mask)
                        ref = cell.backward_sequence(**args, backend="numpy", dtype="float64")
                        ctl = cell.backward_sequence(**args, backend="numpy", dtype=dt)
                        msgs += [compare(Comparison(f"member {m} {k}", got[m][k], ref[k], ctl[k]), "bptt",
                                         np.dtype(dt))[2] for k in ref]
                    msg = "\n".join(x for x in msgs if x)
                    label = f"bptt group {name} x{n} {'one launch' if one_launch else 'per step'} {dt}"
                    print(f"{'FAIL' if msg else 'ok  '} {label}" + (f"\n{msg}" if msg else ""), flush=True)
                    ok &= not msg
    return ok


@case
def every_tunable_configuration(be, dtypes):
    """Every value of every tunable parameter of every family (the others at their
    defaults), on small shapes that are not multiples of any tile: a configuration the
    tuner may pick is one this pass has run. The first dtype only (the code paths are the
    same in the other)."""
    from clnet.conformance import Comparison, compare

    dt = dtypes[0]
    ok = True
    rng = np.random.default_rng(6)
    nets = [clnet.FNN.from_structure([2, h, 2], rng.normal(size=4 * h), activation="tanh") for h in (1, 3, 5)]
    pop = clnet.FNNPopulation(nets)
    # plain-arithmetic functions: the population kernel's "graph_vector" launch parameters
    plain = clnet.FNNPopulation([clnet.FNN.from_structure([2, h, 2], rng.normal(size=4 * h), activation="sigmoid")
                                 for h in (2, 4)])
    layered = clnet.FNN.from_structure([2, 7, 2], rng.normal(size=28), activation="relu")
    x = rng.normal(size=(21, 2))
    for label, c in sweep(be, "fnn", {"batch": 21}):
        with be.tuning.overriding("fnn", c):
            ok &= check(f"sweep fnn.population [{label}] {dt}", lambda b, d: pop(x, backend=b, dtype=d), be, dt)
            ok &= check(f"sweep fnn.plain population [{label}] {dt}", lambda b, d: plain(x, backend=b, dtype=d),
                        be, dt)
            ok &= check(f"sweep fnn.layered [{label}] {dt}", lambda b, d: layered(x, backend=b, dtype=d), be, dt)
    cells = _rnn_cells(7)[:3]
    xs = rng.normal(size=(3, 5, 3))
    resets = rng.random((3, 5)) < 0.3
    for label, c in sweep(be, "rnn", {"kind": "lstm", "batch": 5}):
        with be.tuning.overriding("rnn", c):
            for name, cell in cells:
                for mode in ("step", "sequence"):
                    ok &= check(f"sweep rnn.{name} {mode} [{label}] {dt}",
                                lambda b, d: _rnn_run(cell, xs, resets, mode, b, d), be, dt)
    for label, c in sweep(be, "bptt", {"kind": "lstm", "batch": 3}):
        with be.tuning.overriding("bptt", c):
            for name, cell in cells:
                args = dict(xs=xs[:, :3], initial_state=None, resets=resets[:, :3],
                            grad_hs=rng.normal(size=(3, 3, cell.hidden_size)))
                got = cell.backward_sequence(**args, backend=be, dtype=dt)
                ref = cell.backward_sequence(**args, backend="numpy", dtype="float64")
                ctl = cell.backward_sequence(**args, backend="numpy", dtype=dt)
                msg = "\n".join(m for m in (compare(Comparison(k, got[k], ref[k], ctl[k]), "bptt", np.dtype(dt))[2]
                                            for k in ref) if m)
                print(f"{'FAIL' if msg else 'ok  '} sweep bptt.{name} [{label}] {dt}" + (f"\n{msg}" if msg else ""),
                      flush=True)
                ok &= not msg
            # a cell group runs the same kernels with a third grid dimension
            pair = [clnet.LSTMCell(3, 7, seed=s) for s in (12, 13)]
            grads = rng.normal(size=(2, 3, 3, 7))
            got = clnet.CellGroup(pair).record_sequence(xs[:, :3], None, resets[:, :3], backend=be,
                                                        dtype=dt).backward(grads)
            msgs = []
            for m, cell in enumerate(pair):
                args = dict(xs=xs[:, :3], initial_state=None, resets=resets[:, :3], grad_hs=grads[m])
                ref = cell.backward_sequence(**args, backend="numpy", dtype="float64")
                ctl = cell.backward_sequence(**args, backend="numpy", dtype=dt)
                msgs += [compare(Comparison(f"member {m} {k}", got[m][k], ref[k], ctl[k]), "bptt", np.dtype(dt))[2]
                         for k in ref]
            msg = "\n".join(x for x in msgs if x)
            print(f"{'FAIL' if msg else 'ok  '} sweep bptt.group [{label}] {dt}" + (f"\n{msg}" if msg else ""),
                  flush=True)
            ok &= not msg
    X = rng.normal(size=(19, 23)) + np.linspace(0, 3, 23)
    Xm = X.copy()
    Xm[rng.random(X.shape) < 0.1] = np.nan
    for label, c in sweep(be, "pearson", {"rows": 19}):
        with be.tuning.overriding("pearson", c):
            for what, data in (("complete", X), ("10% missing", Xm)):
                ok &= check(f"sweep pearson.dense {what} [{label}] {dt}",
                            lambda b, d: clnet.pearson(data, backend=b, dtype=d), be, dt)
                ok &= check(f"sweep pearson.topk {what} [{label}] {dt}",
                            lambda b, d: clnet.pearson_topk(data, 3, backend=b, dtype=d, progress=False)[1], be, dt)
    return ok


@case
def paths_count_and_list(be, dtypes):
    """Counting (several sources in one batch, tiny and single-mask layers) and listing (walks
    resumed across launches by the step budget and one-row chunks, targets, length limits);
    exact integers, so every result must equal the NumPy reference."""
    from clnet.opencl import paths

    ok = True
    rng = np.random.default_rng(8)
    saved = paths.LIST_STEPS_PER_LAUNCH, paths.LIST_MIN_STEPS, paths.LIST_WALKS_PER_UNIT
    try:
        paths.LIST_STEPS_PER_LAUNCH, paths.LIST_MIN_STEPS, paths.LIST_WALKS_PER_UNIT = 1, 5, 1
        for n, density in ((1, 1.0), (2, 1.0), (5, 0.5), (7, 0.8)):
            graph = rng.random((n, n)) < density
            same = np.array_equal(clnet.count_simple_paths(graph, by_length=True, backend=be),
                                  clnet.count_simple_paths(graph, by_length=True, backend="numpy"))
            kw = dict(target=[0, n - 1], min_length=1, max_length=max(1, n - 2), chunk_size=3)
            got = [tuple(r) for c in clnet.simple_paths(graph, backend=be, **kw) for r in c.tolist()]
            want = [tuple(r) for c in clnet.simple_paths(graph, backend="numpy", **kw) for r in c.tolist()]
            same &= sorted(got) == sorted(want)
            print(f"{'ok  ' if same else 'FAIL'} paths n={n}", flush=True)
            ok &= same
    finally:
        paths.LIST_STEPS_PER_LAUNCH, paths.LIST_MIN_STEPS, paths.LIST_WALKS_PER_UNIT = saved
    return ok


def main() -> int:
    be = clnet.get_backend("opencl")
    print(f"device: {be.spec} {be.description}", flush=True)
    args = sys.argv[1:]
    if "--mcl" in args:  # the Markov clustering case alone, e.g. after a change to kernels/mcl.cl
        args.remove("--mcl")
        CASES[:] = [mcl_every_path]
    if "--groups" in args:  # the cell-group case alone, e.g. after a change to kernels/bptt.cl
        args.remove("--groups")
        CASES[:] = [bptt_cell_groups]
    dtypes = args or ["float32"]
    if "float64" in dtypes and not be.supports_float64:
        print("device has no float64: nothing to check")
        return 0
    results = [c(be, dtypes) for c in CASES]
    print(f"oclgrind pass: {sum(results)} of {len(results)} case groups correct", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
