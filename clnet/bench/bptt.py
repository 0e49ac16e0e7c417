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

Case 2 (no target of its own) times what PPO's learning does with an actor and a critic:
two cells' ``record_sequence`` and ``backward`` after each optimiser step, each cell alone
against one :class:`clnet.CellGroup` of both, beside two ``torch.nn.LSTM`` forward + backward.
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


# case 2: an actor and a critic LSTM over the same observations, as PPO re-evaluates its
# stored rollout: the zoo's CartPoleNoVel network (T=32 steps x 8 environments, 64 units) and
# two shapes of other proportions.
GROUP_SHAPES = (dict(T=32, B=8, I=4, H=64), dict(T=20, B=13, I=6, H=50), dict(T=16, B=24, I=9, H=100))
QUICK_GROUP_SHAPES = (dict(T=3, B=2, I=3, H=5), dict(T=4, B=3, I=2, H=7), dict(T=2, B=5, I=4, H=9))
PAIR_PEER = "torch.nn.LSTM x2 forward + backward (no resets)"


def case_group(devs, torch, shapes, repeat, echo=print) -> None:
    """Two cells' record_sequence + backward per call, their weights changed before each call
    (an optimiser step): each cell on its own against one clnet.CellGroup of both."""
    echo("\n== case 2: an actor and a critic recorded and run backwards (clnet.CellGroup), float32")
    rng = np.random.default_rng(2)
    for si, shape in enumerate(shapes):
        T, B, I, H = (shape[k] for k in "TBIH")
        cells = [clnet.LSTMCell(I, H, seed=s) for s in (1, 2)]
        weights = [c.state_dict() for c in cells]
        group = clnet.CellGroup(cells)
        xs = rng.standard_normal((T, B, I)).astype(np.float32)
        g = rng.standard_normal((2, T, B, H)).astype(np.float32)
        resets = rng.random((T, B)) < 0.05
        peers = {}
        if torch is not None:
            torch.manual_seed(0)
            pair = [torch.nn.LSTM(I, H) for _ in cells]
            x, gt = torch.from_numpy(xs), torch.from_numpy(g)

            def torch_pair():
                for m, lstm in enumerate(pair):
                    lstm.zero_grad()
                    lstm(x)[0].backward(gt[m])

            peers = {PAIR_PEER: torch_pair}

        def step_weights():  # what an optimiser step does to both cells before the next call
            for cell, w in zip(cells, weights):
                w["weight_hh"] *= 1.0 - 1e-6
                cell.load_state_dict(w)

        def make(d):
            def separate():
                step_weights()
                recs = [c.record_sequence(xs, None, resets, backend=d.backend) for c in cells]
                return [r.backward(g[m], inputs=False) for m, r in enumerate(recs)]

            def grouped():
                step_weights()
                return group.record_sequence(xs, None, resets, backend=d.backend).backward(g, inputs=False)

            return {"each cell alone": separate, "one CellGroup": grouped}

        peer_t, dev_t = compare(devs, peers, make, repeat, pause=PAUSE)
        echo(f"  -- shape {si + 1}/{len(shapes)}: {shape_text(shape)}, two cells")
        for label, t in peer_t.items():
            echo(f"     {label:<46} {t * 1e3:10.3f} ms")
        t_pair = peer_t.get(PAIR_PEER)
        for name in ("each cell alone", "one CellGroup"):
            device_rows(devs, {s: {v: ts[name] for v, ts in vs.items()} for s, vs in dev_t.items()},
                        lambda t: f"{t * 1e3:10.3f} ms" + (f" {t_pair / t:6.2f}x torch" if t_pair else ""),
                        label=name, echo=echo, width=46)
        for d in devs:
            ts = dev_t[d.spec]["tuned"]
            echo(f"     {d.spec} tuned: the group takes {ts['one CellGroup'] / ts['each cell alone']:.0%} "
                 f"of the two cells' own calls")


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
    case_group(devs, torch, QUICK_GROUP_SHAPES if args.quick else GROUP_SHAPES, args.repeat)
    return 0
