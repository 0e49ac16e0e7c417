"""Benchmark of backpropagation through time: ``python -m clnet bench bptt [--backend SPEC] [--repeat N]``.

Forward plus backward over a stored rollout, T=64, B=64, I=32, H=128, float32, every
figure measured in this one run in alternating rounds (best of ``--repeat``):

- clnet ``LSTMCell.backward_sequence`` (re-runs the forward saving its activations, then
  the backward, all on the device), with 1% episode resets per step and without;
- ``torch.nn.LSTM`` forward + ``.backward()`` through autograd (oneDNN; no resets possible);
- ``torch.nn.LSTMCell`` stepped in a Python loop with resets, forward + ``.backward()``
  (what recurrent RL code does when episodes end inside a rollout);
- the NumPy fallback's ``backward_sequence``.

Flops: forward 2 * T * B * 4H * (I + H); the backward about twice that.
"""
from __future__ import annotations


import numpy as np

from .. import _cli as cli

import clnet

from . import best_times as _best_times, line, optional_torch, ratio

CASE = dict(T=64, B=64, I=32, H=128)
RESET_RATE = 0.01
# torch's OpenMP threads keep spinning for a while after each call and slow down whatever
# runs next on a 2-core machine (measured: 3 ms on a 9 ms call); a short pause before every
# timed call lets them sleep. The order of the contenders also rotates from round to round,
# so that none always runs after the same one (with its caches evicted by it).
PAUSE = 0.01


def best_times(fns, repeat):
    return _best_times(fns, repeat, pause=PAUSE)


def run(backend: str, repeat: int, echo=print) -> dict:
    torch = optional_torch(echo)
    be = clnet.get_backend(backend)
    T, B, I, H = CASE["T"], CASE["B"], CASE["I"], CASE["H"]
    flops = 3 * 2.0 * T * B * 4 * H * (I + H)
    echo(f"clnet backend: {be.spec} ({be.description})")
    if torch is not None:
        echo(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    echo(f"\nforward + backward through time, T={T}, B={B}, I={I}, H={H}, float32 "
         f"(~{flops / 1e9:.2f} GFLOP)")
    rng = np.random.default_rng(0)
    cell = clnet.LSTMCell(I, H, seed=1)
    xs = rng.standard_normal((T, B, I)).astype(np.float32)
    g = rng.standard_normal((T, B, H)).astype(np.float32)
    resets = rng.random((T, B)) < RESET_RATE
    h0 = np.zeros((B, H), np.float32)
    labels = ["clnet backward_sequence, resets", "clnet backward_sequence, no resets"]
    contenders = [lambda: cell.backward_sequence(xs, (h0, h0), resets, g, backend=be),
                  lambda: cell.backward_sequence(xs, (h0, h0), None, g, backend=be)]
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

        labels += ["torch.nn.LSTM forward + backward (no resets)", "torch.nn.LSTMCell loop + backward, resets"]
        contenders += [torch_lstm, torch_cell_loop]
    times = best_times(contenders, repeat)
    figures = dict(zip(labels, times))
    (t_np,) = best_times([lambda: cell.backward_sequence(xs, (h0, h0), resets, g, backend="numpy")],
                         max(2, repeat // 4))
    figures["numpy fallback backward_sequence, resets"] = t_np
    for label, seconds in figures.items():
        echo(line(label, seconds, "call", flops))
    echo("")
    if torch is not None:
        echo(ratio("speed-up over torch.nn.LSTM (no resets)",
                    figures["torch.nn.LSTM forward + backward (no resets)"] / figures[labels[1]], 1.0))
        echo(ratio("  the same with resets (torch.nn.LSTM cannot reset)",
                    figures["torch.nn.LSTM forward + backward (no resets)"] / figures[labels[0]]))
        echo(ratio("speed-up over the torch.nn.LSTMCell loop with resets",
                    figures["torch.nn.LSTMCell loop + backward, resets"] / figures[labels[0]]))
    echo(ratio("speed-up over the NumPy fallback", t_np / figures[labels[0]]))
    return figures


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench bptt", __doc__)
    parser.add_argument("--backend", default=None, help="clnet backend spec (default: automatic selection)")
    parser.add_argument("--repeat", type=int, default=30, help="alternating timing rounds (default 30)")
    args = parser.parse_args(argv)
    run(args.backend, args.repeat)
    return 0
