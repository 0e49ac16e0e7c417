"""Pairwise Pearson correlation: conformance on every backend, the anchors (pandas,
numpy.corrcoef), precision, sparse outputs, bad input and DataFrames."""
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings

import clnet
import clnet.common.pearson as P
from clnet import conformance
from clnet.backend import Backend
from clnet.conformance.pearson import case_arrays, expected_topk, pearson_cases
from conftest import force_params

PEARSON_CHECKS = [c for c in conformance.checks() if c.family == "pearson"]


# Every registered check runs on every backend in tests/test_conformance.py.
def test_conformance_checks_are_registered():
    names = {c.operation for c in PEARSON_CHECKS}
    assert {"pearson.dense", "pearson.cross", "pearson.diff", "pearson.topk", "pearson.threshold",
            "pearson.pandas"} <= names
    assert "clnet.conformance.pearson" in conformance.FAMILY_MODULES


# --- anchors -------------------------------------------------------------------------------
def pandas_corr(x, min_periods):
    """pandas' pairwise-complete correlation of the rows (pandas correlates columns)."""
    x = np.where(np.isfinite(x), x, np.nan)
    return pd.DataFrame(x.T).corr(min_periods=min_periods).to_numpy()


@settings(max_examples=25)
@given(case=pearson_cases(cross=False).map(lambda c: dict(c, offset=0.0, scale=1.0)))
def test_matches_pandas(case):
    x, _ = case_arrays(case)
    if case["transform"] == "diff":
        x = P.diff_rows(x)
    want = pandas_corr(x, case["min_overlap"])
    for spec in [info.spec for info in clnet.backends() if info.usable]:
        be = clnet.get_backend(spec)
        if not be.supports_float64:
            continue
        got = clnet.pearson(x, min_overlap=case["min_overlap"], backend=be, dtype="float64")
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"{spec}: NaN pattern differs from pandas"
        fin = np.isfinite(want)
        assert np.all(np.abs(got[fin] - want[fin]) <= 1e-9), f"{spec}: differs from pandas"


def test_matches_pandas_with_inf_and_min_periods(any_backend, rng):
    x = rng.normal(size=(40, 25)) + 1e4
    x[rng.random(x.shape) < 0.4] = np.nan
    x[rng.random(x.shape) < 0.05] = np.inf
    x[rng.random(x.shape) < 0.05] = -np.inf
    for k in (1, 2, 5, 12):
        want = pandas_corr(x, k)
        got = clnet.pearson(x, min_overlap=k, backend=any_backend, dtype="float32")
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert np.nanmax(np.abs(got - want)) <= 1e-4


def test_matches_corrcoef_on_complete_data(any_backend, rng):
    x = rng.normal(size=(97, 257)) * rng.uniform(0.1, 10, (97, 1)) + rng.normal(0, 100, (97, 1))
    want = np.corrcoef(x)
    assert np.abs(clnet.pearson(x, backend=any_backend) - want).max() <= 1e-5
    if any_backend.supports_float64:
        assert np.abs(clnet.pearson(x, backend=any_backend, dtype="float64") - want).max() <= 1e-12
    y = rng.normal(size=(13, 257))
    cross = clnet.pearson(x, y, backend=any_backend)
    assert np.abs(cross - np.corrcoef(x, y)[:97, 97:]).max() <= 1e-5


# --- precision (issue point 3) ---------------------------------------------------------------
def offset_rows(rng, n=300, m=200, missing=0.5):
    x = 1e4 + rng.normal(size=(n, m))
    x[rng.random(x.shape) < missing] = np.nan
    return x


def test_float32_precision_with_offsets_and_heavy_missingness(any_backend, rng):
    x = offset_rows(rng)
    ref = clnet.pearson(x, backend="numpy", dtype="float64")
    got = clnet.pearson(x, backend=any_backend, dtype="float32")
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.nanmax(np.abs(got - ref)) <= 1e-4
    # The naive one-pass formula on raw float32 sums is far off here: the test has teeth.
    naive = _one_pass_float32(x[:20])
    assert np.nanmax(np.abs(naive - ref[:20, :20])) > 1e-2


def test_float64_precision_against_pandas(any_backend, rng):
    if not any_backend.supports_float64:
        pytest.skip("no float64")
    x = offset_rows(rng, n=120)
    got = clnet.pearson(x, backend=any_backend, dtype="float64")
    want = pandas_corr(x, 2)
    assert np.nanmax(np.abs(got - want)) <= 1e-10


def few_overlap_rows(rng, pairs=40, m=60, offset=1e4):
    """Pairs of rows (2p, 2p + 1) that share only 2 to 5 positions, where their values
    nearly coincide (spread 1e-3 around a level a few units off the row's own mean),
    on large offsets; elsewhere each row has ordinary values on positions of its own.
    Before the rescue, float32 was off by up to 2 (NaN or a wrong sign) on such pairs."""
    x = np.full((2 * pairs, m), np.nan)
    for p in range(pairs):
        common = rng.choice(m, size=int(rng.integers(2, 6)), replace=False)
        rest = rng.permutation(np.setdiff1d(np.arange(m), common))
        for q, own in ((2 * p, rest[:20]), (2 * p + 1, rest[20:40])):
            x[q, own] = offset + 3 * rng.normal(size=len(own))
            x[q, common] = offset + rng.uniform(-6, 6) + 1e-3 * rng.normal(size=len(common))
    x[0, np.isfinite(x[1])] = 7.5 + offset  # a pair constant over its common positions: NaN
    return x


def test_float32_few_coinciding_common_values(any_backend, rng, monkeypatch):
    """Issue point 3 with 2 to 5 common positions of nearly coinciding values: every path
    (dense, strips, cross, top-k on and off the device, threshold, both ways of the
    masked sums) within 1e-4 of the float64 reference, same NaN pattern."""
    x = few_overlap_rows(rng)
    ref = clnet.pearson(x, backend="numpy", dtype="float64")
    assert np.isnan(ref[0, 1]) and np.isfinite(ref[2, 3])
    pairs = np.arange(2, len(x), 2)
    assert np.isfinite(ref[pairs, pairs + 1]).all()
    naive = _one_pass_float32(x)  # the test has teeth: the raw sums are useless here
    assert np.nanmax(np.abs(naive - ref)[pairs, pairs + 1]) > 1e-2 or np.isnan(naive[pairs, pairs + 1]).any()

    def close(got, want, what):
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN pattern differs"
        assert np.nanmax(np.abs(got - want)) <= 1e-4, f"{what}: off by {np.nanmax(np.abs(got - want)):.3g}"

    for limit in (0.0, 1.0):  # OpenCL: masked products, then totals minus corrections
        force_params(monkeypatch, any_backend, "pearson", sparse_missing_max=limit)
        for dt in ("float32", "float64"):
            if dt == "float64" and not any_backend.supports_float64:
                continue
            got = clnet.pearson(x, backend=any_backend, dtype=dt)
            close(got, ref, f"dense {dt}")
            if dt == "float64":
                assert np.nanmax(np.abs(got - ref)) <= 1e-10
            close(clnet.pearson(x, x[::3], backend=any_backend, dtype=dt), ref[:, ::3], f"cross {dt}")
            for k in (1, 3, 20, 70):  # device lists (symmetric, per strip) and host selection
                idx, val = clnet.pearson_topk(x, k, backend=any_backend, dtype=dt)
                want_idx, want_val = expected_topk(got, k, True)
                assert np.array_equal(idx, want_idx), (dt, k)
                rows = np.arange(len(x))[:, None]
                close(val, np.where(idx >= 0, ref[rows, np.maximum(idx, 0)], np.nan), f"top-{k} {dt}")
            s = clnet.pearson_threshold(x, 0.5, backend=any_backend, dtype=dt).tocoo()
            keep = np.abs(np.nan_to_num(got)) >= 0.5
            np.fill_diagonal(keep, False)
            assert s.nnz == keep.sum()
            close(s.data, ref[s.row, s.col], f"threshold {dt}")
    monkeypatch.setattr(P, "STRIP_BUDGET", len(x) * 4 * 8)  # many strips, device lists across them
    for k in (3, 20):
        idx, val = clnet.pearson_topk(x, k, backend=any_backend)
        want_idx, _ = expected_topk(clnet.pearson(x, backend=any_backend), k, True)
        assert np.array_equal(idx, want_idx), k


def test_rescue_only_where_needed(rng):
    """The host recomputes only pairs whose variances cancel: none on ordinary data."""
    x = offset_rows(rng, n=100, m=80, missing=0.3)
    plan = clnet.get_backend("numpy").pearson_plan(P.standardise_rows(x), None, np.float32, 2)
    calls = []
    real = P.rescue_pairs
    try:
        P.rescue_pairs = lambda *a: calls.append(len(a[2])) or real(*a)
        plan.block(0, 100)
        assert calls == []
    finally:
        P.rescue_pairs = real
    few = few_overlap_rows(rng, pairs=3)
    prepared = P.standardise_rows(few)
    r = P.rescue_pairs(prepared, prepared, np.array([0, 2, 4]), np.array([1, 3, 5]), 2)
    want = clnet.pearson(few, backend="numpy", dtype="float64")
    assert np.isnan(r[0]) and np.allclose(r[1:], want[[2, 4], [3, 5]], atol=1e-12, rtol=0)
    assert 1e-3 < P.rescue_fraction(np.float32) < 0.05 and P.rescue_fraction(np.float64) < 1e-4


def _one_pass_float32(x):
    v = np.isfinite(x).astype(np.float32)
    z = np.where(np.isfinite(x), x, 0).astype(np.float32)
    n, sx, sxx, sxy = v @ v.T, z @ v.T, (z * z) @ v.T, z @ z.T
    sy, syy = sx.T, sxx.T
    with np.errstate(all="ignore"):
        return (n * sxy - sx * sy) / np.sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))


# --- semantics by hand ---------------------------------------------------------------------
def test_small_example_by_hand(any_backend):
    x = np.array([[1, 2, 3, np.nan], [2, 4, 7, 1], [3, 2, 1, 0], [5, 5, 5, 5], [1, np.inf, np.nan, -np.inf]])
    r = clnet.pearson(x, backend=any_backend, dtype="float64" if any_backend.supports_float64 else None)
    a, b = np.array([1, 2, 3.0]), np.array([2, 4, 7.0])
    assert r[0, 1] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-6)
    assert r[0, 2] == pytest.approx(-1.0, abs=1e-6)
    assert r[1, 2] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(r[3]).all() and np.isnan(r[:, 3]).all()  # constant row
    assert np.isnan(r[4]).all()  # one finite value: below min_overlap=2
    assert np.allclose(np.diag(r)[:3], 1.0)


def test_diff_transform_compares_slopes(any_backend):
    t = np.linspace(0, 1, 30)
    x = np.vstack([t ** 2, t ** 2 + 5 * t, 3 * t ** 2 + 7, np.sin(6 * t)])
    x[0, 4] = np.nan
    r = clnet.pearson(x, transform="diff", backend=any_backend)
    d = P.diff_rows(x)
    assert np.isnan(d[0, 3]) and np.isnan(d[0, 4])
    assert r[0, 2] == pytest.approx(1.0, abs=1e-5)  # same shape, other level and scale
    want = pandas_corr(d, 2)
    assert np.nanmax(np.abs(r - want)) <= 1e-4


def test_topk_ties_and_padding(any_backend):
    x = np.array([
        [1, 2, 3, 4],
        [2, 4, 6, 8],            # r = 1 with rows 0, 2, 3
        [1, 2, 3, 4],
        [10, 20, 30, 40],
        [4, 3, 2, 1],            # r = -1 with the first four
        [1, np.nan, np.nan, 5],  # two positions: r = +-1 with all but row 6
        [np.nan, 1, np.nan, np.nan],  # nothing defined
    ], dtype=float)
    idx, val = clnet.pearson_topk(x, 3, backend=any_backend)
    assert idx[0].tolist() == [1, 2, 3]  # ties by lower index (row 5 is also 1)
    assert idx[1].tolist() == [0, 2, 3]
    assert idx[6].tolist() == [-1, -1, -1] and np.isnan(val[6]).all()
    # Row 5: r = 1 with rows 0..3, -1 with row 4.
    assert idx[5].tolist() == [0, 1, 2]
    dense = clnet.pearson(x, backend=any_backend)
    want_idx, _ = expected_topk(dense, 6, True)
    idx6, val6 = clnet.pearson_topk(x, 6, backend=any_backend)
    assert np.array_equal(idx6, want_idx)
    assert idx6[6].tolist() == [-1] * 6


def test_topk_large_k_and_cross(any_backend, rng):
    x = rng.normal(size=(90, 20))
    x[rng.random(x.shape) < 0.3] = np.nan
    dense = clnet.pearson(x, backend=any_backend)
    for k in (1, 70, 89):  # 70 and 89 are above the device's in-kernel limit
        idx, val = clnet.pearson_topk(x, k, backend=any_backend)
        want_idx, want_val = expected_topk(dense, k, True)
        assert np.array_equal(idx, want_idx), k
    y = x[:30]
    idx, _ = clnet.pearson_topk(x, 30, y, backend=any_backend)
    want_idx, _ = expected_topk(clnet.pearson(x, y, backend=any_backend), 30, False)
    assert np.array_equal(idx, want_idx)
    assert (idx[:30, 0] == np.arange(30)).all()  # with Y a row may find itself


def test_threshold_sign_and_diagonal(any_backend, rng):
    x = rng.normal(size=(50, 30))
    x[1] = -x[0] * 2 + 3
    x[rng.random(x.shape) < 0.2] = np.nan
    s = clnet.pearson_threshold(x, 0.0, backend=any_backend)
    dense = clnet.pearson(x, backend=any_backend)
    assert s.shape == (50, 50) and s.diagonal().tolist() == [0.0] * 50
    assert s.nnz == np.isfinite(dense).sum() - np.isfinite(np.diag(dense)).sum()
    s = clnet.pearson_threshold(x, 0.999, backend=any_backend)
    assert s[0, 1] == pytest.approx(-1.0, abs=1e-5) and s[1, 0] == s[0, 1]
    assert clnet.pearson_threshold(x, 1.0, backend=any_backend).nnz <= 2


def test_strips_bound_memory_and_agree(any_backend, rng, monkeypatch):
    """With a tiny strip budget the drivers walk many strips; results do not change."""
    x = rng.normal(size=(203, 40))
    x[rng.random(x.shape) < 0.25] = np.nan
    whole_idx, whole_val = clnet.pearson_topk(x, 7, backend=any_backend)
    whole_sparse = clnet.pearson_threshold(x, 0.3, backend=any_backend)
    monkeypatch.setattr(P, "STRIP_BUDGET", 203 * 4 * 20)
    plan = any_backend.pearson_plan(P.standardise_rows(x), None, np.float32, 2)
    assert plan.strip_rows < 40
    idx, val = clnet.pearson_topk(x, 7, backend=any_backend)
    assert np.array_equal(idx, whole_idx)
    assert np.allclose(val, whole_val, atol=1e-6, rtol=0, equal_nan=True)  # BLAS sums by block size
    sparse = clnet.pearson_threshold(x, 0.3, backend=any_backend)
    assert np.array_equal(sparse.indices, whole_sparse.indices)
    assert np.allclose(sparse.data, whole_sparse.data, atol=1e-6, rtol=0)


def test_opencl_dense_without_one_big_buffer(opencl_backend, rng, monkeypatch):
    x = rng.normal(size=(70, 33))
    x[rng.random(x.shape) < 0.2] = np.nan
    whole = clnet.pearson(x, backend=opencl_backend)
    monkeypatch.setattr(opencl_backend, "max_alloc", 70 * 70 * 4 - 1)  # forces strips
    assert np.array_equal(clnet.pearson(x, backend=opencl_backend), whole, equal_nan=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_complete_data_tile_is_correct_in_both_dtypes(opencl_backend, rng, monkeypatch, dtype):
    """Every tile the complete-data kernel may be tuned to (rows x column vectors per
    work-item), in float32 (16-row groups) and float64 (8-row groups: a 16-row tile spans
    two, which once read the wrong rows), X against itself, X against Y, the strips of a
    top-k from an offset column: equal to the float64 reference within float32's or
    float64's rounding, NaN exactly where it is. Row counts are not multiples of any tile."""
    from clnet.opencl.tuning import FAMILIES

    fam = FAMILIES["pearson"]
    # strips of 16 rows: the top-k's strips start at rows and columns past 0 (col0 > 0)
    monkeypatch.setattr(P, "STRIP_BUDGET", 16 * 53 * 8)
    x = rng.normal(size=(53, 19))
    x[5] = 2.0  # a constant row: NaN against every row
    y = rng.normal(size=(29, 19))
    tol = 1e-5 if dtype == "float32" else 1e-12
    want_xx = clnet.pearson(x, backend="numpy", dtype="float64")
    want_xy = clnet.pearson(x, y, backend="numpy", dtype="float64")
    want_top = clnet.pearson_topk(x, 3, backend="numpy", dtype="float64", progress=False)[1]
    for rows in fam.param("complete_rows").values:
        for cols in fam.param("complete_cols").values:
            force_params(monkeypatch, opencl_backend, "pearson", complete_rows=rows, complete_cols=cols)
            for got, want in ((clnet.pearson(x, backend=opencl_backend, dtype=dtype), want_xx),
                              (clnet.pearson(x, y, backend=opencl_backend, dtype=dtype), want_xy),
                              (clnet.pearson_topk(x, 3, backend=opencl_backend, dtype=dtype,
                                                  progress=False)[1], want_top)):
                assert np.array_equal(np.isnan(got), np.isnan(want)), (rows, cols)
                assert np.nanmax(np.abs(got - want)) < tol, (rows, cols)


def test_results_written_in_place_are_aligned_arrays_of_their_own(opencl_backend, rng, monkeypatch):
    """A dense result on a CPU device is written by the kernels into the returned array
    (no copy from the device: a copy would fail here), page-aligned, C-contiguous and
    writable; a second call returns a new array, leaving the first as it was. A device that
    does not share host memory (a GPU; here the same CPU device told otherwise) copies its
    results and its inputs and gives the same bits, complete data, missing data and strips."""
    import pyopencl as cl

    x = rng.normal(size=(40, 12))
    gaps = x.copy()
    gaps[rng.random(gaps.shape) < 0.1] = np.nan
    expected = {name: clnet.pearson(v, backend=opencl_backend) for name, v in (("complete", x), ("gaps", gaps))}

    def no_copy(*args, **kwargs):
        raise AssertionError("a dense result was copied from the device")

    with monkeypatch.context() as m:
        m.setattr(cl, "enqueue_copy", no_copy)
        first = clnet.pearson(x, backend=opencl_backend)
    kept = first.copy()
    second = clnet.pearson(x[::-1], backend=opencl_backend)
    assert first.ctypes.data % 4096 == 0 and first.flags.c_contiguous and first.flags.writeable
    assert np.array_equal(first, kept) and not np.shares_memory(first, second)
    assert np.array_equal(second, first[::-1, ::-1])
    monkeypatch.setattr(opencl_backend, "shares_host_memory", False)
    for name, v in (("complete", x), ("gaps", gaps)):
        assert np.array_equal(clnet.pearson(v, backend=opencl_backend), expected[name], equal_nan=True), name
    monkeypatch.setattr(opencl_backend, "max_alloc", 40 * 40 * 4 - 1)  # strips through block()
    assert np.array_equal(clnet.pearson(gaps, backend=opencl_backend), expected["gaps"], equal_nan=True)


def test_rows_of_tiny_spread_are_standardised_not_zeroed(any_backend, rng):
    """Rows whose deviations are about 1e-170 (their squares underflow) correlate as the
    same rows at unit scale: the power-of-two rescaling catches them (it once left them zero,
    so NaN), and so do rows of huge values."""
    x = rng.normal(size=(6, 9))
    want = clnet.pearson(x, backend="numpy", dtype="float64")
    for scale in (1e-170, 1e170):
        got = clnet.pearson(x * scale, backend=any_backend, dtype=np.float64 if any_backend.supports_float64
                            else np.float32)
        assert np.allclose(got, want, atol=1e-5), scale


def test_degenerate_shapes(any_backend):
    assert clnet.pearson(np.empty((0, 5)), backend=any_backend).shape == (0, 0)
    assert np.isnan(clnet.pearson(np.ones((3, 0)), backend=any_backend)).all()
    r = clnet.pearson(np.arange(6.0).reshape(3, 2), transform="diff", backend=any_backend)
    assert r.shape == (3, 3) and np.isnan(r).all()  # one difference each: below min_overlap
    r = clnet.pearson(np.array([[1.0, 2, 3]]), min_overlap=1, backend=any_backend)
    assert r[0, 0] == pytest.approx(1.0)


def test_progress_bar(any_backend, rng, capsys):
    pytest.importorskip("tqdm")
    x = rng.normal(size=(40, 10))
    clnet.pearson_topk(x, 3, backend=any_backend, progress=True)
    assert "pearson top-k" in capsys.readouterr().err
    clnet.pearson_topk(x, 3, backend=any_backend)  # fast: no bar
    assert "pearson top-k" not in capsys.readouterr().err


# --- DataFrames ------------------------------------------------------------------------------
def test_dataframe_round_trip(any_backend, rng):
    x = rng.normal(size=(6, 12))
    x[rng.random(x.shape) < 0.3] = np.nan
    names = [f"curve{i}" for i in range(6)]
    df = pd.DataFrame(x, index=names, columns=[f"t{j}" for j in range(12)])
    r = clnet.pearson(df, backend=any_backend)
    assert isinstance(r, pd.DataFrame)
    assert list(r.index) == names and list(r.columns) == names
    assert np.array_equal(r.to_numpy(), clnet.pearson(x, backend=any_backend), equal_nan=True)
    assert np.nanmax(np.abs(r.to_numpy() - df.T.corr().to_numpy())) <= 1e-5
    cross = clnet.pearson(df, df.iloc[:2], backend=any_backend)
    assert list(cross.columns) == names[:2]
    idx, val = clnet.pearson_topk(df, 2, backend=any_backend)
    assert list(idx.index) == names and idx.shape == (6, 2)
    nullable = df.astype("Float64")
    assert np.array_equal(clnet.pearson(nullable, backend=any_backend).to_numpy(), r.to_numpy(),
                          equal_nan=True)


# --- bad input (issue point 7): refused before any device work --------------------------------
class RecordingBackend(Backend):
    spec = "recording"
    description = "records operations; never computes"

    def __init__(self):
        self.calls = []

    def pearson_plan(self, *args):
        self.calls.append(args)
        raise AssertionError("device work started before validation")


X = np.arange(20.0).reshape(4, 5)


@pytest.mark.parametrize("call, error, words", [
    (lambda be: clnet.pearson(np.arange(5.0), backend=be), ValueError, "X must be 2-dimensional"),
    (lambda be: clnet.pearson(np.zeros((2, 3, 4)), backend=be), ValueError, "X must be 2-dimensional"),
    (lambda be: clnet.pearson(X, np.zeros((2, 4)), backend=be), ValueError, "Y must have as many columns"),
    (lambda be: clnet.pearson(X, np.zeros(5), backend=be), ValueError, "Y must be 2-dimensional"),
    (lambda be: clnet.pearson(X, min_overlap=0, backend=be), ValueError, "min_overlap"),
    (lambda be: clnet.pearson(X, min_overlap=2.5, backend=be), TypeError, "min_overlap"),
    (lambda be: clnet.pearson(X, transform="log", backend=be), ValueError, "transform"),
    (lambda be: clnet.pearson(X.astype(object), backend=be), TypeError, "X must be a numeric array"),
    (lambda be: clnet.pearson(X.astype(str), backend=be), TypeError, "X must be a numeric array"),
    (lambda be: clnet.pearson([["a", "b"], ["c", "d"]], backend=be), TypeError, "X must be a numeric array"),
    (lambda be: clnet.pearson(X > 3, backend=be), TypeError, "X must hold real numbers"),
    (lambda be: clnet.pearson(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}), backend=be), TypeError,
     "column 'b'"),
    (lambda be: clnet.pearson_threshold(X, 1.5, backend=be), ValueError, "threshold must lie in [0, 1]"),
    (lambda be: clnet.pearson_threshold(X, -0.1, backend=be), ValueError, "threshold must lie in [0, 1]"),
    (lambda be: clnet.pearson_threshold(X, float("nan"), backend=be), ValueError, "threshold"),
    (lambda be: clnet.pearson_threshold(X, "0.5", backend=be), TypeError, "threshold"),
    (lambda be: clnet.pearson_topk(X, 0, backend=be), ValueError, "k must be >= 1"),
    (lambda be: clnet.pearson_topk(X, 4, backend=be), ValueError, "k must be smaller than the number of rows"),
    (lambda be: clnet.pearson_topk(X, 3, X[:2], backend=be), ValueError, "k must be at most"),
    (lambda be: clnet.pearson_topk(np.arange(5.0), 1, backend=be), ValueError, "X must be 2-dimensional"),
    (lambda be: clnet.pearson_topk(X, 1.0, backend=be), TypeError, "k must be an integer"),
])
def test_bad_input_is_refused_before_device_work(call, error, words):
    be = RecordingBackend()
    with pytest.raises(error) as info:
        call(be)
    assert words in str(info.value)
    assert be.calls == []


@pytest.mark.parametrize("missing", [0.02, 0.1, 0.4])
def test_opencl_sparse_and_masked_paths_agree(opencl_backend, rng, monkeypatch, missing):
    """Both ways of computing the masked sums, forced on the same data, match the reference."""
    x = 1e4 + rng.normal(size=(77, 41))
    x[rng.random(x.shape) < missing] = np.nan
    x[5] = np.nan
    x[6, ::2] = 3.0
    y = x[::3] + rng.normal(size=(26, 41))
    ref = clnet.pearson(x, backend="numpy", dtype="float64")
    ref_xy = clnet.pearson(x, y, backend="numpy", dtype="float64")
    for limit in (0.0, 1.0):
        force_params(monkeypatch, opencl_backend, "pearson", sparse_missing_max=limit)
        for dt, tol in (("float32", 1e-4), ("float64", 1e-10)):
            got = clnet.pearson(x, backend=opencl_backend, dtype=dt)
            assert np.array_equal(np.isnan(got), np.isnan(ref)), (limit, dt)
            assert np.nanmax(np.abs(got - ref)) <= tol, (limit, dt)
            got = clnet.pearson(x, y, backend=opencl_backend, dtype=dt)
            assert np.array_equal(np.isnan(got), np.isnan(ref_xy)), (limit, dt)
            assert np.nanmax(np.abs(got - ref_xy)) <= tol, (limit, dt)


@pytest.mark.parametrize("k", [1, 5, 64])
def test_topk_across_many_strips_with_ties(any_backend, rng, monkeypatch, k):
    """Coarse values make exact ties; a tiny strip budget makes candidates cross strips."""
    x = np.round(rng.normal(size=(150, 6)) * 1.5)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[7] = x[3]
    x[90] = x[3] * 2 + 1
    monkeypatch.setattr(P, "STRIP_BUDGET", 150 * 4 * 16)
    idx, val = clnet.pearson_topk(x, k, backend=any_backend)
    want_idx, want_val = expected_topk(clnet.pearson(x, backend=any_backend), k, True)
    assert np.array_equal(idx, want_idx)
    assert np.allclose(val, want_val, atol=1e-6, rtol=0, equal_nan=True)


# --- inputs a new user passes --------------------------------------------------------------
def test_torch_tensors_are_accepted_like_arrays():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).normal(size=(12, 9))
    t = torch.tensor(x, dtype=torch.float32)
    np.testing.assert_array_equal(clnet.pearson(t, backend="numpy"), clnet.pearson(x.astype(np.float32), backend="numpy"))
    idx_t, val_t = clnet.pearson_topk(t, 3, backend="numpy")
    idx_a, val_a = clnet.pearson_topk(x.astype(np.float32), 3, backend="numpy")
    np.testing.assert_array_equal(idx_t, idx_a)
    np.testing.assert_array_equal(val_t, val_a)
    assert clnet.pearson_threshold(t, 0.1, backend="numpy").nnz == clnet.pearson_threshold(x, 0.1, backend="numpy").nnz
    np.testing.assert_array_equal(clnet.pearson(t[:4], torch.tensor(x[4:]), backend="numpy"),
                                  clnet.pearson(x[:4].astype(np.float32), x[4:], backend="numpy"))


def test_masked_entries_are_missing_values():
    x = np.array([[1.0, 2.0, 3.0, 4.0, 100.0], [2.0, 4.0, 6.0, 8.0, 1.0], [5.0, 1.0, 4.0, 2.0, 3.0]])
    masked = np.ma.masked_array(x, mask=[[0, 0, 0, 0, 1], [0] * 5, [0] * 5])
    r = clnet.pearson(masked, backend="numpy", dtype=np.float64)
    # Independent: rows 0 and 1 over their common positions 0..3 are perfectly correlated.
    assert r[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert r[0, 2] == pytest.approx(np.corrcoef(x[0, :4], x[2, :4])[0, 1], abs=1e-12)
    assert r[1, 2] == pytest.approx(np.corrcoef(x[1], x[2])[0, 1], abs=1e-12)
    with_nan = x.copy()
    with_nan[0, 4] = np.nan
    np.testing.assert_array_equal(r, clnet.pearson(with_nan, backend="numpy", dtype=np.float64))
    idx, val = clnet.pearson_topk(np.ma.masked_array(x, mask=masked.mask), 1, backend="numpy", dtype=np.float64)
    assert idx[0, 0] == 1 and val[0, 0] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(TypeError, match="masked array of dtype bool"):
        clnet.pearson(np.ma.masked_array(x > 2, mask=masked.mask), backend="numpy")


def test_other_entry_points_refuse_masked_arrays():
    x = np.ma.masked_array(np.ones((2, 3)), mask=[[0, 1, 0], [0, 0, 0]])
    with pytest.raises(TypeError, match="inputs is a NumPy masked array"):
        clnet.fnn_forward([3, 1], np.ones(3), x, backend="numpy")
    with pytest.raises(TypeError, match="weights is a NumPy masked array"):
        clnet.FNN.from_structure([3, 1], np.ma.masked_array(np.ones(3), mask=[0, 1, 0]))
    cell = clnet.LSTMCell(3, 4, seed=0)
    state = cell.initial_state(2, backend="numpy")
    with pytest.raises(TypeError, match="x is a NumPy masked array"):
        cell.step(x, state)
