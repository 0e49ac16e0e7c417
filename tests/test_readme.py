"""Every Python example in the README (and the docs it includes) runs as written."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("**/*.md"))


def _blocks():
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)):
            yield pytest.param(block, id=f"{doc.relative_to(ROOT)}#{i}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_readme_example_runs(code, monkeypatch, capsys):
    monkeypatch.delenv("CLNET_BACKEND", raising=False)
    exec(compile(code, "<readme>", "exec"), {"__name__": "__readme__"})


def test_readme_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "python -m clnet demo" in first_block
    assert "python -m pytest" in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'CLNET_REQUIRE_OPENCL=1 python3 -m pytest' in ci
