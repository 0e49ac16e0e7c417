"""Conformance checks of pairwise Pearson correlation.

hypothesis draws the shape of a case (rows, positions, how much is missing and how,
offsets, magnitudes, constant rows and plateaus, min_overlap) and a seed; NumPy makes
the arrays from the seed. Every backend is compared with the float64 NumPy reference,
and the properties of docs/SEMANTICS.md are asserted directly: symmetry, the diagonal, top-k
equal to sorting the dense result, threshold equal to filtering it.

float32 is held to 1e-4 for every min_overlap, including pairs with 2 to 5 common
positions whose values nearly coincide: their sums cancel, and such pairs are recomputed
on the host in float64 (clnet.pearson.rescue_fraction; README, Pairwise Pearson,
Precision).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_backend
from ..tolerances import tolerance
from ..pearson import pearson, pearson_threshold, pearson_topk
from . import Check, Comparison, register

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

OFFSETS = (0.0, 1e4, -3e3, 1e6)
SCALES = (1.0, 1e-3, 1e3)
MISSING = (0.0, 0.1, 0.3, 0.5)


@st.composite if st else (lambda f: f)
def pearson_cases(draw, cross=None):
    n = draw(st.one_of(st.integers(1, 12), st.integers(13, 70), st.sampled_from([97, 130])))
    with_y = draw(st.booleans()) if cross is None else cross
    return dict(
        n=n, k_rows=draw(st.integers(1, 40)) if with_y else 0,
        m=draw(st.one_of(st.integers(1, 8), st.integers(9, 120), st.sampled_from([257]))),
        missing=draw(st.sampled_from(MISSING)), offset=draw(st.sampled_from(OFFSETS)),
        scale=draw(st.sampled_from(SCALES)), nonfinite=draw(st.sampled_from(["nan", "inf", "mixed"])),
        constant_rows=draw(st.integers(0, 3)), plateaus=draw(st.booleans()),
        min_overlap=draw(st.integers(1, 8)), transform=draw(st.sampled_from([None, None, "diff"])),
        seed=draw(st.integers(0, 2**32 - 1)))


def make_rows(case, rows: int, rng) -> np.ndarray:
    """Curves with an offset, a random walk plus noise, missing values and special rows."""
    m = case["m"]
    walk = np.cumsum(rng.normal(0, 1, (rows, m)), axis=1) * 0.3 + rng.normal(0, 1, (rows, m))
    x = case["offset"] + case["scale"] * walk
    if case["plateaus"] and m > 3:
        for i in rng.choice(rows, size=max(1, rows // 4), replace=True):
            a = int(rng.integers(0, m - 2))
            x[i, a:a + int(rng.integers(2, m - a + 1))] = x[i, a]
    for i in rng.choice(rows, size=min(rows, case["constant_rows"]), replace=False):
        x[i] = case["offset"] + case["scale"]
    miss = rng.random((rows, m)) < case["missing"] * rng.random((rows, 1)) * 2
    if rows > 2 and rng.random() < 0.3:
        miss[int(rng.integers(0, rows))] = True  # one row with nothing at all
    kinds = {"nan": [np.nan], "inf": [np.inf, -np.inf], "mixed": [np.nan, np.inf, -np.inf]}
    fill = rng.choice(kinds[case["nonfinite"]], size=int(miss.sum()))
    x[miss] = fill
    return x


def case_arrays(case):
    rng = np.random.default_rng(case["seed"])
    x = make_rows(case, case["n"], rng)
    y = make_rows(case, case["k_rows"], rng) if case["k_rows"] else None
    return x, y


def _min_overlap(case, dt) -> int:
    """The case's min_overlap, for every dtype (float32 once needed at least 6)."""
    return case["min_overlap"]


def _dense(backend, dt, case, x, y, min_overlap):
    return pearson(x, y, min_overlap=min_overlap, transform=case["transform"], backend=backend, dtype=dt)


def _eval_dense(backend, dt, case):
    x, y = case_arrays(case)
    mo = _min_overlap(case, dt)
    got = _dense(backend, dt, case, x, y, mo)
    ref = _dense(get_backend("numpy"), np.float64, case, x, y, mo)
    if y is None:
        _assert_symmetric(got, dt)
        _assert_diagonal(got, x, case, dt)
    return [Comparison("r", got, ref)]


def _assert_symmetric(r, dt):
    assert np.array_equal(np.isnan(r), np.isnan(r.T)), "NaN pattern of r is not symmetric"
    tol = tolerance("pearson", dt).atol
    err = np.nanmax(np.abs(r - r.T)) if np.isfinite(r).any() else 0.0
    assert err <= tol, f"r is not symmetric: max |r - r.T| = {err:.3g}"


def _assert_diagonal(r, x, case, dt):
    if case["transform"] == "diff":
        from ..pearson import diff_rows

        x = diff_rows(x)
    valid = np.isfinite(x)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore"):
        lo = np.where(valid, x, np.inf).min(axis=1) if x.shape[1] else np.zeros(len(x))
        hi = np.where(valid, x, -np.inf).max(axis=1) if x.shape[1] else np.zeros(len(x))
    defined = (count >= _min_overlap(case, dt)) & (hi > lo)
    diag = np.diag(r)
    bad = np.isnan(diag) == defined
    assert not bad.any(), (f"diagonal r[{int(np.argmax(bad))}] = {diag[bad][0]!r}, but the row "
                           f"{'is' if defined[bad][0] else 'is not'} defined with itself")
    assert np.all(np.abs(diag[defined] - 1) <= 1e-5), "a defined diagonal value is not 1"


def _describe(fn_call):
    def describe(case):
        return (f"import clnet\nfrom clnet.conformance.pearson import case_arrays\ncase = {case!r}\n"
                f"x, y = case_arrays(case)\n{fn_call}")
    return describe


# --- top-k ---------------------------------------------------------------------------------
@st.composite if st else (lambda f: f)
def topk_cases(draw):
    case = draw(pearson_cases())
    case["n"] = max(case["n"], 2)
    limit = case["k_rows"] if case["k_rows"] else case["n"] - 1
    case["k"] = draw(st.integers(1, max(1, limit)))
    case["quantise"] = draw(st.booleans())  # coarse values make exact ties in r
    return case


def _tie_rows(case):
    x, y = case_arrays(case)
    if case.get("quantise"):
        x = np.round(x / case["scale"] - case["offset"] / case["scale"])
        y = None if y is None else np.round(y / case["scale"] - case["offset"] / case["scale"])
    return x, y


def expected_topk(r, k, exclude_self):
    """Sorting the dense result: largest r first, ties by lower index, -1 / NaN padding."""
    r = np.array(r, dtype=np.float64)
    if exclude_self:
        np.fill_diagonal(r, np.nan)
    idx = np.full((len(r), k), -1, np.int64)
    val = np.full((len(r), k), np.nan)
    for i, row in enumerate(r):
        cols = [j for j in np.lexsort((np.arange(len(row)), -row)) if not np.isnan(row[j])][:k]
        idx[i, :len(cols)] = cols
        val[i, :len(cols)] = row[cols]
    return idx, val


def _eval_topk(backend, dt, case):
    x, y = _tie_rows(case)
    kw = dict(min_overlap=_min_overlap(case, dt), transform=case["transform"], backend=backend, dtype=dt)
    idx, val = pearson_topk(x, case["k"], y, **kw)
    dense = pearson(x, y, **kw)
    want_idx, want_val = expected_topk(dense, case["k"], y is None)
    # Equal to sorting this backend's own dense result, index for index ...
    if not np.array_equal(idx, want_idx):
        i = int(np.argmax((idx != want_idx).any(axis=1)))
        raise AssertionError(f"top-k row {i}: got indices {idx[i].tolist()} values {val[i].tolist()}, "
                             f"sorting the dense result gives {want_idx[i].tolist()} "
                             f"values {want_val[i].tolist()}")
    # ... and its values match the float64 reference's values at those positions.
    ref = pearson(x, y, **dict(kw, backend=get_backend("numpy"), dtype=np.float64))
    rows = np.arange(len(idx))[:, None]
    ref_val = np.where(idx >= 0, ref[rows, np.maximum(idx, 0)], np.nan)
    return [Comparison("top-k values", val, ref_val), Comparison("top-k vs dense", val, want_val)]


# --- threshold -----------------------------------------------------------------------------
@st.composite if st else (lambda f: f)
def threshold_cases(draw):
    case = draw(pearson_cases())
    case["threshold"] = draw(st.one_of(st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.floats(0, 1)))
    return case


def _eval_threshold(backend, dt, case):
    x, y = case_arrays(case)
    kw = dict(min_overlap=_min_overlap(case, dt), transform=case["transform"], backend=backend, dtype=dt)
    t = case["threshold"]
    sparse = pearson_threshold(x, t, y, **kw)
    dense = pearson(x, y, **kw)
    with np.errstate(invalid="ignore"):
        keep = np.abs(dense) >= t
    if y is None:
        np.fill_diagonal(keep, False)
    got_keep = np.zeros_like(keep)
    coo = sparse.tocoo()
    got_keep[coo.row, coo.col] = True
    if not np.array_equal(got_keep, keep) or sparse.nnz != keep.sum():
        diff = np.argwhere(got_keep != keep)
        i, j = diff[0] if len(diff) else (0, 0)
        raise AssertionError(f"threshold {t}: {len(diff)} pairs differ from filtering the dense result, "
                             f"first ({i}, {j}) with dense r = {dense[i, j]!r}, kept: {bool(got_keep[i, j])}")
    assert np.array_equal(sparse.toarray()[keep], dense[keep]), "kept values differ from the dense ones"
    ref = pearson(x, y, **dict(kw, backend=get_backend("numpy"), dtype=np.float64))
    return [Comparison("kept values", dense[keep], ref[keep])]


# --- the anchor: pandas itself ----------------------------------------------------------------
def pandas_reference(x, min_overlap, transform):
    """pandas' pairwise-complete correlation of the rows (pandas correlates columns)."""
    import pandas as pd

    if transform == "diff":
        from ..pearson import diff_rows

        x = diff_rows(x)
    x = np.where(np.isfinite(x), x, np.nan)
    return pd.DataFrame(x.T).corr(min_periods=min_overlap).to_numpy()


def _eval_pandas(backend, dt, case):
    x, _ = case_arrays(case)
    mo = _min_overlap(case, dt)
    got = pearson(x, min_overlap=mo, transform=case["transform"], backend=backend, dtype=dt)
    return [Comparison("r vs pandas", got, pandas_reference(x, mo, case["transform"]))]


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


if st is not None:
    if _has_pandas():
        # No offsets here: with them pandas' own float64 arithmetic is the less exact one
        # (two points at 1e4 that differ by 4e-3 give it r = -0.99999999977, not -1).
        register(Check("pearson.pandas", "pearson",
                       lambda: pearson_cases(cross=False).map(lambda c: dict(c, offset=0.0, scale=1.0)),
                       _eval_pandas,
                       _describe("import pandas as pd; from clnet.conformance.pearson import pandas_reference\n"
                                 "pandas_reference(x, case['min_overlap'], case['transform'])  # vs\n"
                                 "clnet.pearson(x, min_overlap=case['min_overlap'], "
                                 "transform=case['transform'], backend=BACKEND, dtype=DTYPE)")))
    register(Check("pearson.dense", "pearson", lambda: pearson_cases(cross=False), _eval_dense,
                   _describe("clnet.pearson(x, min_overlap=case['min_overlap'], transform=case['transform'], "
                             "backend=BACKEND, dtype=DTYPE)")))
    register(Check("pearson.cross", "pearson", lambda: pearson_cases(cross=True), _eval_dense,
                   _describe("clnet.pearson(x, y, min_overlap=case['min_overlap'], "
                             "transform=case['transform'], backend=BACKEND, dtype=DTYPE)")))
    register(Check("pearson.diff", "pearson",
                   lambda: pearson_cases(cross=False).map(lambda c: dict(c, transform="diff")),
                   _eval_dense,
                   _describe("clnet.pearson(x, min_overlap=case['min_overlap'], transform='diff', "
                             "backend=BACKEND, dtype=DTYPE)")))
    register(Check("pearson.topk", "pearson", topk_cases, _eval_topk,
                   _describe("clnet.pearson_topk(x, case['k'], y, min_overlap=case['min_overlap'], "
                             "transform=case['transform'], backend=BACKEND, dtype=DTYPE)  # see _tie_rows")))
    register(Check("pearson.threshold", "pearson", threshold_cases, _eval_threshold,
                   _describe("clnet.pearson_threshold(x, case['threshold'], y, min_overlap=case['min_overlap'], "
                             "transform=case['transform'], backend=BACKEND, dtype=DTYPE)")))
