"""The benchmarks (``python -m clnet bench NAME --quick``), run as a user would, in a child
process on the first OpenCL device: untuned and tuned figures for the device, at least three
shapes per case and one target summary line per target. No timing is asserted."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import OPENCL

import clnet

pytestmark = pytest.mark.skipif(not OPENCL, reason="no OpenCL device")


def _bench(name, *args, tuning_dir, timeout=300):
    # This checkout's clnet, run from outside it (the child's cwd holds the tuning files).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CLNET_TUNING_DIR=str(tuning_dir),
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("CLNET_BACKEND", None)
    res = subprocess.run([sys.executable, "-m", "clnet", "bench", name, "--quick", "--repeat", "1",
                          "--backend", OPENCL[0], *args], capture_output=True, text=True, timeout=timeout,
                         env=env, cwd=tuning_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _write_tuning_file(tuning_dir, monkeypatch):
    """A tuning file for the first OpenCL device whose entries differ from the defaults where
    a parameter allows another value: the "tuned" figures then run another configuration."""
    from clnet.opencl.tuning import FAMILIES, cache_path

    be = clnet.get_backend(OPENCL[0])
    shapes = {"fnn": {"batch": 50}, "rnn": {"kind": "lstm", "batch": 8, "hidden": 8},
              "bptt": {"kind": "lstm", "batch": 4, "hidden": 8},
              "pearson": {"rows": 100}}
    entries = {}
    for name, shape in shapes.items():
        family = FAMILIES[name]
        params = family.defaults(be.tuning.props, shape)
        for p in family.params:
            other = [v for v in p.values if v != params[p.name]
                     and family.allowed(dict(params, **{p.name: v}), be.tuning.props, shape)]
            if other:
                params[p.name] = other[0]
                break
        entries[name] = [{"shape": shape, "params": params, "seconds": 1.0, "default_seconds": 1.0}]
    monkeypatch.setenv("CLNET_TUNING_DIR", str(tuning_dir))
    path = cache_path(be.tuning.identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identity": be.tuning.identity, "entries": entries}))


def _cases(out):
    """{case title: its text} for every "== case" section of the output."""
    parts = re.split(r"^== (case \d+[^\n]*)$", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _check(out, n_targets, tuned=True, single_shape=()):
    spec = OPENCL[0]
    cases = _cases(out)
    assert len(cases) == len(n_targets), out
    for (title, text), targets in zip(cases.items(), n_targets):
        shapes = re.findall(r"^\s+-- shape (\d+)/(\d+):", text, flags=re.M)
        want = 1 if any(s in title for s in single_shape) else 3
        assert len(shapes) >= want and all(total == str(len(shapes)) for _, total in shapes), (title, text)
        for variant in ("untuned", "tuned"):
            rows = re.findall(rf"^\s+{re.escape(spec)} {variant}\b.*$", text, flags=re.M)
            assert len(rows) >= len(shapes), (title, variant, text)
        summary = re.findall(rf"^\s+{re.escape(spec)} target (.+): (met|NOT met) \(worst shape .+: .+ tuned, .+ untuned; "
                             rf"(\d+) shapes?\)$", text, flags=re.M)
        assert len(summary) == targets and all(int(n) == len(shapes) for *_, n in summary), (title, text)
        for label, verdict, _ in summary:
            if verdict == "NOT met":  # a target missed says what bounds it
                assert re.search(rf"target {re.escape(label)}: NOT met.*\n\s+roofline: ", text), (title, label)
        # "tuned" is measured only where the device has a tuning file; otherwise it says so
        note = "= untuned; not tuned: run python -m clnet tune"
        assert (note in text) != tuned, (title, text)


def test_bench_fnn_untuned_device(tmp_path):
    out = _bench("fnn", tuning_dir=tmp_path)
    assert "not tuned: run python -m clnet tune" in out
    # case 1: neat-python, NumPy fallback, connection rate; case 2: neat-python
    _check(out, [3, 1], tuned=False)
    assert "sum aggregation, sigmoid" in out and "median included" in out


def test_bench_rnn(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    _write_tuning_file(tmp_path, monkeypatch)
    out = _bench("rnn", tuning_dir=tmp_path)
    _check(out, [1, 2, 2, 1])
    assert "torch.nn.LSTMCell" in out and "of numpy's float32 matmul" in out


def test_bench_bptt(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    _write_tuning_file(tmp_path, monkeypatch)
    out = _bench("bptt", tuning_dir=tmp_path)
    _check(out, [1, 0])  # case 2 (a cell group against each cell alone) has no target
    assert "one CellGroup" in out and "of the two cells' own calls" in out


def test_bench_pearson(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    _write_tuning_file(tmp_path, monkeypatch)
    out = _bench("pearson", "--topk", tuning_dir=tmp_path)
    _check(out, [1, 1, 2], single_shape=("case 3",))
    assert "pandas DataFrame.corr" in out and "numpy.corrcoef" in out and "peak resident memory" in out


def test_bench_help_states_the_targets(tmp_path):
    wanted = {"fnn": ["1000x neat-python", "10x", "1 G connection evaluations/s", "300x neat-python", "median"],
              "rnn": ["1.3x torch.nn.LSTMCell", "1.2x torch.nn.LSTM", "4x", "80% of numpy's", "1.0x torch.nn.LSTM"],
              "bptt": ["1.2x torch.nn.LSTM"],
              "pearson": ["80x pandas", "1.5x", "10 s", "1.5 GB", "--topk"]}
    for name, phrases in wanted.items():
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        res = subprocess.run([sys.executable, "-m", "clnet", "bench", name, "--help"], capture_output=True,
                             text=True, timeout=60, cwd=root)
        assert res.returncode == 0, res.stderr
        text = " ".join(res.stdout.split())
        for phrase in phrases:
            assert phrase in text, (name, phrase)
        assert "issue" not in text.lower(), name


def test_a_short_call_is_timed_after_an_untimed_call_of_its_own():
    """What ran just before a contender must not be part of its time: each short function is
    called once, untimed, before each timed round (here a call right after the other one is
    slow, as after torch's spinning threads or another contender's evicted caches)."""
    import time as _time

    from clnet.bench import best_times

    last = []

    def make(name):
        def call():
            _time.sleep(0.02 if last and last[-1] != name else 0.001)
            last.append(name)
        return call

    a, b = best_times([make("a"), make("b")], repeat=2, number=1)
    assert a < 0.01 and b < 0.01, (a, b)
