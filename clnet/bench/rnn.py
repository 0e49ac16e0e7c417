"""Benchmark of the recurrent cells: ``python -m clnet bench rnn [--backend SPEC] [--repeat N] [--quick] [--stacked-only]``.

Every figure is measured in this one run, on this machine, on every usable OpenCL device
(untuned: its declared default parameters; tuned: its tuning file from python -m clnet tune):
clnet's LSTM (state on the device) against ``torch.nn.LSTMCell`` stepped in a Python loop
under ``no_grad`` (what RL code with episode resets does), ``torch.nn.LSTM`` (a whole
sequence through oneDNN, no resets possible), the NumPy fallback, and NumPy's float32 matrix
product as the machine's practical compute roof. float32 throughout; flops of one LSTM step:
2 * B * 4H * (I + H). Each case sweeps three shapes (the first is the headline one); a target
holds only if it holds at every shape.

1. One step with 1% episode resets, B=256 I=128 H=256 (and B=250, B=1000).
   Target: at least 1.3x torch.nn.LSTMCell.
2. Sequences of T=100 steps at small batches, B=16 I=64 H=128 (and B=13, B=30).
   Targets: without resets at least 1.2x torch.nn.LSTM; with 5% resets per step at least 4x
   the torch.nn.LSTMCell loop.
3. Sequences at large batches, B=1024 I=256 H=512 (and B=1000, B=1500), T=25 steps (the rate
   per step no longer depends on T at these batches). Targets: at least 80% of numpy's
   float32 matmul rate measured in the same run, and at least 1.0x torch.nn.LSTM.
4. A stacked ``clnet.LSTM(num_layers=2)`` with the weights of a ``torch.nn.LSTM(num_layers=2)``
   (``clnet.LSTM.from_torch``), whole sequences through both at B=16, 100, 256, with the
   largest difference of their outputs (target: below 1e-4, float32). ``--stacked-only`` runs
   this case alone.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import _cli as cli

import clnet

from . import (Roofs, Target, add_device_options, best_time, compare, device_rows, devices, header, optional_torch,
               shape_text, summarise, TORCH_HINT)

# Headline shape first in each sweep; the others are not multiples of 16 or of any tile height.
STEP_SHAPES = (dict(B=256, I=128, H=256), dict(B=250, I=100, H=200), dict(B=1000, I=128, H=200))
SMALL_SHAPES = (dict(B=16, I=64, H=128, T=100), dict(B=13, I=50, H=100, T=100), dict(B=30, I=64, H=200, T=100))
LARGE_SHAPES = (dict(B=1024, I=256, H=512, T=25), dict(B=1000, I=250, H=500, T=25),
                dict(B=1500, I=128, H=300, T=25))
STACKED_SHAPES = (dict(B=16, I=64, H=128, T=100), dict(B=100, I=64, H=128, T=100), dict(B=256, I=64, H=128, T=100))
QUICK = dict(step=(dict(B=4, I=3, H=5), dict(B=7, I=5, H=9), dict(B=13, I=6, H=11)),
             small=(dict(B=2, I=3, H=5, T=3), dict(B=3, I=4, H=7, T=4), dict(B=5, I=3, H=6, T=5)),
             large=(dict(B=9, I=5, H=7, T=2), dict(B=11, I=6, H=13, T=2), dict(B=17, I=5, H=9, T=3)),
             stacked=(dict(B=2, I=3, H=5, T=3), dict(B=5, I=3, H=5, T=3), dict(B=7, I=3, H=5, T=4)))
RESET_RATE = 0.01  # share of environments whose episode ends at each step
LAYERS = 2
STACKED_TOL = 1e-4  # float32 bound on max |clnet - torch| of the outputs


def lstm_flops(B, I, H) -> float:
    return 2.0 * B * 4 * H * (I + H)


@dataclass
class Context:
    devs: list
    torch: object
    repeat: int
    shapes: dict
    roofs: Roofs
    echo: Callable[[str], None] = print


def _rate(seconds: float, flops: float) -> str:
    return f"{seconds * 1e6:11.1f} us/step {flops / seconds / 1e9:7.1f} GFLOP/s"


def case_step(ctx: Context) -> None:
    echo, torch = ctx.echo, ctx.torch
    echo(f"\n== case 1: one step with {RESET_RATE:.0%} resets (state on the device)")
    target = Target(">= 1.3x torch.nn.LSTMCell", 1.3, skipped=TORCH_HINT)
    rng = np.random.default_rng(0)
    for si, shape in enumerate(ctx.shapes["step"]):
        B, I, H = shape["B"], shape["I"], shape["H"]
        fl = lstm_flops(B, I, H)
        cell = clnet.LSTMCell(I, H, seed=1)
        x = rng.standard_normal((B, I)).astype(np.float32)
        done = rng.random(B) < RESET_RATE
        np_state = cell.initial_state(B, backend="numpy")
        peers = {"numpy fallback": lambda: cell.step(x, np_state, reset=done)}
        if torch is not None:
            tcell = torch.nn.LSTMCell(I, H)
            xt = torch.from_numpy(x)
            keep = torch.from_numpy((~done).astype(np.float32))[:, None]
            hc = [torch.zeros(B, H), torch.zeros(B, H)]

            def torch_step():
                with torch.no_grad():
                    hc[:] = tcell(xt, (hc[0] * keep, hc[1] * keep))
                return hc[0].numpy()

            peers["torch.nn.LSTMCell (no_grad)"] = torch_step

        def make(d):
            state = cell.initial_state(B, backend=d.backend)
            return lambda: cell.step(x, state, reset=done)

        peer_t, dev_t = compare(ctx.devs, peers, make, ctx.repeat, 20)
        echo(f"  -- shape {si + 1}/{len(ctx.shapes['step'])}: {shape_text(shape)} ({fl / 1e6:.1f} MFLOP/step)")
        for label, t in peer_t.items():
            echo(f"     {label:<40} {_rate(t, fl)}")
        t_torch = peer_t.get("torch.nn.LSTMCell (no_grad)")
        device_rows(ctx.devs, dev_t, lambda t: _rate(t, fl) + (f" {t_torch / t:6.2f}x torch.nn.LSTMCell"
                                                              if t_torch else ""), echo=echo)
        if t_torch:
            for d in ctx.devs:
                tu, tt = dev_t[d.spec]["untuned"], dev_t[d.spec]["tuned"]
                target.add(d.spec, shape, t_torch / tt, t_torch / tu, ctx.roofs.flops(fl / tt / 1e9))
    summarise([target], ctx.devs, echo)


def case_small_sequences(ctx: Context) -> None:
    echo, torch = ctx.echo, ctx.torch
    echo("\n== case 2: sequences at small batches, with 5% resets per step and without")
    no_resets = Target(">= 1.2x torch.nn.LSTM without resets", 1.2, skipped=TORCH_HINT)
    with_resets = Target(">= 4x the torch.nn.LSTMCell loop with resets", 4.0, skipped=TORCH_HINT)
    rng = np.random.default_rng(1)
    for si, shape in enumerate(ctx.shapes["small"]):
        B, I, H, T = (shape[k] for k in "BIHT")
        fl = lstm_flops(B, I, H)
        cell = clnet.LSTMCell(I, H, seed=2)
        xs = rng.standard_normal((T, B, I)).astype(np.float32)
        resets = rng.random((T, B)) < RESET_RATE * 5
        np_state = cell.initial_state(B, backend="numpy")
        peers = {"numpy fallback, resets": lambda: cell.sequence(xs, np_state, resets)}
        if torch is not None:
            tcell = torch.nn.LSTMCell(I, H)
            tlstm = torch.nn.LSTM(I, H)
            xst = torch.from_numpy(xs)
            keeps = torch.from_numpy((~resets).astype(np.float32))[:, :, None]

            def torch_loop():
                h = torch.zeros(B, H)
                c = torch.zeros(B, H)
                with torch.no_grad():
                    for t in range(T):
                        h, c = tcell(xst[t], (h * keeps[t], c * keeps[t]))
                return h

            def torch_lstm():
                with torch.no_grad():
                    return tlstm(xst)[0]

            peers["torch.nn.LSTMCell loop, resets (no_grad)"] = torch_loop
            peers["torch.nn.LSTM, no resets (no_grad)"] = torch_lstm

        def make(d):
            state = cell.initial_state(B, backend=d.backend)
            return {"resets": lambda: cell.sequence(xs, state, resets), "no resets": lambda: cell.sequence(xs, state)}

        # A sequence here takes milliseconds: more rounds cost little and steady the figures.
        peer_t, dev_t = compare(ctx.devs, peers, make, 4 * ctx.repeat)
        echo(f"  -- shape {si + 1}/{len(ctx.shapes['small'])}: {shape_text(shape)} ({fl / 1e6:.2f} MFLOP/step)")
        for label, t in peer_t.items():
            echo(f"     {label:<40} {_rate(t / T, fl)}")
        t_loop = peer_t.get("torch.nn.LSTMCell loop, resets (no_grad)")
        t_lstm = peer_t.get("torch.nn.LSTM, no resets (no_grad)")
        for name, peer, peer_name in (("resets", t_loop, "the LSTMCell loop"), ("no resets", t_lstm, "torch.nn.LSTM")):
            device_rows(ctx.devs, {s: {v: ts[name] for v, ts in vs.items()} for s, vs in dev_t.items()},
                        lambda t: _rate(t / T, fl) + (f" {peer / t:6.2f}x {peer_name}" if peer else ""),
                        label=name, echo=echo)
        if torch is not None:
            for d in ctx.devs:
                u, t = dev_t[d.spec]["untuned"], dev_t[d.spec]["tuned"]
                no_resets.add(d.spec, shape, t_lstm / t["no resets"], t_lstm / u["no resets"],
                              ctx.roofs.flops(fl * T / t["no resets"] / 1e9))
                with_resets.add(d.spec, shape, t_loop / t["resets"], t_loop / u["resets"],
                                ctx.roofs.flops(fl * T / t["resets"] / 1e9))
    summarise([no_resets, with_resets], ctx.devs, echo)


def case_large_sequences(ctx: Context) -> None:
    echo, torch = ctx.echo, ctx.torch
    echo("\n== case 3: sequences at large batches (throughput), no resets")
    echo(f"  numpy float32 matmul: {ctx.roofs.matmul:.1f} GFLOP/s")
    share = Target(">= 80% of numpy's float32 matmul rate", 0.8, unit="%")
    vs_torch = Target(">= 1.0x torch.nn.LSTM", 1.0, skipped=TORCH_HINT)
    rng = np.random.default_rng(2)
    rates = []  # (shape, spec, tuned GFLOP/s, untuned GFLOP/s): shares need the final roof
    for si, shape in enumerate(ctx.shapes["large"]):
        B, I, H, T = (shape[k] for k in "BIHT")
        fl = lstm_flops(B, I, H)
        cell = clnet.LSTMCell(I, H, seed=3)
        xs = rng.standard_normal((T, B, I)).astype(np.float32)
        fb_steps = min(T, 5)
        t_np = best_time(lambda: cell.sequence(xs[:fb_steps], cell.initial_state(B, backend="numpy")),
                                     1) / fb_steps
        peers = {}
        if torch is not None:
            tlstm = torch.nn.LSTM(I, H)
            xst = torch.from_numpy(xs)

            def torch_lstm():
                with torch.no_grad():
                    return tlstm(xst)[0]

            peers["torch.nn.LSTM (no_grad)"] = torch_lstm

        def make(d):
            state = cell.initial_state(B, backend=d.backend)
            return lambda: cell.sequence(xs, state)

        peer_t, dev_t = compare(ctx.devs, peers, make, max(1, ctx.repeat // 2))
        echo(f"  -- shape {si + 1}/{len(ctx.shapes['large'])}: {shape_text(shape)} ({fl / 1e9:.2f} GFLOP/step)")
        echo(f"     {'numpy fallback (first ' + str(fb_steps) + ' steps)':<40} {_rate(t_np, fl)}")
        for label, t in peer_t.items():
            echo(f"     {label:<40} {_rate(t / T, fl)} {fl * T / t / 1e9 / ctx.roofs.matmul:5.0%} of matmul")
        t_lstm = peer_t.get("torch.nn.LSTM (no_grad)")
        device_rows(ctx.devs, dev_t, lambda t: _rate(t / T, fl) + f" {fl * T / t / 1e9 / ctx.roofs.matmul:5.0%} of "
                    "matmul" + (f" {t_lstm / t:6.2f}x torch.nn.LSTM" if t_lstm else ""), echo=echo)
        for d in ctx.devs:
            u, t = dev_t[d.spec]["untuned"], dev_t[d.spec]["tuned"]
            rates.append((shape, d.spec, fl * T / t / 1e9, fl * T / u / 1e9))
            if t_lstm:
                vs_torch.add(d.spec, shape, t_lstm / t, t_lstm / u, ctx.roofs.flops(fl * T / t / 1e9))
    # Measured again after the case, the higher figure kept (see Roofs).
    ctx.roofs.measure()
    echo(f"  numpy float32 matmul, best of both measurements: {ctx.roofs.matmul:.1f} GFLOP/s")
    for shape, spec, tuned, untuned in rates:
        share.add(spec, shape, tuned / ctx.roofs.matmul, untuned / ctx.roofs.matmul, ctx.roofs.flops(tuned))
    summarise([share, vs_torch], ctx.devs, echo)


def case_stacked(ctx: Context) -> None:
    """Case 4: ``clnet.LSTM(num_layers=2).sequence`` against ``torch.nn.LSTM(num_layers=2)``."""
    echo, torch = ctx.echo, ctx.torch
    echo(f"\n== case 4: stacked LSTM, {LAYERS} layers, whole sequences (weights from torch.nn.LSTM)")
    accuracy = Target(f"max |clnet - torch| of the outputs <= {STACKED_TOL:g} (float32)", STACKED_TOL, unit="",
                      higher=False, skipped=TORCH_HINT)
    rng = np.random.default_rng(4)  # its own generator: the same inputs when run alone
    for si, shape in enumerate(ctx.shapes["stacked"]):
        B, I, H, T = (shape[k] for k in "BIHT")
        fl = lstm_flops(B, I, H) + (LAYERS - 1) * lstm_flops(B, H, H)
        xs = rng.standard_normal((T, B, I)).astype(np.float32)
        peers = {}
        if torch is not None:
            tlstm = torch.nn.LSTM(I, H, num_layers=LAYERS)
            model = clnet.LSTM.from_torch(tlstm)
            xst = torch.from_numpy(xs)

            def torch_lstm():
                with torch.no_grad():
                    return tlstm(xst)[0]

            peers[f"torch.nn.LSTM(num_layers={LAYERS})"] = torch_lstm
        else:
            model = clnet.LSTM(I, H, LAYERS, seed=4)

        def make(d):
            states = model.initial_state(B, backend=d.backend)
            return lambda: model.sequence(xs, states)

        # More rounds at small batches, where a sequence takes milliseconds.
        rounds = 4 * ctx.repeat if B <= 16 else ctx.repeat
        peer_t, dev_t = compare(ctx.devs, peers, make, rounds)
        echo(f"  -- shape {si + 1}/{len(ctx.shapes['stacked'])}: {shape_text(shape)} ({fl / 1e6:.1f} MFLOP/step)")
        for label, t in peer_t.items():
            echo(f"     {label:<40} {_rate(t / T, fl)}")
        t_torch = peer_t.get(f"torch.nn.LSTM(num_layers={LAYERS})")
        device_rows(ctx.devs, dev_t, lambda t: _rate(t / T, fl) + (f" {t_torch / t:6.2f}x torch.nn.LSTM"
                                                                  if t_torch else ""), echo=echo)
        if torch is not None:
            with torch.no_grad():
                want = tlstm(xst)[0].numpy().astype(np.float64)
            for d in ctx.devs:
                diffs = {}
                for variant in d.measured:
                    with d.scope(variant):  # both from zero states: the timed states have run on
                        out = model.sequence(xs, model.initial_state(B, backend=d.backend))
                    diffs[variant] = float(np.max(np.abs(out.astype(np.float64) - want)))
                diffs.setdefault("tuned", diffs["untuned"])
                echo(f"     {d.spec} max |clnet - torch| of the outputs: untuned {diffs['untuned']:.1e}, "
                     f"tuned {diffs['tuned']:.1e}")
                accuracy.add(d.spec, shape, diffs["tuned"], diffs["untuned"])
    summarise([accuracy], ctx.devs, echo)


CASES = (case_step, case_small_sequences, case_large_sequences, case_stacked)


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench rnn", __doc__)
    add_device_options(parser, 5, "tiny shapes (for tests; the figures mean little)")
    parser.add_argument("--stacked-only", action="store_true",
                        help="run only case 4, the stacked LSTM against torch.nn.LSTM(num_layers=2)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    devs = devices(args.backend)
    header("bench rnn", devs)
    torch = optional_torch()
    if torch is not None:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    shapes = QUICK if args.quick else dict(step=STEP_SHAPES, small=SMALL_SHAPES, large=LARGE_SHAPES,
                                           stacked=STACKED_SHAPES)
    ctx = Context(devs, torch, args.repeat, shapes, Roofs(args.quick))
    for case in ((case_stacked,) if args.stacked_only else CASES):
        case(ctx)
    return 0
