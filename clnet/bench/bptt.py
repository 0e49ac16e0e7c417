"""Benchmark of backpropagation through time: ``python -m clnet bench bptt [--backend SPEC] [--repeat N] [--quick]``.

Forward plus backward over a stored rollout, float32, on every usable OpenCL device (untuned:
its declared default parameters; tuned: its tuning file from python -m clnet tune), at three
shapes: T=64 B=64 I=32 H=128 (the headline one), T=50 B=50 I=30 H=100 and T=40 B=100 I=40
H=200. Every figure is measured in this one run in alternating rounds (best of ``--repeat``):

- clnet ``LSTMCell.backward_sequence`` (re-runs the forward saving its activations, then
  the backward, all on the device), with 1% episode resets per step and without;
- ``torch.nn.LSTM`` forward + ``.backward()`` through autograd (oneDNN; no resets possible);
- ``torch.nn.LSTMCell`` stepped in a Python loop with resets, forward + ``.backward()``
  (what recurrent RL code does when episodes end inside a rollout);
- the NumPy fallback's ``backward_sequence``.

Target: clnet without resets at least 1.2x torch.nn.LSTM forward + backward, at every shape.
Flops: forward 2 * T * B * 4H * (I + H); the backward about twice that.
"""
from __future__ import annotations


import numpy as np

from .. import _cli as cli

import clnet

from . import (Roofs, TORCH_HINT, Target, add_device_options, best_times, compare, device_rows, devices, header,
               optional_torch, shape_text, summarise)

SHAPES = (dict(T=64, B=64, I=32, H=128), dict(T=50, B=50, I=30, H=100), dict(T=40, B=100, I=40, H=200))
QUICK_SHAPES = (dict(T=3, B=2, I=3, H=5), dict(T=4, B=3, I=4, H=7), dict(T=5, B=5, I=3, H=9))
RESET_RATE = 0.01
# torch's OpenMP threads keep spinning for a while after each call and slow down whatever
# runs next on a 2-core machine (measured: 3 ms on a 9 ms call); a short pause before every
# timed call lets them sleep. The order of the contenders also rotates from round to round,
# so that none always runs after the same one (with its caches evicted by it).
PAUSE = 0.01
LSTM_PEER = "torch.nn.LSTM forward + backward (no resets)"
LOOP_PEER = "torch.nn.LSTMCell loop + backward, resets"


def flops_of(T, B, I, H) -> float:
    return 3 * 2.0 * T * B * 4 * H * (I + H)


def case_bptt(devs, torch, shapes, repeat, roofs, echo=print) -> None:
    echo("\n== case 1: forward + backward through time, float32")
    target = Target(">= 1.2x torch.nn.LSTM forward + backward", 1.2, skipped=TORCH_HINT)
    rng = np.random.default_rng(0)
    for si, shape in enumerate(shapes):
        T, B, I, H = (shape[k] for k in "TBIH")
        flops = flops_of(T, B, I, H)
        cell = clnet.LSTMCell(I, H, seed=1)
        xs = rng.standard_normal((T, B, I)).astype(np.float32)
        g = rng.standard_normal((T, B, H)).astype(np.float32)
        resets = rng.random((T, B)) < RESET_RATE
        h0 = np.zeros((B, H), np.float32)
        peers = {}
        if torch is not None:
            torch.manual_seed(0)
            lstm = torch.nn.LSTM(I, H)
            tcell = torch.nn.LSTMCell(I, H)
            x = torch.from_numpy(xs).requires_grad_()
            gt = torch.from_numpy(g)
            keep = torch.from_numpy((~resets).astype(np.float32))[:, :, None]

            def torch_lstm():
                lstm.zero_grad()
                x.grad = None
                out, _ = lstm(x)
                out.backward(gt)

            def torch_cell_loop():
                tcell.zero_grad()
                x.grad = None
                h = c = torch.zeros(B, H)
                outs = []
                for t in range(T):
                    h, c = tcell(x[t], (h * keep[t], c * keep[t]))
                    outs.append(h)
                torch.stack(outs).backward(gt)

            peers = {LSTM_PEER: torch_lstm, LOOP_PEER: torch_cell_loop}

        def make(d):
            return {"resets": lambda: cell.backward_sequence(xs, (h0, h0), resets, g, backend=d.backend),
                    "no resets": lambda: cell.backward_sequence(xs, (h0, h0), None, g, backend=d.backend)}

        peer_t, dev_t = compare(devs, peers, make, repeat, pause=PAUSE)
        (t_np,) = best_times([lambda: cell.backward_sequence(xs, (h0, h0), resets, g, backend="numpy")],
                             max(2, repeat // 4))
        echo(f"  -- shape {si + 1}/{len(shapes)}: {shape_text(shape)} (~{flops / 1e9:.3f} GFLOP)")
        echo(f"     {'numpy fallback, resets':<46} {t_np * 1e3:10.2f} ms {flops / t_np / 1e9:7.1f} GFLOP/s")
        for label, t in peer_t.items():
            echo(f"     {label:<46} {t * 1e3:10.2f} ms {flops / t / 1e9:7.1f} GFLOP/s")
        t_lstm, t_loop = peer_t.get(LSTM_PEER), peer_t.get(LOOP_PEER)
        for name, peer, peer_name in (("no resets", t_lstm, "torch.nn.LSTM"),
                                      ("resets", t_loop, "the LSTMCell loop")):
            device_rows(devs, {s: {v: ts[name] for v, ts in vs.items()} for s, vs in dev_t.items()},
                        lambda t: f"{t * 1e3:10.2f} ms {flops / t / 1e9:7.1f} GFLOP/s {t_np / t:6.1f}x numpy"
                        + (f" {peer / t:6.2f}x {peer_name}" if peer else ""), label=name, echo=echo, width=46)
        if t_lstm:
            for d in devs:
                u, t = dev_t[d.spec]["untuned"]["no resets"], dev_t[d.spec]["tuned"]["no resets"]
                target.add(d.spec, shape, t_lstm / t, t_lstm / u, roofs.flops(flops / t / 1e9))
    summarise([target], devs, echo)


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench bptt", __doc__)
    add_device_options(parser, 10, "tiny shapes (for tests; the figures mean little)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    devs = devices(args.backend)
    header("bench bptt", devs)
    torch = optional_torch()
    if torch is not None:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    case_bptt(devs, torch, QUICK_SHAPES if args.quick else SHAPES, args.repeat, Roofs(args.quick))
    return 0
