"""From curves to clusters: shape similarity (Pearson on differences) then Markov clustering.

Generates curves of a few shapes with uneven lengths, levels, gains, noise and gaps,
computes each curve's top-k most similar curves by shape (``pearson_topk`` with
``transform="diff"``), clusters that graph with ``mcl``, and prints the time of each
stage, the number of clusters and the adjusted Rand index against the planted shapes.
With matplotlib installed, ``--png DIR`` writes one picture per cluster.
"""
from __future__ import annotations

import os
import time

import numpy as np

import clnet
from clnet import _cli as cli
from clnet.common.mcl_graphs import adjusted_rand_index

# Shapes whose slopes differ (the similarity correlates first differences, so a straight
# line, whose slope is constant, would look like pure noise).
# Entries mcl keeps per column (its -S and -R). Within a shape the top-k graph has no
# structure of its own (every curve is about as close to every other), so at a low
# inflation the flow spreads over the whole shape before it settles: with mcl's default
# 1100 each column holds about 1100 entries and an iteration costs 1100^2 terms per column
# (111 s for 20,000 curves, and the shapes split); 50 keeps the flow's strongest entries,
# converges in 14 iterations and keeps the shapes whole.
SELECT = 50

SHAPES = ("wave", "cosine", "double wave", "double cosine", "early peak", "late step")


def shape_values(shape: str, t: np.ndarray) -> np.ndarray:
    return {"wave": np.sin(2 * np.pi * t), "cosine": np.cos(2 * np.pi * t),
            "double wave": np.sin(4 * np.pi * t), "double cosine": np.cos(4 * np.pi * t),
            "early peak": 1.5 * np.exp(-((t - 0.3) / 0.1) ** 2),
            "late step": 1.5 / (1 + np.exp(-(t - 0.7) / 0.04))}[shape]


def make_curves(n: int, positions: int, rng):
    """(curves with NaN where missing, planted shape per curve)."""
    truth = rng.integers(0, len(SHAPES), n)
    t = np.linspace(0, 1, positions)
    base = np.stack([shape_values(s, t) for s in SHAPES])
    level = rng.uniform(-50, 50, (n, 1))
    gain = rng.uniform(0.5, 5, (n, 1))
    curves = level + gain * (base[truth] + rng.normal(0, 0.01, (n, positions)))
    lengths = rng.integers(3 * positions // 4, positions + 1, n)  # uneven lengths: the tail is missing
    curves[np.arange(positions)[None, :] >= lengths[:, None]] = np.nan
    curves[rng.random((n, positions)) < 0.08] = np.nan        # gaps
    return curves, truth


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet demo curves", __doc__)
    parser.add_argument("--curves", type=int, default=20000, help="curves generated (default 20,000)")
    parser.add_argument("--positions", type=int, default=60, help="points per curve (default 60)")
    parser.add_argument("-k", type=int, default=20, help="neighbours per curve (default 20)")
    parser.add_argument("--inflation", type=float, default=1.4,
                        help="mcl inflation (default 1.4: six shapes are coarse clusters; at 5,000 curves 1.6 "
                             "splits them into 51, as the mcl program does too)")
    parser.add_argument("--select", type=int, default=SELECT,
                        help=f"entries kept per column after each expansion, mcl's -S and -R (default {SELECT}; "
                             f"mcl's own default is 1100 and 1400)")
    parser.add_argument("--backend", default=None, help="clnet backend spec (default: the best usable one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated curves (default 0)")
    parser.add_argument("--png", default=None, help="directory for one PNG per cluster (needs matplotlib)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    curves, truth = make_curves(args.curves, args.positions, rng)
    t1 = time.perf_counter()
    indices, values = clnet.pearson_topk(curves, args.k, transform="diff", backend=args.backend)
    indices = np.where(values > 0, indices, -1)  # MCL needs non-negative weights
    t2 = time.perf_counter()
    result = clnet.mcl((indices, values), args.inflation, select=args.select, recover=args.select,
                       backend=args.backend)
    t3 = time.perf_counter()
    ari = adjusted_rand_index(result.labels, truth)
    print(f"{args.curves} curves of {len(SHAPES)} shapes, {args.positions} positions, "
          f"{np.isnan(curves).mean():.0%} missing; backend {clnet.get_backend(args.backend).spec}")
    print(f"  generate curves                 {t1 - t0:7.2f} s")
    print(f"  pearson_topk(k={args.k}, diff)       {t2 - t1:7.2f} s")
    print(f"  mcl(inflation={args.inflation:g}, select={args.select})  {t3 - t2:7.2f} s   "
          f"({result.iterations} iterations, converged: {result.converged})")
    print(f"  total                           {t3 - t0:7.2f} s")
    sizes = [len(c) for c in result.clusters]
    print(f"clusters: {result.n_clusters} (largest {sizes[:8]})")
    print(f"adjusted Rand index against the planted shapes: {ari:.4f}")
    if args.png:
        _pictures(curves, result, args.png)
    return 0


def _pictures(curves, result, directory: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--png needs matplotlib (pip install matplotlib); no pictures written")
        return
    os.makedirs(directory, exist_ok=True)
    for cid, members in enumerate(result.clusters[:12]):
        fig, ax = plt.subplots(figsize=(5, 3))
        for i in members[:200]:
            y = curves[i]
            ax.plot((y - np.nanmean(y)) / (np.nanstd(y) or 1), lw=0.5, alpha=0.4)
        ax.set_title(f"cluster {cid}: {len(members)} curves")
        fig.savefig(os.path.join(directory, f"cluster_{cid:02d}.png"), dpi=80)
        plt.close(fig)
    print(f"pictures in {directory}")


if __name__ == "__main__":
    raise SystemExit(main())
