"""The layout's rules, checked on the source (docs/ARCHITECTURE.md explains them).

- The public modules (everything under clnet/ but the OpenCL package) import neither
  pyopencl nor a backend package (clnet.opencl, clnet_fallback), not even lazily.
- The NumPy reference (fallback/) imports nothing of the OpenCL package or pyopencl, and
  the OpenCL package nothing of the NumPy reference.
- No module of clnet/ or fallback/ is longer than 700 lines.
- The OpenCL package and fallback/ have the same family modules.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLNET = ROOT / "clnet"
FALLBACK = ROOT / "fallback"
MAX_LINES = 700


def _module_name(path: pathlib.Path) -> str:
    if path.is_relative_to(FALLBACK):
        parts = ["clnet_fallback"] + list(path.relative_to(FALLBACK).with_suffix("").parts)
    else:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(p for p in parts if p != "__init__")


def imported_modules(path: pathlib.Path, name: str = None):
    """Every module ``path`` (the module ``name``) imports, anywhere in the file, with
    relative imports resolved."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # "from . import opencl"
    return found


def _violations(paths, forbidden, name=None):
    bad = []
    for path in paths:
        for mod in imported_modules(path, name):
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.name} imports {mod}")
    return bad


PUBLIC = [p for p in CLNET.rglob("*.py") if not p.is_relative_to(CLNET / "opencl")]
OPENCL = list((CLNET / "opencl").rglob("*.py"))
REFERENCE = list(FALLBACK.rglob("*.py"))


def test_public_modules_import_no_backend_and_no_pyopencl():
    assert PUBLIC and any(p.name == "fnn.py" for p in PUBLIC)
    assert _violations(PUBLIC, ["pyopencl", "clnet.opencl", "clnet_fallback"]) == []


def test_the_backends_do_not_import_each_other():
    assert _violations(REFERENCE, ["pyopencl", "clnet.opencl"]) == []
    assert _violations(OPENCL, ["clnet_fallback"]) == []


def test_no_module_is_longer_than_700_lines():
    long = {str(p.relative_to(ROOT)): n for p in CLNET.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    long.update({str(p.relative_to(ROOT)): n for p in REFERENCE
                 if (n := len(p.read_text().splitlines())) > MAX_LINES})
    assert long == {}


def test_backends_have_the_same_family_modules_as_the_kernels():
    families = {p.stem for p in (ROOT / "kernels").glob("*.cl")}
    assert {"fnn", "rnn", "bptt", "pearson"} <= families
    assert families <= {p.stem for p in OPENCL}
    assert families <= {p.stem for p in REFERENCE}


@pytest.mark.parametrize("source, forbidden", [
    ("import pyopencl as cl\n", "pyopencl"),
    ("from .opencl import fnn\n", "clnet.opencl"),
    ("from . import opencl\n", "clnet.opencl"),
    ("def f():\n    import clnet_fallback.rnn\n", "clnet_fallback"),
])
def test_the_import_rule_catches_every_form(tmp_path, source, forbidden):
    """The checker itself: each way of importing a backend from a public module is seen."""
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert _violations([probe], [forbidden], name="clnet.probe") != []
    probe.write_text("import numpy as np\nfrom .common import packing\n")
    assert _violations([probe], [forbidden], name="clnet.probe") == []


def test_shared_host_code_imports_nothing_above_it():
    shared = list((CLNET / "common").rglob("*.py")) + [CLNET / f for f in
                                                        ("functions.py", "_validate.py", "genomes.py", "tolerances.py")]
    allowed = {"clnet.common", "clnet.functions", "clnet._validate"}
    bad = [f"{p.name} imports {m}" for p in shared for m in imported_modules(p)
           if m.startswith("clnet") and not any(m == a or m.startswith(a + ".") for a in allowed)]
    assert bad == []
