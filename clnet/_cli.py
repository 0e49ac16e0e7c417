"""Helpers shared by the command line's parsers: ``--help`` as plain text, not reStructuredText."""
from __future__ import annotations

import argparse
import re

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(doc: str) -> str:
    """A module docstring as plain text: roles like :func:`x` and literals like ``x`` become x."""
    text = _ROLE.sub(lambda m: m.group(2).split(".")[-1] if m.group(1) else m.group(2), doc or "")
    return _LITERAL.sub(r"\1", text).strip()


def parser(prog: str, doc: str, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is ``doc`` in plain text, line breaks kept."""
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(prog=prog, description=plain(doc), **kwargs)
