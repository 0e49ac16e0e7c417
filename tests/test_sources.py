"""What the OpenCL compiler is given (clnet/opencl/sources.py) and how kernels are launched
so that a compiled program is reused: no folder in the build options, one kernel per
program, and on PoCL one local size per kernel whatever the shape."""
import numpy as np
import pytest

import clnet
from clnet.opencl import args as kernel_args
from clnet.opencl import kernel_dir
from clnet.opencl.args import parse_signatures
from clnet.opencl.sources import only_kernels, program_source

from conftest import OPENCL

SYNTHETIC = """
#define TWICE(x) (2 * (x))
// a comment with a brace { and __kernel void decoy(int a) { }
inline int helper(int a) { return TWICE(a); }
__kernel void first(__global int *x) { if (x[0] > 0) { x[0] = helper(x[0]); } }
/* __kernel void also_a_decoy() { { */
__attribute__((reqd_work_group_size(1, 1, 1)))
__kernel void second(__global int *x)
{
    first(x);
}
__kernel void third(__global int *x) { x[0] = 3; }
#define RUN_FOURTH(x) fourth(x)
  kernel __attribute__((vec_type_hint(float))) void fourth(__global int *x) { x[0] = 4; }
__kernel void fifth(__global int *x) { RUN_FOURTH(x); }
__kernel __attribute__((vec_type_hint(float16))) void sixth(__global float *y, const int n) { y[0] = n; }
"""


def test_only_the_requested_kernel_and_those_it_calls_are_kept():
    kept = only_kernels(SYNTHETIC, {"third"})
    # fourth stays wherever it is cut: a macro outside every kernel names it (RUN_FOURTH)
    assert set(parse_signatures(kept)) == {"third", "fourth"}
    assert "helper" in kept and "TWICE" in kept  # helpers and macros stay
    assert kept.count("\n") == SYNTHETIC.count("\n")  # build logs keep their line numbers
    assert set(parse_signatures(only_kernels(SYNTHETIC, {"second"}))) == {"first", "second", "fourth"}
    # a kernel named anywhere else (here in a macro) is kept; other spellings are kernels too
    fifth = only_kernels(SYNTHETIC, {"fifth"})
    assert "void fourth(" in fifth and "x[0] = 3" not in fifth and "x[0] = 4" in fifth
    assert "x[0] = 4" in only_kernels(SYNTHETIC, {"third"})  # a macro outside kernels names it: kept
    with pytest.raises(KeyError, match="no kernel nosuch"):
        only_kernels(SYNTHETIC, {"nosuch"})
    # attributes with parentheses inside, between the qualifier and void, are part of the head:
    # the kernel is found, cut out alone and its arguments parsed
    sixth = only_kernels(SYNTHETIC, {"sixth"})
    assert "y[0] = n" in sixth and "x[0] = 3" not in sixth and "y[0] = n" not in only_kernels(SYNTHETIC, {"third"})
    args = parse_signatures(SYNTHETIC)["sixth"]
    assert [(a.name, a.pointer) for a in args.args] == [("y", True), ("n", False)]


def test_includes_are_inlined_once_and_commented_ones_are_left(tmp_path):
    (tmp_path / "a.h").write_text("#pragma once\n#define A_VALUE 1\n")
    (tmp_path / "b.h").write_text('#include "a.h"\n#define B_VALUE 2\n')
    (tmp_path / "main.cl").write_text('#include "a.h"  // the first\n#include "b.h" /* the second */\n'
                                      '// #include "missing.h"\n/* #include "missing.h" */\nint x = A_VALUE + B_VALUE;\n')
    from clnet.opencl.sources import inline_includes
    text = inline_includes(tmp_path / "main.cl")
    assert text.count("#define A_VALUE") == 1 and "#define B_VALUE" in text and "#pragma once" not in text
    assert '// #include "missing.h"' in text and '/* #include "missing.h" */' in text
    # #line directives give each included file's own lines back
    lines = text.splitlines()
    assert lines[lines.index("int x = A_VALUE + B_VALUE;") - 5:].count('#line 3 "main.cl"') == 1


@pytest.mark.parametrize("family", ["fnn", "rnn", "bptt", "pearson", "mcl", "paths"])
def test_every_kernel_of_every_family_can_be_cut_out_alone(family):
    whole = program_source(str(kernel_dir()), family)
    assert "#include" not in whole and "#pragma once" not in whole
    for name in parse_signatures(whole):
        alone = program_source(str(kernel_dir()), family, (name,))
        assert set(parse_signatures(alone)) == {name}, name


@pytest.mark.skipif(not OPENCL, reason="no OpenCL device")
def test_build_options_name_no_folder_and_programs_hold_one_kernel(opencl_backend, monkeypatch):
    built = []
    original = type(opencl_backend)._build

    def recording(self, source, name, options):
        built.append((source, list(options)))
        return original(self, source, name, options)

    monkeypatch.setattr(type(opencl_backend), "_build", recording)
    defines = ("CLNET_TEST_ONLY=1",)  # a fresh program, not one another test built
    knl = opencl_backend.kernel("paths", "clnet_paths_compact", np.float32, defines)
    assert len(built) == 1
    source, options = built[0]
    assert "-I" not in options and not any(str(kernel_dir()) in o for o in options)
    assert set(parse_signatures(source)) == {"clnet_paths_compact"}
    assert knl.name == "clnet_paths_compact"


@pytest.mark.skipif(not any("0:0" in s or "pocl" in s for s in OPENCL), reason="PoCL not installed")
def test_on_pocl_each_kernel_is_launched_with_one_local_size_at_every_shape(monkeypatch):
    pocl = next(b for b in (clnet.get_backend(s) for s in OPENCL) if b._pocl)
    seen = {}
    original = kernel_args.BoundKernel.__call__

    def recording(self, queue, global_size, local_size, **values):
        if queue is pocl.queue:
            seen.setdefault(self.name, set()).add(None if local_size is None else tuple(local_size))
        return original(self, queue, global_size, local_size, **values)

    monkeypatch.setattr(kernel_args.BoundKernel, "__call__", recording)
    rng = np.random.default_rng(5)
    for n in (37, 301, 1200):
        x = rng.normal(size=(n, 40))
        gappy, sparse_gaps = x.copy(), x.copy()
        gappy[rng.random(x.shape) < 0.2] = np.nan
        sparse_gaps[rng.random(x.shape) < 0.005] = np.nan
        for data in (x, gappy, sparse_gaps):
            clnet.pearson(data, backend=pocl, dtype="float32")
            clnet.pearson_topk(data, 5, backend=pocl, dtype="float32", progress=False)
    for n in (9, 11, 12):
        graph = (rng.random((n, n)) < 0.6).astype(np.float64)
        np.fill_diagonal(graph, 0)
        clnet.count_simple_paths(graph, backend=pocl)
        list(clnet.simple_paths(graph, 0, backend=pocl, max_results=20_000 * n, progress=False))
    for n in (60, 90, 150):
        graph = (rng.random((n, n)) < 0.1).astype(np.float64)
        clnet.mcl(graph + graph.T, backend=pocl)
    for batch in (3, 17, 64):
        cell = clnet.LSTMCell(4, 8, seed=1)
        state = cell.initial_state(batch, backend=pocl)
        cell.step(rng.normal(size=(batch, 4)), state)
        state.reset(rng.random(batch) < 0.5)
    assert {"clnet_pearson_complete", "clnet_paths_count_layer", "clnet_paths_list", "clnet_paths_compact",
            "clnet_rnn_zero_rows", "clnet_mcl_count_terms", "clnet_mcl_gather_inflate"} <= set(seen), sorted(seen)
    # which of the two missing-data kernels runs depends on the tuned strategy threshold
    assert {"clnet_pearson_masked", "clnet_pearson_sparse"} & set(seen), sorted(seen)
    several = {name: sizes for name, sizes in seen.items() if len(sizes) > 1 or None in sizes}
    assert several == {}, f"PoCL compiles these kernels again for each local size: {several}"
