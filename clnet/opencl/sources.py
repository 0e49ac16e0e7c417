"""The OpenCL C source of a kernel as the compiler receives it.

Two things are done on the host before a build, both to cut compile time, the largest part of
a first run (a fresh install compiled for about two minutes of the test suite's run):

* ``#include "x.h"`` lines are replaced by the file's text (each file once), so the build
  options carry no ``-I <folder>``. The compiled-binary caches (pyopencl's, PoCL's) key a
  program by its source and options; with the install folder in the options, every checkout,
  venv or reinstall compiled every kernel again.
* A program holds only the kernels asked for; the other ``__kernel`` definitions are blanked.
  Intel's CPU compiler spends time per kernel in the program (kernels/bptt.cl, which includes
  rnn.cl: 1.0 s for all seven kernels, 0.06-0.37 s for one), and a call builds one program per
  set of tuned defines, of which it uses one or two kernels.

Line numbers in build logs stay meaningful: each inlined file starts with a ``#line``
directive naming it, and blanked kernels keep their newlines.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

# Found in the comment-blanked text (so a commented-out include stays a comment); a comment
# after the file name is only blanks there.
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.M)  # each file is inlined once anyway
# attributes with one level of parentheses inside: __attribute__((vec_type_hint(float16)));
# a deeper one (aligned(sizeof(x))) would hide the kernel from both the cutter and the
# argument parser, so the kernels do not use them
_ATTRIBUTES = r"(?:__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)\s*)*"
_KERNEL_HEAD = re.compile(rf"^[ \t]*{_ATTRIBUTES}(?:__kernel|kernel)\s+{_ATTRIBUTES}void\s+(\w+)\s*\(", re.M | re.S)


def blank_comments(text: str) -> str:
    """``text`` with every comment's characters replaced by spaces (newlines kept), so that
    braces and kernel names inside comments are not mistaken for code; offsets are unchanged."""
    def blank(match: "re.Match[str]") -> str:
        return re.sub(r"[^\n]", " ", match.group(0))
    return re.sub(r"/\*.*?\*/|//[^\n]*", blank, text, flags=re.S)


def inline_includes(path: Path, _seen: Optional[set] = None) -> str:
    """The source of ``path`` with its quoted includes (found beside it) inlined once each."""
    seen = set() if _seen is None else _seen
    text = _PRAGMA_ONCE.sub("", path.read_text())
    pieces: List[str] = []
    pos = 0
    for match in _INCLUDE.finditer(blank_comments(text)):
        pieces.append(text[pos:match.start()])
        name = match.group(1)
        line_after = text.count("\n", 0, match.end()) + 2
        if name not in seen:
            seen.add(name)
            target = path.parent / name
            if not target.is_file():
                raise FileNotFoundError(f"{path.name} includes {name!r}, which is not in {path.parent}")
            pieces.append(f'#line 1 "{name}"\n{inline_includes(target, seen)}\n')
        pieces.append(f'#line {line_after} "{path.name}"')
        pos = match.end()
    pieces.append(text[pos:])
    return "".join(pieces)


def kernel_spans(source: str) -> List[Tuple[str, int, int]]:
    """(name, start, end) of every ``__kernel`` definition in ``source``, end past its ``}``."""
    code = blank_comments(source)
    spans = []
    for match in _KERNEL_HEAD.finditer(code):
        body = code.index("{", match.end())
        depth, i = 0, body
        while True:
            ch = code[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        spans.append((match.group(1), match.start(), i + 1))
    return spans


def only_kernels(source: str, keep: Iterable[str]) -> str:
    """``source`` with every kernel not in ``keep`` blanked (newlines kept). A kernel that a
    kept one calls, or that code outside every kernel names (a helper, a macro), stays too."""
    keep = set(keep)
    spans = kernel_spans(source)
    known = {name for name, _, _ in spans}
    missing = keep - known
    if missing:
        raise KeyError(f"no kernel {', '.join(sorted(missing))} in this source (it has {', '.join(sorted(known))})")
    code = blank_comments(source)
    outside, pos = [], 0
    for _, start, end in spans:
        outside.append(code[pos:start])
        pos = end
    outside = "".join(outside) + code[pos:]
    bodies = {name: code[start:end] for name, start, end in spans}
    reached = [name for name in known if re.search(rf"\b{name}\b", outside)] + list(keep)
    while reached:  # kernels named from kept code, to a fixed point
        name = reached.pop()
        keep.add(name)
        reached += [other for other in known - keep if re.search(rf"\b{other}\b", bodies[name])]
    out, pos = [], 0
    for name, start, end in spans:
        if name not in keep:
            out.append(source[pos:start])
            out.append("\n" * source.count("\n", start, end))
            pos = end
    out.append(source[pos:])
    return "".join(out)


@lru_cache(maxsize=None)
def program_source(folder: str, family: str, kernels: Optional[Tuple[str, ...]] = None) -> str:
    """What is built for ``kernels`` of ``kernels/<family>.cl`` (all of them for None)."""
    source = inline_includes(Path(folder) / f"{family}.cl")
    return source if kernels is None else only_kernels(source, kernels)
