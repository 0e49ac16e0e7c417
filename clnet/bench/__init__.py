"""Benchmarks run by ``python -m clnet bench NAME``: ratios against peers measured in one run.

Every benchmark measures each usable OpenCL device (or the ``--backend`` devices named),
twice: "untuned", on the parameters each kernel family declares as its defaults for the
device, and "tuned", on the device's tuning file (``python -m clnet tune``). Each case sweeps
several shapes; a target holds for a device only if it holds at every shape.

The helpers here time contenders fairly on a machine shared with other work: every
contender runs once to warm up, then all of them (the peers and every device and variant)
run in alternating rounds (the order rotating each round) and each keeps its best time, so
that load slows them alike. The peers run once per shape, not once per device.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

TORCH_HINT = ("torch is not installed: the PyTorch peers are skipped. Install the pinned CPU build with "
              "pip install torch==2.13.0 (any other version may download several GB).")
NOT_TUNED = "not tuned: run python -m clnet tune"
VARIANTS = ("untuned", "tuned")


# A function whose call takes less than this gets one untimed call of its own right before
# each timed round. Otherwise what ran just before it is part of its time: torch's threads
# still spinning, another contender's data in the caches, a runtime's worker threads asleep.
# With fewer rounds than contenders the same one also always follows the same neighbour: PoCL's
# untuned LSTM step, always timed right after torch's, measured 0.72x torch against 1.16x for
# the very same configuration timed one place later. Long calls (neat-python's whole batch,
# pandas) are timed as they are: such effects are lost in them, and a second call would
# double the benchmark's time.
WARM_BELOW = 0.1


def best_times(fns: List[Callable[[], object]], repeat: int, number: int = 1, pause: float = 0.0) -> List[float]:
    """Seconds per call of each function: the best of ``repeat`` rounds of ``number`` calls.

    ``pause`` sleeps before each timed call: torch's OpenMP threads keep spinning for a
    while after a call and would otherwise slow whatever runs next on a small machine.
    A function faster than :data:`WARM_BELOW` is called once, untimed, before each round.
    """
    first = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        first.append(time.perf_counter() - t0)
    best = [float("inf")] * len(fns)
    for r in range(repeat):
        for j in range(len(fns)):
            i = (j + r) % len(fns)
            if pause:
                time.sleep(pause)
            if first[i] < WARM_BELOW:
                fns[i]()
            t0 = time.perf_counter()
            for _ in range(number):
                fns[i]()
            best[i] = min(best[i], (time.perf_counter() - t0) / number)
    return best


def best_time(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Seconds per call of ``fn``: the best of ``repeat`` timings of ``number`` calls."""
    return best_times([fn], repeat, number)[0]


def optional_torch(echo=print):
    """The torch module, or None after saying how to install the right build."""
    try:
        import torch
    except ImportError:
        echo(TORCH_HINT)
        return None
    return torch


def line(label: str, seconds: float, per: str = "step", flops: Optional[float] = None) -> str:
    text = f"  {label:<52} {seconds * 1e6:10.1f} us/{per}"
    if flops:
        text += f"  {flops / seconds / 1e9:7.1f} GFLOP/s"
    return text


def ratio(label: str, value: float, target: Optional[float] = None) -> str:
    text = f"  {label:<52} {value:10.2f}x"
    if target is not None:
        text += f"   (target >= {target:g}x: {'met' if value >= target else 'NOT met'})"
    return text


def shape_text(shape: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in shape.items())


# -- the machine's roofs ----------------------------------------------------------------------
def matmul_gflops(repeat: int = 3, n: int = 2048) -> float:
    """NumPy's float32 matrix product rate (GFLOP/s): the machine's practical compute roof."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    return 2.0 * n ** 3 / best_time(lambda: a @ b, repeat, 1 if n >= 1024 else 20) / 1e9


def copy_gbytes(repeat: int = 3, mb: int = 256) -> float:
    """NumPy's copy bandwidth of a large float32 array (GB/s, bytes read plus bytes written)."""
    src = np.ones(mb * (1 << 20) // 4, np.float32)
    dst = np.empty_like(src)
    return 2.0 * src.nbytes / best_time(lambda: np.copyto(dst, src), repeat) / 1e9


class Roofs:
    """The matmul rate and copy bandwidth, measured on first use and again on request; the
    higher figure is kept (a machine shared with other work only ever lowers a measured rate)."""

    def __init__(self, quick: bool = False, echo=print):
        self.quick, self.echo = quick, echo
        self._matmul = 0.0
        self._copy = 0.0

    def measure(self) -> None:
        # Best of several short timings: on a loaded machine one quiet moment is enough.
        n, mb, repeat = (512, 32, 3) if self.quick else (2048, 256, 8)
        self._matmul = max(self._matmul, matmul_gflops(repeat, n))
        self._copy = max(self._copy, copy_gbytes(repeat, mb))

    @property
    def matmul(self) -> float:
        if not self._matmul:
            self.measure()
        return self._matmul

    @property
    def copy(self) -> float:
        if not self._copy:
            self.measure()
        return self._copy

    def flops(self, gflops: float) -> str:
        return (f"roofline: {gflops:.1f} GFLOP/s = {gflops / self.matmul:.0%} of numpy's float32 matmul "
                f"({self.matmul:.1f} GFLOP/s, this run)")

    def bytes(self, gbytes: float, what: str) -> str:
        return (f"{gbytes:.1f} GB/s ({what}) = {gbytes / self.copy:.0%} of numpy's copy bandwidth "
                f"({self.copy:.1f} GB/s, this run)")


# -- devices and their two variants ---------------------------------------------------------------
@dataclass
class Device:
    """One backend measured by a benchmark, with its untuned and tuned variants."""

    backend: object
    tuned: bool                   # has a tuning file: "tuned" is measured, not copied from "untuned"
    tunable: bool                 # has tunable kernels at all (OpenCL)

    @property
    def spec(self) -> str:
        return self.backend.spec

    @property
    def measured(self) -> Tuple[str, ...]:
        return VARIANTS if self.tuned else ("untuned",)

    def scope(self, variant: str):
        """A fresh context manager that runs the backend as ``variant``."""
        if variant == "untuned" and self.tunable:
            return self.backend.tuning.untuned()
        return contextlib.nullcontext()


def add_device_options(parser, repeat: int, quick_help: str) -> None:
    parser.add_argument("--backend", action="append", metavar="SPEC",
                        help="device to measure, repeatable (default: every usable OpenCL device, "
                             "as python -m clnet info lists them)")
    parser.add_argument("--repeat", type=int, default=repeat,
                        help=f"alternating timing rounds per shape; the best time is kept (default {repeat})")
    parser.add_argument("--quick", action="store_true", help=quick_help)


def devices(specs: Optional[Sequence[str]] = None, echo=print) -> List[Device]:
    """The devices to measure: ``specs``, else every usable OpenCL device, else (with a note)
    the NumPy fallback, so that the peers are still measured."""
    import clnet

    if specs:
        wanted = list(dict.fromkeys(specs))
    else:
        wanted = [i.spec for i in clnet.backends() if i.usable and i.spec.startswith("opencl")]
        if not wanted:
            echo("no usable OpenCL device (python -m clnet info says why): measuring the NumPy fallback only")
            wanted = ["numpy"]
    out, seen = [], set()
    for spec in wanted:
        be = clnet.get_backend(spec)
        if be.spec in seen:
            continue
        seen.add(be.spec)
        tuning = getattr(be, "tuning", None)
        tunable = tuning is not None and hasattr(tuning, "untuned")
        out.append(Device(be, tuned=bool(tunable and tuning.tuned), tunable=tunable))
    return out


def describe_devices(devs: Sequence[Device], echo=print) -> None:
    echo("devices:")
    for d in devs:
        if not d.tunable:
            state = "no tunable parameters: tuned = untuned"
        elif d.tuned:
            state = f"tuned ({d.backend.tuning.path})"
        else:
            state = f"{NOT_TUNED} (tuned figures = untuned)"
        echo(f"  {d.spec:<12} {d.backend.description}; {state}")


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows, with the core count."""
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for text in f:
                if text.startswith("model name"):
                    name = text.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def header(title: str, devs: Sequence[Device], echo=print) -> None:
    import clnet

    echo(f"{title}; clnet {clnet.__version__}; {cpu_name()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    try:
        import os
        load = os.getloadavg()[0]
        # Other work on the machine slows multi-threaded peers (OpenMP) more than it slows others.
        echo(f"load average {load:.1f} on {os.cpu_count()} cores at the start"
             + ("; the machine is busy with other work, figures are noisy" if load > 0.5 * (os.cpu_count() or 1) else ""))
    except (AttributeError, OSError):
        pass
    describe_devices(devs, echo)


def compare(devs: Sequence[Device], peers: Mapping[str, Callable[[], object]],
            make: Callable[[Device], object], repeat: int, number: int = 1,
            pause: float = 0.0) -> Tuple[Dict[str, float], Dict[str, Dict[str, object]]]:
    """Time ``peers`` and, for each device and measured variant, the call ``make(device)``
    returns, or each call of the dict of named calls it returns (``make`` runs inside the
    variant's scope, so any state it allocates is the variant's own), all in the same
    alternating rounds. Returns (peer seconds by label, {spec: {variant: seconds or
    {name: seconds}}}), with "tuned" copied from "untuned" for an untuned device."""
    labels: List[Tuple[str, Optional[str], Optional[str]]] = []
    fns: List[Callable[[], object]] = []
    for label, fn in peers.items():
        labels.append((label, None, None))
        fns.append(fn)
    for d in devs:
        for variant in d.measured:
            with d.scope(variant):
                made = make(d)
            calls = made if isinstance(made, Mapping) else {None: made}
            for name, call in calls.items():
                def timed(d=d, variant=variant, call=call):
                    with d.scope(variant):
                        return call()

                labels.append((d.spec, variant, name))
                fns.append(timed)
    times = best_times(fns, repeat, number, pause)
    peer_times: Dict[str, float] = {}
    dev_times: Dict[str, Dict[str, object]] = {}
    for (label, variant, name), t in zip(labels, times):
        if variant is None:
            peer_times[label] = t
        elif name is None:
            dev_times.setdefault(label, {})[variant] = t
        else:
            dev_times.setdefault(label, {}).setdefault(variant, {})[name] = t
    for d in devs:
        dev_times[d.spec].setdefault("tuned", dev_times[d.spec]["untuned"])
    return peer_times, dev_times


def device_rows(devs: Sequence[Device], times: Mapping[str, Mapping[str, float]],
                text: Callable[[float], str], label: str = "", echo=print, width: int = 40) -> None:
    """One row per device and variant: ``text(seconds)`` after the label."""
    for d in devs:
        for variant in VARIANTS:
            note = ""
            if variant == "tuned" and not d.tuned:
                note = f"  (= untuned; {NOT_TUNED})" if d.tunable else "  (= untuned: no tunable parameters)"
            echo(f"     {(d.spec + ' ' + variant + ' ' + label).rstrip():<{width}} {text(times[d.spec][variant])}{note}")


# -- targets -----------------------------------------------------------------------------------
@dataclass
class _Point:
    shape: str
    tuned: float
    untuned: float
    roofline: Optional[str]


@dataclass
class Target:
    """One target of a case, e.g. ``Target(">= 1.3x torch.nn.LSTMCell", 1.3)``: each device's
    tuned value at every shape, with its untuned value and a roofline figure for the report.
    ``higher`` is False for targets that are upper bounds (seconds, bytes)."""

    label: str
    threshold: float
    unit: str = "x"
    higher: bool = True
    key: str = ""                 # which figure of a case the target reads (the case's own name)
    skipped: str = "no figure"    # why a device has no figure (a peer is not installed)
    points: Dict[str, List[_Point]] = field(default_factory=dict)

    def met_by(self, value: float) -> bool:
        return value >= self.threshold if self.higher else value <= self.threshold

    def add(self, spec: str, shape: Mapping[str, object], tuned: float, untuned: float,
            roofline: Optional[str] = None) -> None:
        self.points.setdefault(spec, []).append(_Point(shape_text(shape), tuned, untuned, roofline))

    def fmt(self, value: float) -> str:
        if self.unit == "x":
            return f"{value:.2f}x"
        if self.unit == "%":
            return f"{value:.0%}"
        return f"{value:.3g} {self.unit}".rstrip()

    def summary(self, devs: Sequence[Device], echo=print) -> None:
        for d in devs:
            spec, points = d.spec, self.points.get(d.spec)
            if not points:
                echo(f"  {spec} target {self.label}: not measured ({self.skipped})")
                continue
            key = (lambda p: p.tuned) if self.higher else (lambda p: -p.tuned)
            worst = min(points, key=key)
            met = all(self.met_by(p.tuned) for p in points)
            echo(f"  {spec} target {self.label}: {'met' if met else 'NOT met'} "
                 f"(worst shape {worst.shape}: {self.fmt(worst.tuned)} tuned, {self.fmt(worst.untuned)} untuned; "
                 f"{len(points)} shape{'' if len(points) == 1 else 's'})")
            if not met and worst.roofline:
                echo(f"      {worst.roofline}")


def summarise(targets: Sequence[Target], devs: Sequence[Device], echo=print) -> None:
    echo("  summary (a target holds only if it holds at every shape; tuned figures):")
    for t in targets:
        t.summary(devs, echo)
