"""Conformance suite: every backend against the float64 NumPy reference.

It ships inside the package so that users can run it on their own device:

    python -m clnet conformance [--backend SPEC] [--max-examples N]

and the project's own tests (tests/test_conformance.py) run the very same checks.
A *check* is an operation plus a hypothesis strategy of cases plus an ``evaluate``
function that runs one case on a backend and returns comparisons against the
reference; ``evaluate`` may also raise AssertionError for properties that are not
comparisons (a sequence equals its steps, a state is not aliased, ...).

Operation families register their checks in ``clnet/conformance/<family>.py``;
:data:`FAMILY_MODULES` lists those modules. Before any of them, the API check
(:func:`api_check`, operation ``contract.api``) compares the backend with the contract of
clnet/contract.py: every operation of every family it declares is present with the
contract's signature. Checks of a family a backend does not declare are skipped.
"""
from __future__ import annotations

import importlib
import math
import os
import textwrap
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import contract
from ..backend import Backend, backends, get_backend
from ..tolerances import tolerance

FAMILY_MODULES = ["clnet.conformance.fnn", "clnet.conformance.rnn", "clnet.conformance.bptt",
                  "clnet.conformance.pearson", "clnet.conformance.mcl", "clnet.conformance.paths",
                  "clnet.conformance.nonfinite"]

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _HYPOTHESIS_ERROR = None
except ImportError as exc:  # pragma: no cover - hypothesis is a test/conformance dependency
    _HYPOTHESIS_ERROR = str(exc)


def _register_profiles():
    common = dict(deadline=None, database=None, print_blob=True,
                  suppress_health_check=list(HealthCheck))
    # Kernel compilation and device start-up break per-example deadlines: none anywhere.
    settings.register_profile("dev", max_examples=10, **common)
    # ci: what CI and the README's test command run; sized so that the whole suite, on numpy
    # and two CPU OpenCL devices, stays under 4 minutes on a quiet 2-core machine.
    settings.register_profile("ci", max_examples=20, derandomize=True, **common)
    settings.register_profile("thorough", max_examples=400, **common)


if _HYPOTHESIS_ERROR is None:
    _register_profiles()


@dataclass
class Comparison:
    """One output of one case: the backend's value, the float64 reference, and the
    same reference computed in the backend's precision (optional control)."""

    name: str
    got: np.ndarray
    reference: np.ndarray
    control: Optional[np.ndarray] = None


@dataclass
class Check:
    operation: str            # printed name, e.g. "fnn.layered"
    family: str               # tolerance table key, e.g. "fnn"
    strategy: Callable[[], "st.SearchStrategy"]  # built lazily (hypothesis is optional at import)
    evaluate: Callable[[Backend, np.dtype, object], List[Comparison]]
    describe: Callable[[object], str] = repr  # a reproduction snippet for a failing case


_CHECKS: Dict[str, Check] = {}


def register(check: Check) -> Check:
    if check.operation in _CHECKS:
        raise ValueError(f"conformance check {check.operation!r} is registered twice")
    _CHECKS[check.operation] = check
    return check


def checks() -> List[Check]:
    for mod in FAMILY_MODULES:
        importlib.import_module(mod)
    return list(_CHECKS.values())


class ConformanceFailure(AssertionError):
    pass


def compare(cmp: Comparison, family: str, dtype) -> Tuple[float, float, str]:
    """(worst ratio of error to tolerance, worst absolute error, message if failing)."""
    tol = tolerance(family, dtype)
    got = np.asarray(cmp.got, dtype=np.float64)
    ref = np.asarray(cmp.reference, dtype=np.float64)
    if got.shape != ref.shape:
        return math.inf, math.inf, f"{cmp.name}: shape {got.shape}, reference shape {ref.shape}"
    if got.size == 0:
        return 0.0, 0.0, ""
    # Values beyond the dtype's range are infinite there; compare at the backend's precision.
    with np.errstate(over="ignore", invalid="ignore"):
        ref_at = ref.astype(dtype).astype(np.float64)
    ctl = None if cmp.control is None else np.asarray(cmp.control, dtype=np.float64)
    if ctl is not None and ctl.shape == ref_at.shape:
        # Where the same computation in the backend's precision over- or underflows to a
        # different finiteness than float64, the float64 value is not representable in
        # this dtype: there the backend must match the same-precision computation instead.
        out_of_range = np.isfinite(ctl) != np.isfinite(ref_at)
        ref_at = np.where(out_of_range, ctl, ref_at)
    fin = np.isfinite(ref_at)
    same_nonfinite = np.where(np.isnan(ref_at), np.isnan(got), got == ref_at)
    bad_nonfinite = ~fin & ~same_nonfinite
    if bad_nonfinite.any():
        idx = tuple(int(i) for i in np.argwhere(bad_nonfinite)[0])
        return math.inf, math.inf, (f"{cmp.name}: at index {idx} the reference is {ref_at[idx]!r} "
                                    f"but the backend gave {got[idx]!r}")
    safe_ref = np.where(fin, ref_at, 0.0)
    err = np.where(fin, np.abs(np.where(np.isfinite(got), got, 0.0) - safe_ref), 0.0)
    err = np.where(fin & ~np.isfinite(got), np.inf, err)
    allowed = tol.atol + tol.rtol * np.abs(safe_ref)
    if ctl is not None and tol.control:
        ctl_err = np.where(np.isfinite(ctl) & fin, np.abs(np.where(np.isfinite(ctl), ctl, 0.0) - safe_ref), 0.0)
        allowed = allowed + tol.control * ctl_err
    # A zero allowance (exact results, e.g. path counts) accepts only a zero error.
    ratio = np.divide(err, allowed, out=np.where(err > 0, np.inf, 0.0), where=allowed > 0)
    worst = float(np.max(ratio))
    max_err = float(np.max(err))
    if worst <= 1.0:
        return worst, max_err, ""
    order = np.argsort(ratio, axis=None)[::-1][:5]
    lines = []
    for flat in order:
        idx = np.unravel_index(flat, ratio.shape)
        if ratio[idx] <= 1.0:
            break
        lines.append(f"  index {tuple(int(i) for i in idx)}: got {got[idx]!r}, reference {ref_at[idx]!r}, "
                     f"error {err[idx]:.3g} > allowed {allowed[idx]:.3g}")
    return worst, max_err, f"{cmp.name}: worst mismatches\n" + "\n".join(lines)


@dataclass
class Result:
    backend: str
    operation: str
    dtype: str
    cases: int = 0
    worst_ratio: float = 0.0
    max_error: float = 0.0
    failure: str = ""
    skipped: str = ""

    @property
    def passed(self) -> bool:
        return not self.failure and not self.skipped

    def line(self) -> str:
        if self.skipped:
            status = f"SKIP ({self.skipped})"
        else:
            status = "pass" if self.passed else "FAIL"
        if self.operation == API_CHECK:
            return f"{self.backend:<14} {self.operation:<26} {'':<8} operations={self.cases:<3} {'':<38}{status}"
        return (f"{self.backend:<14} {self.operation:<26} {self.dtype:<8} cases={self.cases:<5} "
                f"worst error={self.max_error:.2e} ({self.worst_ratio:.2f} of tolerance)  {status}")


def run_check(backend: Backend, check: Check, dtype, *, max_examples: Optional[int] = None,
              profile: Optional[str] = None) -> Result:
    """Run one check on one backend and dtype with hypothesis; never raises for a mismatch."""
    if _HYPOTHESIS_ERROR is not None:
        raise RuntimeError(f"the conformance suite needs hypothesis ({_HYPOTHESIS_ERROR}); "
                           f"pip install hypothesis")
    dt = np.dtype(dtype)
    res = Result(backend.spec, check.operation, dt.name)
    if dt == np.float64 and not backend.supports_float64:
        res.skipped = "device has no float64"
        return res
    base = settings.get_profile(profile or os.environ.get("CLNET_CONFORMANCE_PROFILE", "ci"))
    opts = {} if max_examples is None else {"max_examples": max_examples}
    failing_case: List[object] = []

    @settings(base, **opts)
    @given(check.strategy())
    def prop(case):
        res.cases += 1
        failing_case[:] = [case]
        msgs = []
        for cmp in check.evaluate(backend, dt, case):
            worst, err, msg = compare(cmp, check.family, dt)
            res.worst_ratio = max(res.worst_ratio, worst)
            res.max_error = max(res.max_error, err)
            if msg:
                msgs.append(msg)
        if msgs:
            raise ConformanceFailure("\n".join(msgs))

    try:
        prop()
    except Exception as exc:  # a mismatch, a property, or an unexpected error: all are failures
        snippet = check.describe(failing_case[0]) if failing_case else "(no case)"
        res.failure = (f"{type(exc).__name__}: {exc}\nreproduce with backend {backend.spec!r}, "
                       f"dtype {dt.name}:\n{textwrap.indent(snippet, '    ')}")
    return res


API_CHECK = "contract.api"


def _plan_mismatches(backend: Backend) -> List[str]:
    """The Pearson plan's methods against :class:`clnet.contract.PearsonPlan` (a plan of two
    small rows is made for it)."""
    from ..common.pearson import standardise_rows

    rows = standardise_rows(np.array([[1.0, 2.0, 4.0], [2.0, 1.0, 0.0]]))
    plan = backend.op("pearson_plan")(rows, None, np.dtype(np.float32), 2)
    problems = []
    for op in contract.PearsonPlan.operations():
        mine = getattr(type(plan), op, None)
        if mine is None:
            problems.append(f"pearson plan.{op}: missing")
            continue
        want = contract.parameters_of(vars(contract.PearsonPlan)[op])
        if contract.parameters_of(mine) != want:
            problems.append(f"pearson plan.{op}: parameters differ from the contract's {[n for n, _ in want]}")
    if not isinstance(getattr(plan, "strip_rows", None), int) or plan.strip_rows < 1:
        problems.append("pearson plan.strip_rows: must be a positive int")
    return problems


def api_check(backend: Backend) -> Result:
    """The backend against the contract: declared families complete, signatures equal."""
    res = Result(backend.spec, API_CHECK, "-")
    declared = contract.families_of(backend)
    problems = [] if declared else ["it declares no family of clnet/contract.py"]
    problems += contract.signature_mismatches(backend)
    if contract.PearsonOps in declared and not problems:
        try:
            problems += _plan_mismatches(backend)
        except Exception as exc:  # a plan that cannot even be made fails the check
            problems.append(f"pearson_plan on two rows raised {type(exc).__name__}: {exc}")
    res.cases = sum(len(f.operations()) for f in declared)
    if problems:
        res.failure = "the backend does not match clnet/contract.py:\n  " + "\n  ".join(problems)
    return res


def _declares(backend: Backend, check: Check) -> bool:
    family = contract.operation_family_by_name(check.operation.split(".")[0])
    return family is None or family in contract.families_of(backend)


def usable_backends(spec: Optional[str] = None) -> List[Backend]:
    if spec:
        return [get_backend(spec)]
    return [get_backend(info.spec) for info in backends() if info.usable]


SWEEP_EXAMPLES = 4  # hypothesis examples per check and configuration in a sweep


def configurations(backend: Backend, check: Check) -> List[Tuple[str, Optional[dict]]]:
    """(label, parameters) of every configuration ``check`` runs in a sweep: the defaults,
    then each allowed value of each tunable parameter of its family with the others at
    their defaults (clnet/opencl/tuning.py). One unlabelled entry for backends without
    tunable kernels."""
    tuning = getattr(backend, "tuning", None)  # an OpenCL backend's DeviceTuning
    family = tuning.families().get(check.operation.split(".")[0]) if hasattr(tuning, "families") else None
    if family is None:
        return [("", None)]
    shape = {"kind": "lstm", "batch": 64, "hidden": 64, "rows": 64}
    configs = family.sweep(tuning.props, {k: shape[k] for k in family.exact + family.nearest})
    base = configs[0]
    out = [("[defaults]", base)]
    for c in configs[1:]:
        changed = [k for k, v in c.items() if base[k] != v]
        if not all(_affects(k, check.operation) for k in changed):
            continue
        out.append(("[" + ", ".join(f"{k}={c[k]}" for k in changed) + "]", c))
    return out


def _affects(parameter: str, operation: str) -> bool:
    """Whether a tunable parameter can change what ``operation`` runs: the FNN family's
    ``layered_*`` parameters configure the layered kernel only, ``graph_*`` the population
    kernel (fnn.graph and fnn.population)."""
    if parameter.startswith("layered_"):
        return operation == "fnn.layered"
    if parameter.startswith("graph_"):
        return operation in ("fnn.graph", "fnn.population")
    return True


def run(specs: Optional[Sequence[str]] = None, *, max_examples: Optional[int] = None,
        operations: Optional[Sequence[str]] = None, dtypes=("float32", "float64"),
        profile: Optional[str] = None, echo=print, sweep: bool = False) -> List[Result]:
    """Run every registered check on the given backends (default: all usable ones). With
    ``sweep``, checks of families with tunable parameters run once per configuration of
    :func:`configurations` (:data:`SWEEP_EXAMPLES` examples each unless ``max_examples``)."""
    targets: List[Backend] = []
    for spec in (specs or [None]):
        targets.extend(usable_backends(spec))
    results = []
    for backend in targets:
        if not operations or any(API_CHECK.startswith(o) or o.startswith(API_CHECK) for o in operations):
            results.append(api_check(backend))
            if echo:
                echo(results[-1].line())
        for check in checks():
            if operations and not any(check.operation.startswith(o) for o in operations):
                continue
            variants = configurations(backend, check) if sweep else [("", None)]
            for label, config in variants:
                for dt in dtypes:
                    if not _declares(backend, check):
                        res = Result(backend.spec, check.operation, np.dtype(dt).name,
                                     skipped="the backend does not implement this family")
                    elif config is None:
                        res = run_check(backend, check, dt, max_examples=max_examples, profile=profile)
                    else:
                        with backend.tuning.overriding(check.operation.split(".")[0], config):
                            res = run_check(backend, check, dt, profile=profile,
                                            max_examples=max_examples or SWEEP_EXAMPLES)
                        res.operation = f"{check.operation} {label}"
                    results.append(res)
                    if echo:
                        echo(res.line())
    return results
