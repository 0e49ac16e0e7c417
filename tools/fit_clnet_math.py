"""Fit the polynomial coefficients used by kernels/clnet_math.h.

Near-minimax fits by Lawson's algorithm (iteratively reweighted least squares) on
targets evaluated with mpmath at 60 digits, then rounded to float32. Prints, per
function, the coefficients and the max weighted error of the float32-rounded
polynomial (evaluated in float64, i.e. the approximation error alone).

    python tools/fit_clnet_math.py
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 60


def lawson(x, g, w, deg, iters=400):
    """Coefficients c (low to high) minimising max_i w_i |sum c_j x_i^j - g_i|."""
    V = np.vander(x, deg + 1, increasing=True)
    lw = np.full(len(x), 1.0 / len(x))
    for _ in range(iters):
        sw = np.sqrt(lw) * w
        c, *_ = np.linalg.lstsq(V * sw[:, None], g * sw, rcond=None)
        e = np.abs(V @ c - g) * w
        lw = lw * e
        lw /= lw.sum()
    return c


def report(name, x, g, w, deg):
    c = lawson(x, g, w, deg)
    c32 = c.astype(np.float32).astype(np.float64)
    V = np.vander(x, deg + 1, increasing=True)
    err = np.max(np.abs(V @ c32 - g) * w)
    print(f"{name}: degree {deg}, max weighted error {err:.3e} ({err / 2.0**-24:.3f} ulp at 2^-24)")
    for i, ci in enumerate(c32):
        print(f"    c{i} = {np.float32(ci)!r:>18}  # {float(np.float32(ci)).hex()}")
    return c32


def cheb(a, b, n):
    k = np.arange(n)
    return (a + b) / 2 + (b - a) / 2 * np.cos(np.pi * (k + 0.5) / n)


def main():
    n = 3000
    # log1p(f) = f - f^2/2 + f^3 P(f) on [sqrt(1/2) - 1, sqrt(2) - 1]
    a, b = float(mp.sqrt(0.5) - 1), float(mp.sqrt(2) - 1)
    f = cheb(a, b, n)
    f = f[np.abs(f) > 1e-6]
    g = np.array([float((mp.log1p(mp.mpf(t)) - t + mp.mpf(t) ** 2 / 2) / mp.mpf(t) ** 3) for t in f])
    w = np.array([float(mp.mpf(t) ** 3 / mp.log1p(mp.mpf(t))) for t in f])
    for d in (6, 7, 8):
        report("log P(f)", f, g, w, d)

    # expm1(r) = r + r^2/2 + r^3 Q(r) on [-ln2/2, ln2/2]
    h = float(mp.log(2) / 2)
    r = cheb(-h, h, n)
    r = r[np.abs(r) > 1e-6]
    g = np.array([float((mp.expm1(mp.mpf(t)) - t - mp.mpf(t) ** 2 / 2) / mp.mpf(t) ** 3) for t in r])
    w = np.array([float(mp.mpf(t) ** 3 / mp.expm1(mp.mpf(t))) for t in r])
    for d in (3, 4, 5):
        report("expm1 Q(r)", r, g, w, d)

    # sin(r) = r + r^3 S(r^2), cos(r) = 1 - r^2/2 + r^4 C(r^2) on |r| <= pi/4
    q = float(mp.pi / 4)
    r = cheb(0, q, n)
    r = r[r > 1e-6]
    t = r * r
    g = np.array([float((mp.sin(mp.mpf(v)) - v) / mp.mpf(v) ** 3) for v in r])
    w = np.array([float(mp.mpf(v) ** 3 / mp.sin(mp.mpf(v))) for v in r])
    for d in (2, 3, 4):
        report("sin S(r^2)", t, g, w, d)
    g = np.array([float((mp.cos(mp.mpf(v)) - 1 + mp.mpf(v) ** 2 / 2) / mp.mpf(v) ** 4) for v in r])
    w = np.array([float(mp.mpf(v) ** 4 / mp.cos(mp.mpf(v))) for v in r])
    for d in (2, 3, 4):
        report("cos C(r^2)", t, g, w, d)


if __name__ == "__main__":
    main()


def split(value, bits, parts):
    """value = sum of parts-1 floats of `bits` significant bits and one float32 tail."""
    out = []
    rest = mp.mpf(value)
    for _ in range(parts - 1):
        e = mp.floor(mp.log(abs(rest), 2))
        q = mp.mpf(2) ** (e - bits + 1)
        chunk = mp.nint(rest / q) * q if False else mp.floor(rest / q) * q  # truncate: remainder keeps its sign
        out.append(chunk)
        rest -= chunk
    out.append(mp.mpf(float(np.float32(float(rest)))))
    tail = rest - out[-1]
    return out, tail


def constants():
    for name, value, bits, parts in (("LN2", mp.log(2), 12, 2), ("PIO2", mp.pi / 2, 11, 5)):
        chunks, tail = split(value, bits, parts)
        for i, c in enumerate(chunks):
            f = np.float32(float(c))
            assert mp.mpf(float(f)) == c or i == len(chunks) - 1
            print(f"{name}_{i + 1} = {float(f).hex()} ({f!r})")
        print(f"    remaining {name} error {mp.nstr(tail, 3)}")


if __name__ == "__main__":
    constants()
