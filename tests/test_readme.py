"""Every Python example in the README (and the docs it includes) runs as written."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("**/*.md"))


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_readme_examples_run(doc, monkeypatch, capsys):
    """The blocks of one document run in order in one namespace, as a reader would run them."""
    monkeypatch.delenv("CLNET_BACKEND", raising=False)
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks, f"{doc.name} has no Python example"
    namespace = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{doc.name} example {i + 1}", "exec"), namespace)


def test_readme_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    demo, tests = [ln for ln in first_block.replace("\\\n", " ").splitlines() if ln and not ln.startswith("#")]
    # Stock Debian and Ubuntu have no `python` and refuse system-wide pip installs: a venv each.
    for command in (demo, tests):
        assert "python3 -m venv .venv" in command and "pip install" in command
        assert " pip " not in f" {command} " and " python " not in f" {command} ", command
    # The first command needs no root: no apt, and the pip-only OpenCL runtime.
    assert "apt-get" not in demo and '".[cpu]"' in demo and ".venv/bin/python -m clnet demo" in demo
    assert "CLNET_REQUIRE_OPENCL=1 .venv/bin/python -m pytest" in tests and "[test,cpu]" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'CLNET_REQUIRE_OPENCL=1 python3 -m pytest' in ci
    # The tests marked slow, left out of a plain run, have their own command, and CI runs them.
    assert "CLNET_REQUIRE_OPENCL=1 .venv/bin/python -m pytest -n 2 -m slow" in text
    assert re.search(r"python3 -m pytest .*-m slow", ci)
    # CI installs both CPU OpenCL implementations: PoCL from apt, Intel's runtime from pip.
    assert "pocl-opencl-icd" in ci and '".[test,cpu]"' in ci


def test_readme_says_which_recurrent_calls_take_dtype():
    """The README once said every call takes dtype=, but step and sequence use the state's."""
    import inspect

    import clnet

    text = (ROOT / "README.md").read_text()
    assert "Every call takes `backend=`" not in text
    assert "`step` and `sequence` run on the backend and in the dtype of the state" in text
    for cls in (clnet.LSTMCell, clnet.GRUCell, clnet.RNNCell, clnet.LSTM):
        assert "dtype" in inspect.signature(cls.__call__).parameters
        assert "dtype" in inspect.signature(cls.initial_state).parameters
        assert "dtype" not in inspect.signature(cls.sequence).parameters
    assert "dtype" not in inspect.signature(clnet.LSTMCell.step).parameters
