"""The command line, run as a user would, from outside the repository."""
import os
import subprocess
import sys

from conftest import OPENCL


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd, timeout=600, env=None):
    env = dict(env or os.environ)
    env.pop("CLNET_BACKEND", None)
    # From outside the repository, but the package of this checkout (not another install).
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "clnet", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_info_lists_backends_and_the_default(tmp_path):
    res = _run("info", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "numpy" in res.stdout and "usable" in res.stdout
    for spec in OPENCL:
        assert spec in res.stdout
    expected_default = OPENCL[0] if OPENCL else "numpy"
    assert f"default backend: {expected_default}" in res.stdout


def test_demo_checks_against_the_reference(tmp_path):
    res = _run("demo", "--networks", "40", "--inputs", "300", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "matches" in res.stdout and "speed-up over the NumPy fallback" in res.stdout


# The benchmarks themselves: tests/test_bench.py.


def test_unknown_command_arguments_fail_clearly(tmp_path):
    res = _run("bench", "nope", cwd=tmp_path)
    assert res.returncode != 0 and "unknown benchmark 'nope'; choose from: bptt, distributed, fnn, " in res.stderr
    assert "paths" in res.stderr and "pearson" in res.stderr and "ppo" in res.stderr


# --- defects a new user hit ------------------------------------------------------------------
import argparse
import importlib

import pytest

from clnet import __main__ as cli_main


def test_conformance_with_a_spec_matching_nothing_prints_one_line(capsys):
    assert cli_main.main(["conformance", "--backend", "opencl:9"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "opencl:9" in err and "Traceback" not in err


def test_conformance_with_an_unknown_operation_lists_the_valid_names(capsys):
    assert cli_main.main(["conformance", "--backend", "numpy", "--operation", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "fnn.population" in err and "pearson.topk" in err


def test_conformance_without_hypothesis_says_how_to_get_it(capsys, monkeypatch):
    from clnet import conformance

    monkeypatch.setattr(conformance, "_HYPOTHESIS_ERROR", "No module named 'hypothesis'")
    assert cli_main.main(["conformance", "--backend", "numpy"]) == 2
    out = capsys.readouterr()
    assert "pip install hypothesis" in out.err and "passed" not in out.out


def test_conformance_explains_the_scale_of_its_figures(capsys):
    assert cli_main.main(["conformance", "--backend", "numpy", "--operation", "fnn.seed", "--max-examples", "2"]) == 0
    out = capsys.readouterr().out
    assert "of tolerance" in out and "passes at <= 1.00" in out and "float64 reference" in out


def test_an_invalid_clnet_backend_variable_is_named_in_the_error(monkeypatch):
    import clnet

    monkeypatch.setenv("CLNET_BACKEND", "opencl:9")
    with pytest.raises(ValueError, match="CLNET_BACKEND='opencl:9'"):
        clnet.fnn_forward([1, 1], [1.0], [1.0])


class _Help(Exception):
    pass


MODULES = ["clnet.__main__"] + list(cli_main.BENCHMARKS.values()) + list(cli_main.DEMOS.values())


@pytest.mark.parametrize("module", MODULES)
def test_every_option_has_help_and_no_rst_markup(module, monkeypatch):
    """Each parser's --help: every option explained, no reStructuredText, no internal wording."""
    seen = []

    def capture(parser, file=None):
        seen.append(parser)
        raise _Help

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", capture)
    with pytest.raises(_Help):
        importlib.import_module(module).main(["--help"])
    parsers = list(seen)
    for parser in list(parsers):  # the subcommands' parsers too
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    for parser in parsers:
        text = parser.format_help()
        for marker in ("``", ":func:", ":class:", ":meth:", "issue"):
            assert marker not in text, f"{parser.prog} --help shows {marker!r}:\n{text}"
        for action in parser._actions:
            if action.option_strings or action.dest not in ("command",):
                assert action.help, f"{parser.prog}: option {action.option_strings or action.dest} has no help text"
