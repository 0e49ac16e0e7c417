"""The installable conformance suite, run by the project's own tests on every usable backend."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import clnet
from clnet import conformance

from conftest import USABLE, install_plugin

CHECKS = conformance.checks()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("check", CHECKS, ids=[c.operation for c in CHECKS])
@pytest.mark.parametrize("spec", USABLE)
def test_conformance(spec, check, dtype):
    backend = clnet.get_backend(spec)
    result = conformance.run_check(backend, check, dtype)
    if result.skipped:
        pytest.skip(result.skipped)
    assert result.cases > 0
    assert result.passed, result.failure


def test_every_family_registers_checks():
    ops = {c.operation for c in CHECKS}
    assert {"fnn.seed_example", "fnn.layered", "fnn.graph", "fnn.population"} <= ops


def test_compare_reports_worst_indices():
    cmp = conformance.Comparison("out", np.array([1.0, 2.5, 3.0]), np.array([1.0, 2.0, 3.0]))
    worst, err, msg = conformance.compare(cmp, "fnn", np.float32)
    assert worst > 1 and err == pytest.approx(0.5)
    assert "index (1,)" in msg and "2.5" in msg


def test_compare_requires_matching_nonfinite_values():
    ref = np.array([np.nan, np.inf, 1.0])
    ok = conformance.compare(conformance.Comparison("o", ref.copy(), ref), "fnn", np.float32)
    assert ok[2] == ""
    bad = conformance.compare(conformance.Comparison("o", np.array([np.nan, -np.inf, 1.0]), ref), "fnn", np.float32)
    assert "index (1,)" in bad[2]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "clnet", *args], capture_output=True, text=True,
                          timeout=900, env=env)


def test_cli_conformance_prints_one_line_per_operation_and_dtype():
    res = _cli("conformance", "--backend", "numpy", "--max-examples", "3", "--operation", "fnn")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("numpy")]
    fnn_ops = [c.operation for c in CHECKS if c.operation.startswith("fnn")]
    assert len(lines) == 2 * len(fnn_ops)
    assert all("cases=" in ln and "worst error=" in ln and ln.endswith("pass") for ln in lines)


SKEWED_PLUGIN = textwrap.dedent('''
    import clnet_fallback
    from clnet.backend import BackendCandidate

    class Skewed(type(clnet_fallback.make_backend())):
        """Adds a small error to every layered output: the suite must catch it."""
        spec = "skewed"
        def fnn_layered(self, *args):
            return super().fnn_layered(*args) * 1.001 + 1e-3

    class Provider:
        name = "skewed"
        def candidates(self):
            return [BackendCandidate("skewed", "deliberately wrong", 0, Skewed)]
''')


def test_cli_conformance_fails_on_a_wrong_backend(tmp_path):
    install_plugin(tmp_path, "skewed_plugin", SKEWED_PLUGIN, "[clnet.backends]\nskewed = skewed_plugin:Provider\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    res = _cli("conformance", "--backend", "skewed", "--max-examples", "5", "--operation", "fnn.layered", env=env)
    assert res.returncode != 0
    assert "FAIL" in res.stdout and "reproduce with" in res.stdout


def _layered_shifted_by(shift):
    """The NumPy backend with every layered evaluation off by ``shift`` (what another
    summation order, in a BLAS or a compiler, does to a correct backend, when small)."""
    base = type(clnet.get_backend("numpy"))

    class Shifted(base):
        def fnn_layered(self, net, x, dtype):
            return (super().fnn_layered(net, x, dtype) + shift).astype(dtype)

    return Shifted()


# The case a correct numpy backend failed with PyPI's numpy (OpenBLAS 0.3.31, SkylakeX
# kernels): 3.8e-6 on an output near zero, against a bare allclose(atol=1e-6).
ISSUE_CASE = {'n_inputs': 1, 'members': [{'layered': [1, 6, 4, 2], 'activation': 'identity', 'seed': 218}],
              'batch': 1000, 'seed': 0}


def test_population_members_alone_are_judged_by_the_tolerance_table():
    from clnet.conformance import fnn as conformance_fnn

    comparisons = conformance_fnn._eval_population(_layered_shifted_by(3.8e-6), np.dtype(np.float32), ISSUE_CASE)
    assert any(c.name == "network 0 evaluated alone" for c in comparisons)
    assert all(conformance.compare(c, "fnn", np.float32)[2] == "" for c in comparisons)
    # A real error in the member evaluated alone still fails.
    comparisons = conformance_fnn._eval_population(_layered_shifted_by(1e-2), np.dtype(np.float32), ISSUE_CASE)
    failing = [c.name for c in comparisons if conformance.compare(c, "fnn", np.float32)[2]]
    assert failing == ["network 0 evaluated alone"]


def test_no_conformance_check_compares_with_a_bare_allclose():
    """Every numerical comparison goes through conformance.compare and the tolerance table."""
    import pathlib
    import re

    folder = pathlib.Path(conformance.__file__).parent
    for path in folder.glob("*.py"):
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        assert not re.search(r"\ballclose\b|assert_allclose|isclose", code), f"{path.name} compares outside the table"
