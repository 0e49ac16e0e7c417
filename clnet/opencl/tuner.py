"""``python -m clnet tune``: measure each family's tunable parameters on a device and keep
the fastest in the device's cache file (clnet/opencl/tuning.py).

The search is coordinate descent from the declared defaults: each parameter in turn (or each
set of coupled parameters, every combination of their values) tries every allowed value with
the others at the best found so far, for a few passes or until the
family's share of the budget is spent; the winner is then re-timed against the defaults in
alternating rounds and kept only if it still wins. Every candidate's results are first compared with the
float64 NumPy reference under the conformance tolerance table; a candidate that disagrees is
reported and never chosen. Each family is tuned at a few representative shapes; a call at a
shape in between uses the nearest tuned entry when it lies within the family's reach
(clnet/opencl/tuning.py: for the recurrent families, a factor of 2 in batch times hidden size),
else the defaults.
"""
from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .tuning import FAMILIES, DeviceTuning

# Share of the budget each family gets (by its number of shapes and the cost of its calls).
WEIGHTS = {"fnn": 0.25, "rnn": 0.3, "bptt": 0.25, "pearson": 0.2, "transfers": 0.04}
DEFAULT_BUDGET = 240.0  # seconds for all the families: a few minutes on a 2-core CPU
PASSES = 2
# A search's winner is re-timed against the defaults in this many alternating rounds (median
# of each) and kept only if it still wins by the search's margin: the search compares one
# timing of each of dozens of candidates, the defaults timed first, so its best is biased low
# (measured: winners with 1.1-2.4x "gains" ran 0.87-1.09x the defaults' speed when re-timed).
CONFIRM_ROUNDS = 5
MARGIN = 0.97  # a candidate must take at most this fraction of the best time so far


@dataclass
class Workload:
    """One representative shape of a family: ``run()`` makes the calls to time with the
    backend's current parameters and returns their outputs; ``reference`` the float64
    NumPy outputs they must match."""

    family: str
    shape: Dict[str, object]
    label: str
    run: Callable[[], List[np.ndarray]]
    reference: List[np.ndarray]
    control: List[np.ndarray]
    tolerance_family: str
    relevant: Callable[[str], bool] = lambda name: True
    # The winner rewritten to the configuration with the same effect at this workload that
    # changes the fewest other calls (a threshold moved only as far as this workload's own
    # shape needs): an entry applies beyond the shape it was measured at.
    settle: Callable[[Dict[str, object], Dict[str, object]], Dict[str, object]] = lambda best, base: best


def _fnn_workloads(be) -> List[Workload]:
    import clnet
    from ..bench.neat_genomes import benchmark_population, default_population

    rng = np.random.default_rng(0)
    config, genomes = benchmark_population(150)
    pop = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])
    # neat-python's default functions (sum, sigmoid): plain arithmetic, the "graph_vector" form
    plain_config, plain_genomes = default_population(150, seed=5)  # not the benchmark's own (seed 0)
    plain = clnet.FNNPopulation([clnet.FNN.from_neat(g, plain_config) for g in plain_genomes])
    sizes = [8, 64, 64, 4]
    net = clnet.FNN.from_structure(sizes, rng.normal(size=clnet.weight_count(sizes)) * 0.3, activation="tanh")
    out = []
    for batch in (100, 1000, 10000):
        x = rng.uniform(-1, 1, size=(batch, 8))
        for form, model in (("layered", net), ("graph", pop), ("graph_vector", plain)):
            out.append(Workload(
                "fnn", {"batch": batch}, f"{form} B={batch}",
                lambda model=model, x=x: [model(x, backend=be, dtype="float32")],
                [model(x, backend="numpy", dtype="float64")], [model(x, backend="numpy", dtype="float32")],
                # the cache budget is shared; the population, whose scratch is the larger, tunes it.
                # graph_median_ranks keeps its default: these populations have no median.
                "fnn", lambda name, form=form: (name in (f"{form}_lanes", f"{form}_group")
                                                or (form == "graph" and name == "scratch_mb"))))
    return out


# An Elman RNN with ReLU runs the very kernels of one with tanh (only the activation
# differs): it is tuned as rnn_tanh and its entries are copies (see entries_from).
TUNED_KINDS = ("lstm", "gru", "rnn_tanh")
SAME_KERNELS = {"rnn_tanh": ("rnn_relu",)}


def _rnn_workloads(be) -> List[Workload]:
    from ..conformance.rnn import make_cell

    out = []
    rng = np.random.default_rng(1)
    I, H = 48, 200  # H pads to whole vectors, as most users' sizes do
    for kind in TUNED_KINDS:
        cell = make_cell(kind, I, H, True, 3)
        for batch in (16, 256, 1024):
            T = 16 if batch < 1024 else 8
            xs = rng.normal(size=(T, batch, I)) * 0.5
            resets = rng.random((T, batch)) < 0.05

            def run(cell=cell, xs=xs, resets=resets, backend=None, dtype="float32"):
                backend = backend or be
                state = cell.initial_state(xs.shape[1], backend=backend, dtype=dtype)
                hs = cell.sequence(xs, state, resets=resets)
                steps = [cell.step(xs[t], state) for t in range(4)]  # the step kernel alone
                return [np.asarray(hs), np.stack(steps)]
            out.append(Workload("rnn", {"kind": kind, "batch": batch, "hidden": H}, f"{kind} B={batch}", run,
                                run(backend="numpy", dtype="float64"), run(backend="numpy"), "rnn"))
    return out


def _bptt_workloads(be) -> List[Workload]:
    from ..conformance.rnn import make_cell

    out = []
    rng = np.random.default_rng(2)
    T, I, H = 16, 48, 136
    for kind in TUNED_KINDS:
        cell = make_cell(kind, I, H, True, 4)
        for batch in (16, 128, 512):
            args = dict(xs=rng.normal(size=(T, batch, I)) * 0.5, initial_state=None,
                        resets=rng.random((T, batch)) < 0.05, grad_hs=rng.normal(size=(T, batch, H)))

            def run(cell=cell, args=args, backend=None, dtype="float32"):
                g = cell.backward_sequence(**args, backend=backend or be, dtype=dtype)
                return [np.asarray(g[k]) for k in sorted(g)]
            out.append(Workload("bptt", {"kind": kind, "batch": batch, "hidden": H}, f"{kind} B={batch}", run,
                                run(backend="numpy", dtype="float64"), run(backend="numpy"), "bptt"))
    return out


@dataclass(frozen=True)
class ThresholdSettle:
    """A ``settle`` of Workload for the threshold ``name`` at a workload of ``fraction``
    (a kernel is chosen when the fraction is at most the threshold): a winner on the
    defaults' side of ``fraction`` takes the default back; a winner on the other side takes
    the allowed value nearest ``fraction`` on that side. The entry of a Pearson shape serves
    every fraction: the 30%-missing workload's pick of 0.05 (the masked kernel at 30%) had
    sent 10% missing to the masked kernel too, untested there and 1.5x slower on PoCL, where
    0.25 has the same effect at 30% and leaves 10% to the defaults."""

    name: str
    fraction: float
    values: Sequence[float]

    def __call__(self, best: Dict[str, object], base: Dict[str, object]) -> Dict[str, object]:
        name, fraction = self.name, self.fraction
        if name not in best:
            return best
        chosen_below = fraction <= best[name]
        if chosen_below == (fraction <= base[name]):
            return dict(best, **{name: base[name]})
        if chosen_below:
            return dict(best, **{name: min(v for v in self.values if v >= fraction)})
        return dict(best, **{name: max(v for v in self.values if v < fraction)})


def _pearson_workloads(be) -> List[Workload]:
    import clnet

    out = []
    rng = np.random.default_rng(3)
    for rows in (1000, 4000):
        base = rng.normal(size=(rows, 200)).cumsum(axis=1)
        for label, missing in (("complete", 0.0), ("5% missing", 0.05), ("30% missing", 0.3)):
            X = base.copy()
            if missing:
                X[rng.random(X.shape) < missing] = np.nan

            def run(X=X, backend=None, dtype="float32"):
                return [clnet.pearson_topk(X, 10, backend=backend or be, dtype=dtype, progress=False)[1]]
            # complete data runs only the complete-data kernel, missing data never runs it: each
            # tunes its own tile, so that neither overwrites the other's in the shape's entry
            relevant = ((lambda name: name not in ("row_block", "sparse_rows", "sparse_missing_max")) if not missing
                        else (lambda name: name not in ("complete_rows", "complete_cols")))
            # the fraction the backend compares with sparse_missing_max (clnet/opencl/pearson.py)
            settle = ThresholdSettle("sparse_missing_max", float(np.isnan(X).mean()),
                                     FAMILIES["pearson"].param("sparse_missing_max").values)
            out.append(Workload("pearson", {"rows": rows}, f"N={rows} {label}", run,
                                run(backend="numpy", dtype="float64"), run(backend="numpy"), "pearson", relevant,
                                settle))
    return out


def _transfers_workloads(be) -> List[Workload]:
    """Calls made of many small transfers: an optimiser's update of two small LSTMs learning as
    one group (new weights laid out, the sequence recorded and run backwards: a PPO minibatch
    of the zoo's 64-unit network), and a small batch's sequence and steps."""
    import clnet
    from ..conformance.rnn import make_cell

    rng = np.random.default_rng(5)
    T, B, I, H = 32, 8, 4, 64
    cells = [make_cell("lstm", I, H, True, seed) for seed in (6, 7)]
    group = clnet.CellGroup(cells)
    weights = [{k: v.copy() for k, v in cell.state_dict().items()} for cell in cells]
    xs = rng.normal(size=(T, B, I))
    resets = rng.random((T, B)) < 0.05
    grad_hs = rng.normal(size=(2, T, B, H))

    def update(backend=None, dtype="float32"):
        out = []
        for _ in range(3):  # new weights each time, as after every optimiser step
            for cell, w in zip(cells, weights):
                cell.load_state_dict(w)
            rec = group.record_sequence(xs, None, resets, backend=backend or be, dtype=dtype)
            grads = rec.backward(grad_hs, inputs=False)
            out = [np.asarray(rec.hs)] + [np.asarray(g[k]) for g in grads for k in sorted(g) if g[k] is not None]
        return out

    cell = make_cell("lstm", I, 2 * H, True, 8)
    steps_x = rng.normal(size=(16, B, I))

    def steps(backend=None, dtype="float32"):
        state = cell.initial_state(B, backend=backend or be, dtype=dtype)
        return [np.stack([cell.step(x, state) for x in steps_x]), np.asarray(cell.sequence(steps_x, state))]
    return [Workload("transfers", {}, label, run, run(backend="numpy", dtype="float64"), run(backend="numpy"), tol)
            for label, run, tol in (("PPO update T=32 B=8", update, "bptt"), ("steps B=8", steps, "rnn"))]


WORKLOADS = {"fnn": _fnn_workloads, "rnn": _rnn_workloads, "bptt": _bptt_workloads, "pearson": _pearson_workloads,
             "transfers": _transfers_workloads}


@dataclass
class Outcome:
    family: str
    label: str
    shape: Dict[str, object]
    params: Dict[str, object]
    seconds: float
    default_seconds: float
    rejected: List[str]
    candidates: int = 0  # configurations measured besides the defaults (0: the budget ran out first)
    unconfirmed: Optional[Dict[str, object]] = None  # the search's winner, dropped when re-timing did not confirm it
    changed: Optional[Dict[str, object]] = None  # the parameters where the winner differs from the defaults


def _accuracy(work: Workload, got: Sequence[np.ndarray]):
    """(worst ratio of error to the tolerance table's bound over the outputs, the first
    failing output's message or None)."""
    from ..conformance import Comparison, compare

    worst, first = 0.0, None
    for i, (g, r, c) in enumerate(zip(got, work.reference, work.control)):
        ratio, _, msg = compare(Comparison(f"output {i}", np.asarray(g), r, c), work.tolerance_family, np.float32)
        worst = max(worst, ratio)
        if msg and first is None:
            first = " ".join(msg.split())[:240]
    return worst, first


def _agrees(work: Workload, got: Sequence[np.ndarray]) -> Optional[str]:
    """None when ``got`` matches the reference within the tolerance table, else why not."""
    return _accuracy(work, got)[1]


def _confirmed(tuning, family_name: str, run: Callable[[], object], best: Dict[str, object],
               base: Dict[str, object], rounds: int = CONFIRM_ROUNDS):
    """(median seconds of ``best``, of ``base``), timed in alternating rounds so that drift
    in the machine's load falls on both alike."""
    times: Dict[int, List[float]] = {0: [], 1: []}
    for _ in range(rounds):
        for i, config in enumerate((best, base)):
            with tuning.overriding(family_name, config):
                t0 = time.perf_counter()
                run()
                times[i].append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def _timed(run: Callable[[], object], min_seconds: float = 0.15, max_repeats: int = 5) -> float:
    best, spent, n = float("inf"), 0.0, 0
    while n < max_repeats and (n < 2 or spent < min_seconds):
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        best, spent, n = min(best, dt), spent + dt, n + 1
    return best


class _Progress:
    """tqdm's bar when it is installed, else a line per step on stderr."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.bar = None
        self.enabled = enabled
        self.label = label
        self.done = 0
        self.total = total
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc=label, unit="candidate", leave=False)
            except ImportError:
                pass

    def step(self, text: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            print(f"  [{self.done}/{self.total}] {self.label}: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def coordinates(family) -> List[tuple]:
    """The search's coordinates, in declaration order: (names, the values to try), one per
    parameter, except that a coupled set (TunableFamily.coupled) is one coordinate whose
    values are every combination of its parameters' values."""
    grouped = {name: names for names in family.coupled for name in names}
    out, seen = [], set()
    for p in family.params:
        names = grouped.get(p.name, (p.name,))
        if names in seen:
            continue
        seen.add(names)
        out.append((names, list(itertools.product(*(family.param(n).values for n in names)))))
    return out


def _without_idle_changes(tuning, family_name: str, work: Workload, best: Dict[str, object], best_s: float,
                          base: Dict[str, object], allowed: Callable[[Dict[str, object]], bool],
                          deadline: float = float("inf"), limit_ratio: float = 1.0):
    """``best`` with each changed coordinate (a parameter, or a coupled set together) put back
    to its defaults where that is not measurably slower (within the search's margin). A value
    can win the search by noise alone while doing nothing at this workload, like a missing-data
    threshold on either side of its fraction, and would then decide calls it was never
    measured on. Stops at ``deadline``; a put-back must be as accurate as the search required."""
    family = FAMILIES[family_name]
    for names, _ in coordinates(family):
        changed = [n for n in names if n in best and best[n] != base[n]]
        if not changed or time.perf_counter() > deadline:
            continue
        cand = dict(best, **{n: base[n] for n in names if n in best})
        if not allowed(cand):
            continue
        with tuning.overriding(family_name, cand):
            if _accuracy(work, work.run())[0] > limit_ratio:
                continue
        # alternating rounds, medians: one timing each decides nothing on a noisy CPU
        kept_s, reverted_s = _confirmed(tuning, family_name, work.run, best, cand, rounds=3)
        if reverted_s * MARGIN <= kept_s:
            best, best_s = cand, reverted_s
    return best, best_s


def tune_family(be, family_name: str, budget: float, progress: bool = True, echo=print) -> List[Outcome]:
    """Tune one family on ``be`` within ``budget`` seconds; returns one outcome per workload
    (the tuned entries are not saved here, see :func:`tune`)."""
    family = FAMILIES[family_name]
    tuning: DeviceTuning = be.tuning
    works = WORKLOADS[family_name](be)
    deadline = time.perf_counter() + budget
    per_work = budget / max(1, len(works))
    outcomes = []
    # Candidates, for the progress bar's total: the values of every relevant coordinate per pass.
    total = sum(sum(len(values) for names, values in coordinates(family) if all(map(w.relevant, names)))
                for w in works)
    bar = _Progress(total, f"tune {family_name} on {be.spec}", progress)
    try:
        for wi, work in enumerate(works):
            work_deadline = min(deadline, time.perf_counter() + per_work * (1.5 if wi + 1 < len(works) else 1.0))
            base = family.defaults(tuning.props, work.shape)
            rejected: List[str] = []
            tried: Dict[tuple, float] = {}
            # Where the defaults themselves exceed the table (a guard: long float32 sums did,
            # before clnet_bptt_gemm summed in blocks), candidates must be at least about as
            # accurate as the defaults.
            limit = {"ratio": 1.0}

            def measure(config) -> float:
                key = tuple(sorted(config.items()))
                if key in tried:
                    return tried[key]
                with tuning.overriding(family_name, config):
                    ratio, problem = _accuracy(work, work.run())  # also warms up: compiles, uploads
                    ok = ratio <= limit["ratio"]
                    seconds = _timed(work.run) if ok else float("inf")
                if not ok:
                    rejected.append(f"{config}: {problem or f'error {ratio:.2f} of the bound'}")
                tried[key] = seconds
                return seconds

            with tuning.overriding(family_name, base):
                default_ratio, default_problem = _accuracy(work, work.run())
            if default_problem:
                limit["ratio"] = 1.25 * default_ratio
                echo(f"  note: {work.label}: the defaults exceed the tolerance table ({default_ratio:.2f} of the bound: "
                     f"{default_problem}); candidates must stay within {limit['ratio']:.2f}")
            default_seconds = measure(base)
            best, best_s = dict(base), default_seconds
            for _ in range(PASSES):
                improved = False
                for names, values in coordinates(family):
                    if not all(map(work.relevant, names)):
                        continue
                    for combo in values:
                        if time.perf_counter() > work_deadline:
                            break
                        change = dict(zip(names, combo))
                        what = " ".join(f"{k}={v}" for k, v in change.items())
                        cand = dict(best, **change)
                        if cand == best or not family.allowed(cand, tuning.props, work.shape):
                            bar.step(f"{work.label} {what} (skipped)")
                            continue
                        s = measure(cand)
                        bar.step(f"{work.label} {what}: {s * 1e3:.2f} ms")
                        if s < best_s * MARGIN:  # a clear gain only: timings on a CPU are noisy
                            best, best_s, improved = cand, s, True
                if not improved:
                    break
            best = work.settle(best, base)  # the same kernels at this workload: its timing stands
            best, best_s = _without_idle_changes(tuning, family_name, work, best, best_s, base,
                                                 lambda c: family.allowed(c, tuning.props, work.shape),
                                                 work_deadline, limit["ratio"])
            if best == base:  # every change put back: the defaults, as first measured
                best_s = default_seconds
            unconfirmed = None
            if best != base:
                best_s, default_seconds = _confirmed(tuning, family_name, work.run, best, base)
                if not best_s < default_seconds * MARGIN:  # the gain did not hold: keep the defaults
                    unconfirmed = {k: v for k, v in best.items() if v != base[k]}
                    best, best_s = dict(base), default_seconds
            relevant = {k: v for k, v in best.items() if work.relevant(k)}
            outcomes.append(Outcome(family_name, work.label, dict(work.shape), relevant, best_s, default_seconds,
                                    rejected, len(tried) - 1, unconfirmed,
                                    {k: v for k, v in relevant.items() if v != base[k]}))
    finally:
        bar.close()
    return outcomes


def entries_from(outcomes: Iterable[Outcome], props=None) -> Dict[str, List[dict]]:
    """Cache entries: one per family and shape, merging the workloads measured at that shape
    (FNN's layered and graph workloads tune different parameters; Pearson's complete, few- and
    many-missing workloads share some). A workload contributes only the parameters its winner
    changed from the defaults; where two changed the same one, the value of the workload that
    saved the most time stands (before, the last workload's whole configuration replaced the
    others', defaults included, so that a tuned tile of the complete-data kernel was lost)."""
    merged: Dict[tuple, dict] = {}
    saved_by: Dict[tuple, float] = {}
    best_single: Dict[tuple, tuple] = {}  # per shape: (time saved, changes) of the best workload
    for o in outcomes:
        if o.candidates <= 0:
            continue  # nothing was compared: no entry, the shape stays on the defaults
        key = (o.family, tuple(sorted(o.shape.items())))
        row = merged.setdefault(key, {"shape": dict(o.shape), "params": {}, "seconds": 0.0,
                                      "default_seconds": 0.0})
        changed = o.params if o.changed is None else o.changed
        gain = o.default_seconds - o.seconds
        if key not in best_single or gain > best_single[key][0]:
            best_single[key] = (gain, dict(changed))
        for name, value in changed.items():
            if name not in row["params"] or gain > saved_by[key + (name,)]:
                row["params"][name] = value
                saved_by[key + (name,)] = gain
        row["seconds"] += o.seconds
        row["default_seconds"] += o.default_seconds
    out: Dict[str, List[dict]] = {}
    for key, row in merged.items():
        family = key[0]
        if props is not None:  # a merge no workload ran as a whole must still be a valid one
            fam = FAMILIES[family]
            if not fam.allowed(dict(fam.defaults(props, row["shape"]), **row["params"]), props, row["shape"]):
                row["params"] = best_single[key][1]
        out.setdefault(family, []).append(row)
        for twin in SAME_KERNELS.get(row["shape"].get("kind"), ()):
            out[family].append(dict(row, shape=dict(row["shape"], kind=twin)))
    return out


def tune(be, families: Optional[Sequence[str]] = None, budget: float = DEFAULT_BUDGET, progress: bool = True,
         echo=print) -> Dict[str, List[Outcome]]:
    """Tune ``families`` (default: all) on the OpenCL backend ``be`` and save the winners to
    its cache file. Returns the outcomes by family."""
    names = list(families or FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r}: expected one of {sorted(FAMILIES)}")
    if not isinstance(getattr(be, "tuning", None), DeviceTuning):
        raise ValueError(f"backend {be.spec!r} has no tunable kernels (only OpenCL devices are tuned)")
    weight = sum(WEIGHTS[n] for n in names)
    results = {}
    for name in names:
        share = budget * WEIGHTS[name] / weight
        echo(f"{be.spec} ({be.description}): tuning {name} within {share:.0f} s")
        outcomes = tune_family(be, name, share, progress=progress, echo=echo)
        # after each family: an interrupted run keeps what it found
        be.tuning.save(entries_from(outcomes, be.tuning.props))
        for o in outcomes:
            if o.candidates <= 0:
                echo(f"  {o.label:<22} default {o.default_seconds * 1e3:9.2f} ms  not tuned: the budget ran out "
                     f"first (a larger --budget tunes it)")
                continue
            gain = o.default_seconds / o.seconds if o.seconds and np.isfinite(o.seconds) else float("nan")
            changed = {k: v for k, v in o.params.items()
                       if v != FAMILIES[name].defaults(be.tuning.props, o.shape).get(k)}
            echo(f"  {o.label:<22} default {o.default_seconds * 1e3:9.2f} ms  tuned {o.seconds * 1e3:9.2f} ms "
                 f"({gain:4.2f}x)  {changed or 'defaults kept'}"
                 + (f" (search's pick {o.unconfirmed} not confirmed on re-timing)" if o.unconfirmed else ""))
            for r in o.rejected:
                echo(f"    REJECTED (disagrees with the float64 reference): {r}")
        results[name] = outcomes
    echo(f"saved {be.tuning.path}")
    return results
