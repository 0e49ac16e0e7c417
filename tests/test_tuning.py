"""Tunable kernel parameters (clnet/opencl/tuning.py), the tuner and its cache file."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import clnet
from clnet import conformance
from clnet.opencl import tuner
from clnet.opencl.tuning import FAMILIES, DeviceProperties, DeviceTuning, cache_dir
from conftest import OPENCL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Devices as they report themselves: PoCL and Intel's runtime on a 2-core AVX-512 CPU, a
# large NVIDIA GPU, a small embedded GPU with 256-item groups.
POCL = DeviceProperties("cpu", 2, 16, 16, 1 << 20, 4096, 1 << 31, 32 << 20)
INTEL = DeviceProperties("cpu", 2, 1, 16, 256 << 10, 8192, 1 << 31, 1 << 20)
BIG_GPU = DeviceProperties("gpu", 132, 1, 1, 48 << 10, 1024, 1 << 34)
SMALL_GPU = DeviceProperties("gpu", 4, 4, 4, 32 << 10, 256, 1 << 28)
SHAPES = {"kind": ["lstm", "gru", "rnn_tanh", "rnn_relu"], "batch": [1, 16, 100, 1024, 100000],
          "rows": [3, 5000, 10 ** 6], "hidden": [1, 200]}


def shapes_of(family):
    keys = family.exact + family.nearest
    combos = [{}]
    for k in keys:
        combos = [dict(c, **{k: v}) for c in combos for v in SHAPES[k]]
    return combos


@pytest.mark.parametrize("props", [POCL, INTEL, BIG_GPU, SMALL_GPU], ids=["pocl", "intel", "gpu", "small-gpu"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_defaults_are_allowed_values_within_the_devices_limits(props, name):
    family = FAMILIES[name]
    for shape in shapes_of(family):
        config = family.defaults(props, shape)
        family.check(config)  # raises for a value outside the declared ones
        assert family.allowed(config, props, shape)
        for p in family.params:
            if "group" in p.name:
                assert config[p.name] <= props.max_group


def test_gpu_defaults_follow_gpu_practice():
    """Work-groups of 64-256 and one sample or row per work-item on GPUs; CPUs keep their
    SIMD lanes and register tiles."""
    fnn = FAMILIES["fnn"].defaults(BIG_GPU, {"batch": 1000})
    assert fnn["graph_lanes"] == fnn["layered_lanes"] == 1
    assert 64 <= fnn["graph_group"] <= 256 and 64 <= fnn["layered_group"] <= 256
    rnn = FAMILIES["rnn"].defaults(BIG_GPU, {"kind": "lstm", "batch": 1024})
    assert 64 <= rnn["group"] <= 256 and rnn["projection"] == "batched" and rnn["one_launch_batch"] == 0
    assert FAMILIES["pearson"].defaults(BIG_GPU, {"rows": 1000})["list_group"] >= 32
    # PoCL vectorises the kernels' lane loops (preferred width 16): several vectors of samples
    # per work-item. Intel's runtime (preferred 1, native 16) packs work-items itself: the
    # population kernel runs one sample per work-item in groups of one native vector, the
    # layered kernel one native vector of samples per work-item.
    pocl = FAMILIES["fnn"].defaults(POCL, {"batch": 1000})
    assert (pocl["graph_lanes"], pocl["graph_group"], pocl["layered_lanes"], pocl["layered_group"]) == (64, 1, 64, 1)
    intel = FAMILIES["fnn"].defaults(INTEL, {"batch": 1000})
    assert (intel["graph_lanes"], intel["graph_group"]) == (1, 16)
    assert (intel["layered_lanes"], intel["layered_group"]) == (16, 1)
    # Node values per launch: within the device's share of the cache it reports (PoCL reports
    # the L3, 32 MiB, of which 2 compute units count on 8; Intel's runtime the L2), at least
    # 4 MiB on a CPU; a GPU takes the most work per launch.
    assert pocl["scratch_mb"] == 8 and intel["scratch_mb"] == 4 and fnn["scratch_mb"] == 256
    # medians of few terms: bisection where lane loops are SIMD (and on GPUs, unmeasured there),
    # rank counting where the implementation packs work-items
    assert (pocl["graph_median_ranks"], intel["graph_median_ranks"], fnn["graph_median_ranks"]) == (0, 16, 0)
    # Pearson's strips: within half the reported cache on a CPU (at least 16 MiB); the pair
    # kernels take row blocks first on a CPU, neighbouring columns side by side on a GPU.
    for props, strip, order in ((POCL, 16, "rows"), (INTEL, 16, "rows"), (BIG_GPU, 96, "columns")):
        p = FAMILIES["pearson"].defaults(props, {"rows": 1000})
        assert (p["strip_mb"], p["order"]) == (strip, order), props
    assert FAMILIES["rnn"].defaults(POCL, {"kind": "lstm", "batch": 1024})["projection"] == "fused"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_coupled_parameters_are_searched_as_every_combination(name):
    """A coupled set is one coordinate of the search holding every combination of its
    parameters' values; every other parameter is a coordinate of its own, and every parameter
    is searched exactly once per pass."""
    family = FAMILIES[name]
    coords = tuner.coordinates(family)
    searched = [n for names, _ in coords for n in names]
    assert sorted(searched) == sorted(p.name for p in family.params)
    for names, values in coords:
        sizes = [len(family.param(n).values) for n in names]
        assert len(values) == int(np.prod(sizes)) and len(set(values)) == len(values)
        assert all(len(v) == len(names) for v in values)
    if name == "fnn":  # samples per work-item and group size depend on each other
        assert {names for names, _ in coords} >= {("layered_lanes", "layered_group"), ("graph_lanes", "graph_group")}
        assert ((1, 16) in dict(coords)[("graph_lanes", "graph_group")])


def test_bad_parameter_values_are_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"rnn.step_rows=5 is not allowed: expected one of \[1, 2, 4, 6, 8, 12\]"):
        FAMILIES["rnn"].check({"step_rows": 5})
    with pytest.raises(KeyError, match="no tunable parameter 'rows_per_item'"):
        FAMILIES["rnn"].check({"rows_per_item": 4})


class FakePlatform:
    name = "Fake Platform"


class FakeDevice:
    """What DeviceTuning reads of a pyopencl device."""
    name = "Fake CPU"
    driver_version = "1.2.3"
    platform = FakePlatform()


@pytest.fixture
def tuning_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLNET_TUNING_DIR", str(tmp_path / "tuning"))
    return tmp_path / "tuning"


def fake_tuning():
    return DeviceTuning(FakeDevice(), POCL)


def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CLNET_TUNING_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "clnet" / "tuning"
    monkeypatch.setenv("CLNET_TUNING_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert str(fake_tuning().path).startswith(str(tmp_path / "mine"))


def test_saved_entries_are_found_again_and_the_nearest_shape_is_used(tuning_dir):
    t = fake_tuning()
    assert not t.tuned
    default = t.lookup("rnn", kind="lstm", batch=150, hidden=64)
    rows = [{"shape": {"kind": "lstm", "batch": 100, "hidden": 64}, "params": {"step_rows": 2, "group": 4}},
            {"shape": {"kind": "lstm", "batch": 1000, "hidden": 64}, "params": {"step_rows": 12}},
            {"shape": {"kind": "gru", "batch": 300, "hidden": 64}, "params": {"step_rows": 1}}]
    path = t.save({"rnn": rows})
    assert path.parent == tuning_dir and not [p for p in tuning_dir.iterdir() if p.name.startswith(".")]
    again = fake_tuning()  # a new process would read the file
    assert again.tuned
    near_100 = again.lookup("rnn", kind="lstm", batch=150, hidden=64)
    assert near_100["step_rows"] == 2 and near_100["group"] == 4
    assert near_100["projection"] == default["projection"]  # untuned parameters stay at the defaults
    assert again.lookup("rnn", kind="lstm", batch=1920, hidden=64)["step_rows"] == 12
    assert again.lookup("rnn", kind="gru", batch=200, hidden=64)["step_rows"] == 1  # the only gru entry
    # an LSTM entry never configures another kind
    assert again.lookup("rnn", kind="rnn_tanh", batch=100, hidden=64) == fake_tuning().defaults_for(
        "rnn", kind="rnn_tanh", batch=100, hidden=64)
    assert again.lookup("fnn", batch=100) == fake_tuning().defaults_for("fnn", batch=100)


@pytest.mark.parametrize("family", ["rnn", "bptt"])
def test_a_recurrent_entry_applies_only_within_its_reach(tuning_dir, family):
    """Within a factor of RECURRENT_REACH of the tuned shape (batch ratio times hidden ratio)
    the entry applies; beyond it, in batch, in hidden size or in both together, the call runs
    on the defaults, however near the entry is in batch alone."""
    from clnet.opencl.tuning import RECURRENT_REACH
    assert FAMILIES[family].nearest == ("batch", "hidden") and FAMILIES[family].reach == RECURRENT_REACH == 2.0
    param = "step_rows" if family == "rnn" else "rows"
    t = fake_tuning()
    t.save({family: [{"shape": {"kind": "lstm", "batch": 16, "hidden": 200}, "params": {param: 1}}]})

    def used(batch, hidden):
        got = t.lookup(family, kind="lstm", batch=batch, hidden=hidden)
        if got == t.defaults_for(family, kind="lstm", batch=batch, hidden=hidden):
            return False
        assert got[param] == 1 and got == dict(t.defaults_for(family, kind="lstm", batch=batch, hidden=hidden),
                                               **{param: 1})
        return True
    assert used(16, 200) and used(32, 200) and used(8, 200) and used(16, 100) and used(16, 400)
    assert used(12, 160)  # 16/12 * 200/160 = 1.67
    assert not used(33, 200) and not used(7, 200)  # batch alone beyond 2x
    assert not used(16, 96) and not used(16, 401)  # hidden alone beyond 2x
    assert not used(13, 100)  # 16/13 * 200/100 = 2.46: each within 2x, together beyond
    assert not used(9, 96)


def test_only_the_recurrent_families_bound_their_reach():
    # fnn and pearson keep the nearest entry at any distance (not measured off their shapes yet)
    assert FAMILIES["fnn"].reach is None and FAMILIES["pearson"].reach is None


def test_a_recurrent_lookup_without_the_hidden_size_is_refused_tuned_or_not(tuning_dir):
    t = fake_tuning()
    with pytest.raises(ValueError, match=r"rnn lookup needs the shape fields \['hidden'\]"):
        t.lookup("rnn", kind="lstm", batch=16)  # untuned: refused too, so untuned test runs catch the caller
    t.save({"rnn": [{"shape": {"kind": "lstm", "batch": 16, "hidden": 200}, "params": {"step_rows": 1}}]})
    with pytest.raises(ValueError, match=r"rnn lookup needs the shape fields \['hidden'\]"):
        t.lookup("rnn", kind="lstm", batch=16)


def test_a_version_1_file_without_hidden_sizes_is_ignored_with_a_warning(tuning_dir):
    """Format 2 added the hidden size to the recurrent entries: an entry without it (as
    format 1 wrote them) makes the file ignored, never a crash or a misapplied entry."""
    t = fake_tuning()
    assert t.identity["format"] == 2
    tuning_dir.mkdir(parents=True)
    t.path.write_text(json.dumps({"identity": t.identity, "entries": {
        "rnn": [{"shape": {"kind": "lstm", "batch": 16}, "params": {"step_rows": 1}}]}}))
    with pytest.warns(RuntimeWarning, match=r"ignoring the tuning file .*lacks \['hidden'\]"):
        assert t.lookup("rnn", kind="lstm", batch=16, hidden=200) == t.defaults_for("rnn", kind="lstm", batch=16,
                                                                                  hidden=200)


@pytest.mark.parametrize("content", ["{not json", json.dumps([1, 2]), "",
                                     "FOREIGN", "BAD VALUE", "NO SHAPE", "TEXT HIDDEN", "NULL HIDDEN", "LIST HIDDEN"])
def test_a_corrupt_or_foreign_file_is_ignored_with_a_warning(tuning_dir, content):
    t = fake_tuning()
    good = {"shape": {"kind": "lstm", "batch": 10, "hidden": 8}, "params": {"step_rows": 2}}
    if content == "FOREIGN":
        content = json.dumps({"identity": dict(t.identity, driver="9.9"), "entries": {"rnn": [good]}})
    elif content == "BAD VALUE":
        content = json.dumps({"identity": t.identity, "entries": {"rnn": [dict(good, params={"step_rows": 5})]}})
    elif content == "NO SHAPE":
        content = json.dumps({"identity": t.identity, "entries": {"rnn": [dict(good, shape={"kind": "lstm"})]}})
    elif content.endswith("HIDDEN"):  # a shape field the lookup takes the logarithm of, not a number
        hidden = {"TEXT HIDDEN": "x", "NULL HIDDEN": None, "LIST HIDDEN": [1]}[content]
        content = json.dumps({"identity": t.identity, "entries": {"rnn": [
            dict(good, shape={"kind": "lstm", "batch": 10, "hidden": hidden})]}})
    tuning_dir.mkdir(parents=True)
    t.path.write_text(content)
    with pytest.warns(RuntimeWarning, match="ignoring the tuning file .* default parameters"):
        config = t.lookup("rnn", kind="lstm", batch=10, hidden=8)
    assert config == t.defaults_for("rnn", kind="lstm", batch=10, hidden=8)
    assert not t.tuned


def test_an_interrupted_save_leaves_the_old_file_whole(tuning_dir, monkeypatch):
    t = fake_tuning()
    t.save({"fnn": [{"shape": {"batch": 10}, "params": {"graph_lanes": 8}}]})
    before = t.path.read_text()

    def broken_dumps(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(json, "dumps", broken_dumps)
        with pytest.raises(KeyboardInterrupt):
            t.save({"fnn": [{"shape": {"batch": 10}, "params": {"graph_lanes": 16}}]})
    assert t.path.read_text() == before
    assert [p.name for p in tuning_dir.iterdir()] == [t.path.name]  # no temporary left behind
    assert fake_tuning().lookup("fnn", batch=10)["graph_lanes"] == 8


def test_save_keeps_the_families_it_does_not_name(tuning_dir):
    t = fake_tuning()
    t.save({"fnn": [{"shape": {"batch": 10}, "params": {"graph_lanes": 8}}]})
    t.save({"pearson": [{"shape": {"rows": 100}, "params": {"row_block": 8}}]})
    again = fake_tuning()
    assert again.lookup("fnn", batch=10)["graph_lanes"] == 8
    assert again.lookup("pearson", rows=100)["row_block"] == 8


def test_the_tuner_rejects_a_candidate_that_disagrees_with_the_reference(opencl_backend, monkeypatch):
    """A candidate whose results are wrong (here: made wrong for layered_lanes=8) is reported
    and never chosen, however fast it is."""
    be = opencl_backend
    work = tuner._fnn_workloads(be)[0]
    assert work.label.startswith("layered")
    honest = work.run

    def run():
        out = honest()
        if be.params("fnn", batch=work.shape["batch"])["layered_lanes"] == 8:
            return [o + 0.01 for o in out]
        return out

    work.run = run
    monkeypatch.setitem(tuner.WORKLOADS, "fnn", lambda backend: [work])
    (outcome,) = tuner.tune_family(be, "fnn", budget=30, progress=False)
    assert any("'layered_lanes': 8" in r and "worst mismatches" in r for r in outcome.rejected), outcome.rejected
    assert outcome.params["layered_lanes"] != 8
    assert not any("'layered_lanes': 16" in r for r in outcome.rejected)


def test_tune_command_writes_the_cache_and_info_reports_it(tmp_path):
    if not OPENCL:
        pytest.skip("no OpenCL device")
    env = dict(os.environ, CLNET_TUNING_DIR=str(tmp_path / "t"))
    spec = OPENCL[0]
    run = subprocess.run([sys.executable, "-m", "clnet", "tune", "--backend", spec, "--family", "fnn",
                          "--budget", "6", "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert "tuning fnn" in run.stdout and "saved " in run.stdout
    files = list((tmp_path / "t").iterdir())
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["entries"]["fnn"] and data["identity"]["clnet"] == clnet.__version__
    info = subprocess.run([sys.executable, "-m", "clnet", "info"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert f"tuning of {spec}: tuned; file {files[0]}" in info.stdout


def test_bad_tune_arguments_are_one_line_errors():
    run = subprocess.run([sys.executable, "-m", "clnet", "tune", "--family", "nosuch"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "invalid choice: 'nosuch'" in run.stderr
    run = subprocess.run([sys.executable, "-m", "clnet", "tune", "--backend", "numpy"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "'numpy' has no tunable kernels" in run.stderr


@pytest.mark.slow  # one program build per configuration: 1-1.5 minutes a family on an empty compiler cache
@pytest.mark.parametrize("family", ["fnn", "rnn", "bptt", "pearson"])
def test_every_configuration_the_tuner_may_pick_conforms(opencl_backend, family):
    """The conformance checks of the family under every value of every tunable parameter
    (the others at their defaults), a few examples each."""
    results = conformance.run([opencl_backend.spec], operations=[family + "."], sweep=True, max_examples=2,
                              dtypes=("float32",), echo=None)
    failures = [f"{r.operation} {r.dtype}: {r.failure}" for r in results if not r.passed]
    assert not failures, "\n".join(failures)
    labels = {r.operation.split(" ", 1)[1] for r in results if " " in r.operation}
    family_decl = FAMILIES[family]
    for p in family_decl.params:  # every value of every parameter ran (unless the device forbids it)
        for v in p.values:
            allowed = family_decl.allowed(dict(family_decl.defaults(opencl_backend.tuning.props,
                                                                    {"kind": "lstm", "batch": 64, "rows": 64}),
                                               **{p.name: v}), opencl_backend.tuning.props,
                                          {"kind": "lstm", "batch": 64, "rows": 64})
            default = family_decl.param(p.name).default(opencl_backend.tuning.props,
                                                        {"kind": "lstm", "batch": 64, "rows": 64})
            if allowed and v != default:
                assert f"[{p.name}={v}]" in labels, (p.name, v)


def test_results_are_bitwise_identical_from_run_to_run_with_a_given_cache(opencl_backend, tuning_dir):
    """With a cache file choosing non-default parameters, each family's results are the
    same bits in two fresh processes and in two calls of one process."""
    script = r"""
import sys, numpy as np, clnet
from clnet.conformance.rnn import make_cell
be = clnet.get_backend(sys.argv[1])
be.tuning.save({
    "fnn": [{"shape": {"batch": 77}, "params": {"graph_lanes": 4, "graph_group": 16, "layered_lanes": 2}}],
    "rnn": [{"shape": {"kind": "gru", "batch": 77, "hidden": 21},
             "params": {"step_rows": 2, "group": 4, "projection": "batched"}}],
    "bptt": [{"shape": {"kind": "gru", "batch": 77, "hidden": 21}, "params": {"rows": 2, "weights_rows": 4, "group": 4}}],
    "pearson": [{"shape": {"rows": 77}, "params": {"row_block": 2, "sparse_rows": 4, "sparse_missing_max": 1.0}}]})
rng = np.random.default_rng(5)
x = rng.normal(size=(77, 3))
nets = [clnet.FNN.from_structure([3, h, 2], rng.normal(size=5 * h), activation="tanh") for h in (1, 4, 9)]
pop = clnet.FNNPopulation(nets)
cell = make_cell("gru", 3, 21, True, 1)
xs = rng.normal(size=(5, 77, 3))
X = rng.normal(size=(77, 30)); X[rng.random(X.shape) < 0.1] = np.nan
def once():
    st = cell.initial_state(77, backend=be)
    g = cell.backward_sequence(xs, None, None, np.ones((5, 77, 21)), backend=be)
    return np.concatenate([pop(x, backend=be).ravel(), nets[2](x, backend=be).ravel(),
                           cell.sequence(xs, st).ravel()] + [np.asarray(g[k]).ravel() for k in sorted(g)]
                          + [clnet.pearson(X, backend=be).ravel()])
a, b = once(), once()
assert a.tobytes() == b.tobytes(), "two calls differ"
sys.stdout.write(a.tobytes().hex()[:200000])
"""
    outs = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", script, opencl_backend.spec], cwd=ROOT, capture_output=True,
                             text=True, timeout=600, env=dict(os.environ, CLNET_TUNING_DIR=str(tuning_dir)))
        assert run.returncode == 0, run.stderr
        outs.append(run.stdout)
    assert outs[0] == outs[1] and len(outs[0]) > 1000


def test_untuned_runs_on_the_defaults_and_then_the_cache_applies_again(tuning_dir):
    t = fake_tuning()
    t.save({"rnn": [{"shape": {"kind": "lstm", "batch": 64, "hidden": 32}, "params": {"step_rows": 1}}]})
    assert t.lookup("rnn", kind="lstm", batch=64, hidden=32)["step_rows"] == 1
    with t.untuned():
        assert t.lookup("rnn", kind="lstm", batch=64, hidden=32) == t.defaults_for("rnn", kind="lstm", batch=64)
    assert t.lookup("rnn", kind="lstm", batch=64, hidden=32)["step_rows"] == 1


def test_an_elman_rnn_with_relu_shares_the_entries_tuned_with_tanh():
    outcome = tuner.Outcome("rnn", "rnn_tanh B=16", {"kind": "rnn_tanh", "batch": 16}, {"step_rows": 4}, 1.0, 2.0, [],
                            candidates=7)
    entries = tuner.entries_from([outcome])["rnn"]
    assert sorted(e["shape"]["kind"] for e in entries) == ["rnn_relu", "rnn_tanh"]
    assert all(e["params"] == {"step_rows": 4} for e in entries)


def test_workloads_at_one_shape_merge_only_what_they_changed_and_the_larger_gain_wins():
    """Pearson tunes three workloads at each row count: one that kept the defaults must not
    overwrite another's tuned tile with them, and where two changed the same parameter the
    one that saved more time stands."""
    shape = {"rows": 4000}
    defaults = FAMILIES["pearson"].defaults(POCL, shape)

    def outcome(label, changed, seconds, default_seconds):
        return tuner.Outcome("pearson", label, shape, dict(defaults, **changed), seconds, default_seconds, [],
                             candidates=10, changed=changed)

    other = [v for v in FAMILIES["pearson"].param("strip_mb").values if v != defaults["strip_mb"]]
    entries = tuner.entries_from([
        outcome("30% missing", {"strip_mb": other[0], "sparse_missing_max": 1.0}, 0.118, 0.248),  # saved 130 ms
        outcome("5% missing", {}, 0.100, 0.100),                                               # defaults kept
        outcome("complete", {"row_block": 8, "strip_mb": other[1]}, 0.050, 0.076)])["pearson"]  # saved 26 ms
    (entry,) = entries
    assert entry["params"] == {"row_block": 8, "strip_mb": other[0], "sparse_missing_max": 1.0}


@pytest.mark.parametrize("family", ["fnn", "rnn", "bptt", "pearson"])
def test_the_gpu_defaults_compute_the_same_results(opencl_backend, family):
    """The configuration a GPU starts with before any tuning (one sample or row per
    work-item, groups of 64-256, batched projections), run here on a CPU device: the
    conformance checks pass with it, so a first run on a GPU is correct."""
    props = opencl_backend.tuning.props
    gpu_like = DeviceProperties("gpu", 64, 1, 1, 48 << 10, props.max_group, props.max_alloc)
    fam = FAMILIES[family]
    config = fam.defaults(gpu_like, {"kind": "lstm", "batch": 1024, "rows": 5000})
    with opencl_backend.tuning.overriding(family, config):
        results = conformance.run([opencl_backend.spec], operations=[family + "."], max_examples=3,
                                  dtypes=("float32",), echo=None)
    failures = [f"{r.operation}: {r.failure}" for r in results if not r.passed]
    assert results and not failures, "\n".join(failures)


def _small_workloads(be):
    """One small call per family whose every output depends on the tunable launch choices:
    shapes that are not multiples of any tile or lane count."""
    from clnet.conformance.rnn import make_cell

    rng = np.random.default_rng(8)
    nets = [clnet.FNN.from_structure([3, h, 2], rng.normal(size=5 * h), activation="tanh") for h in (1, 4, 9)]
    pop = clnet.FNNPopulation(nets)
    plain = clnet.FNNPopulation([clnet.FNN.from_structure([3, h, 2], rng.normal(size=5 * h), activation="sigmoid")
                                 for h in (2, 5)])  # runs with the graph_vector parameters
    x = rng.normal(size=(37, 3))
    xs = rng.normal(size=(5, 37, 3))
    resets = rng.random((5, 37)) < 0.2
    grads = rng.normal(size=(5, 37, 21))
    cells = {k: make_cell(k, 3, 21, True, 1) for k in ("lstm", "gru")}
    X = rng.normal(size=(41, 30))
    X[rng.random(X.shape) < 0.1] = np.nan

    def rnn():
        out = []
        for cell in cells.values():
            st = cell.initial_state(37, backend=be)
            out += [cell.sequence(xs, st, resets).ravel(), cell.step(xs[0], st).ravel()]
        return out

    def bptt():
        return [np.asarray(g[k]).ravel() for cell in cells.values()
                for g in [cell.backward_sequence(xs, None, resets, grads, backend=be)] for k in sorted(g)]

    return {"fnn": lambda: [pop(x, backend=be).ravel(), plain(x, backend=be).ravel(), nets[2](x, backend=be).ravel()],
            "rnn": rnn, "bptt": bptt,
            "pearson": lambda: [clnet.pearson(X, backend=be).ravel(),
                                clnet.pearson_topk(X, 4, backend=be, progress=False)[1].ravel()]}


def _assert_deterministic(backend, family, configs):
    run = _small_workloads(backend)[family]
    for config in configs:
        with backend.tuning.overriding(family, config):
            first, second = run(), run()
        assert all(a.tobytes() == b.tobytes() for a, b in zip(first, second)), config


def _sweep(backend, family):
    configs = FAMILIES[family].sweep(backend.tuning.props, {"kind": "lstm", "batch": 37, "rows": 41})
    assert len(configs) > 5
    return configs


@pytest.mark.parametrize("family", ["fnn", "rnn", "bptt", "pearson"])
def test_a_spread_of_configurations_is_bitwise_deterministic(opencl_backend, family):
    """The defaults and four configurations spread over the sweep (its first and last
    included) give the same bits twice; the whole sweep is the slow test below."""
    configs = _sweep(opencl_backend, family)
    picks = sorted({0, *np.linspace(1, len(configs) - 1, 4).round().astype(int).tolist()})
    _assert_deterministic(opencl_backend, family, [configs[i] for i in picks])


@pytest.mark.slow  # one program build per configuration (35-40 s a family on Intel's compiler, cold)
@pytest.mark.parametrize("family", ["fnn", "rnn", "bptt", "pearson"])
def test_every_configuration_is_bitwise_deterministic(opencl_backend, family):
    """Under each configuration the tuner may pick, two calls give the same bits."""
    _assert_deterministic(opencl_backend, family, _sweep(opencl_backend, family))


def test_a_shape_the_budget_never_reached_gets_no_entry():
    untried = tuner.Outcome("rnn", "lstm B=16", {"kind": "lstm", "batch": 16}, {"step_rows": 4}, 1.0, 1.0, [])
    assert tuner.entries_from([untried]) == {}


def test_an_interrupt_while_writing_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from clnet.common import files

    target = tmp_path / "x.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(files.os, "replace", broken_replace)
        with pytest.raises(KeyboardInterrupt):
            files.write_atomically(target, "new", durable=True)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
    files.write_atomically(target, "new", mode=0o644)
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o644


class _FakeBackend:
    spec = "opencl:fake"
    description = "fake"

    def __init__(self):
        self.tuning = fake_tuning()


def _sleepy_workload(be, calls):
    """An rnn workload whose run takes 0.5 ms with step_rows=1 and 3 ms otherwise, and
    records the step_rows each call ran with."""
    import time as _time
    shape = {"kind": "lstm", "batch": 16, "hidden": 200}

    def run():
        rows = be.tuning.lookup("rnn", **shape)["step_rows"]
        calls.append(rows)
        _time.sleep(0.0005 if rows == 1 else 0.003)
        return [np.zeros(3)]
    return tuner.Workload("rnn", shape, "lstm B=16", run, [np.zeros(3)], [np.zeros(3)], "rnn",
                          lambda name: name == "step_rows")


@pytest.mark.parametrize("holds", [True, False])
def test_the_search_winner_is_kept_only_if_re_timing_confirms_it(tuning_dir, monkeypatch, holds):
    be, calls, confirmations = _FakeBackend(), [], []
    monkeypatch.setitem(tuner.WORKLOADS, "rnn", lambda be: [_sleepy_workload(be, calls)])

    def confirmed(tuning, family, run, best, base, rounds=tuner.CONFIRM_ROUNDS):
        if rounds != tuner.CONFIRM_ROUNDS:  # a changed parameter put back to its default: slower, kept
            return (1.0, 2.0)
        confirmations.append((best, base))
        return (1.0, 2.0) if holds else (1.0, 1.0)  # 1.0 is not under 0.97 of the defaults' 1.0
    monkeypatch.setattr(tuner, "_confirmed", confirmed)
    (outcome,) = tuner.tune_family(be, "rnn", budget=5.0, progress=False)
    defaults = be.tuning.defaults_for("rnn", kind="lstm", batch=16, hidden=200)
    assert defaults["step_rows"] != 1
    (best, base), = confirmations
    assert best["step_rows"] == 1 and base == defaults  # the search found the fast value
    if holds:
        assert outcome.params == {"step_rows": 1} and outcome.unconfirmed is None
    else:
        assert outcome.params == {"step_rows": defaults["step_rows"]} and outcome.unconfirmed == {"step_rows": 1}
        assert (outcome.seconds, outcome.default_seconds) == (1.0, 1.0)


def test_re_timing_alternates_the_winner_and_the_defaults(tuning_dir):
    be, calls = _FakeBackend(), []
    work = _sleepy_workload(be, calls)
    base = be.tuning.defaults_for("rnn", kind="lstm", batch=16, hidden=200)
    best_s, base_s = tuner._confirmed(be.tuning, "rnn", work.run, dict(base, step_rows=1), base, rounds=4)
    assert calls == [1, base["step_rows"]] * 4
    assert 0 < best_s and 0 < base_s
    assert be.tuning.overrides == {}  # nothing left forced afterwards


@pytest.mark.parametrize("family,param", [("rnn", "step_rows"), ("bptt", "rows")])
def test_a_tuned_row_height_is_dropped_where_it_splits_the_batch_less_evenly(tuning_dir, family, param):
    """Tuned at B=16 with 8-row tiles (2 tiles: both of POCL's 2 compute units busy); at B=20
    that height makes 3 tiles, one unit idle half the time, so the default height (which splits
    20 rows at least as evenly) is kept there; the entry's other parameters still apply."""
    from clnet.opencl.tuning import tile_balance
    assert tile_balance(16, 8, 2) == 1.0 and tile_balance(20, 8, 2) == 0.625 and tile_balance(20, 4, 2) < 1.0
    t = fake_tuning()
    t.save({family: [{"shape": {"kind": "lstm", "batch": 16, "hidden": 120}, "params": {param: 8, "group": 4}}]})
    at_16 = t.lookup(family, kind="lstm", batch=16, hidden=120)
    assert at_16[param] == 8 and at_16["group"] == 4
    at_20 = t.lookup(family, kind="lstm", batch=20, hidden=120)
    default_20 = t.defaults_for(family, kind="lstm", batch=20, hidden=120)
    assert tile_balance(20, default_20[param], 2) > tile_balance(20, 8, 2)
    assert at_20[param] == default_20[param] and at_20["group"] == 4
    assert t.lookup(family, kind="lstm", batch=32, hidden=120)[param] == 8  # 4 tiles: still even


def test_a_change_that_does_nothing_is_put_back_to_its_default(opencl_backend, monkeypatch):
    """A value that won the search by noise (here: the cache budget, which this small batch
    never reaches) returns to its default; one that gains (the lanes, reverted together with
    their coupled group size) stays."""
    import types

    be = opencl_backend
    work = tuner._fnn_workloads(be)[0]
    outputs = work.run()  # right for every configuration
    # The tuner's clock advances by the configuration's cost alone: real sleeps of 20 ms
    # overshot by more than the tuner's 3% margin on a loaded CI machine.
    clock = [0.0]
    monkeypatch.setattr(tuner, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def run():
        clock[0] += 0.02 if be.params("fnn", batch=work.shape["batch"])["layered_lanes"] == 8 else 0.1
        return outputs

    work.run = run
    base = FAMILIES["fnn"].defaults(be.tuning.props, work.shape)
    other_scratch = next(v for v in FAMILIES["fnn"].param("scratch_mb").values if v != base["scratch_mb"])
    best = dict(base, layered_lanes=8, scratch_mb=other_scratch)
    with be.tuning.overriding("fnn", best):
        best_s = tuner._timed(work.run)
    kept, _ = tuner._without_idle_changes(be.tuning, "fnn", work, best, best_s, base, lambda c: True)
    assert kept["layered_lanes"] == 8 and kept["scratch_mb"] == base["scratch_mb"]


def test_a_merged_entry_that_breaks_the_constraint_keeps_the_best_workload_alone():
    """Two workloads at one shape, each valid alone, whose changes together break the
    family's constraint (bptt: a register tile of at most 32 vectors): the entry keeps the
    changes of the one that saved more time, never an invalid configuration."""
    shape = {"kind": "lstm", "batch": 16, "hidden": 136}
    defaults = FAMILIES["bptt"].defaults(POCL, shape)
    rows = max(v for v in FAMILIES["bptt"].param("inputs_rows").values if v * defaults["inputs_vectors"] <= 32)
    vectors = max(v for v in FAMILIES["bptt"].param("inputs_vectors").values if defaults["inputs_rows"] * v <= 32)
    assert rows * vectors > 32  # each change is allowed alone, not both together

    def outcome(changed, seconds):
        return tuner.Outcome("bptt", "x", shape, dict(defaults, **changed), seconds, 1.0, [], candidates=5,
                             changed=changed)

    merged = tuner.entries_from([outcome({"inputs_rows": rows}, 0.5), outcome({"inputs_vectors": vectors}, 0.8)],
                                POCL)["bptt"]
    entry = next(e for e in merged if e["shape"]["kind"] == "lstm")
    assert entry["params"] == {"inputs_rows": rows}
    assert FAMILIES["bptt"].allowed(dict(defaults, **entry["params"]), POCL, shape)


@pytest.mark.parametrize("fraction,picked,expected", [
    (0.3, 0.05, 0.25),   # the masked kernel at 30%: moved only just below 30%, so 10% keeps the default
    (0.3, 0.0, 0.25),
    (0.3, 0.25, 0.25),
    (0.05, 0.0, 0.0),    # the masked kernel at 5%: only 0.0 is below
    (0.05, 1.0, 0.5),    # the corrected sums at 5%, as the default 0.5 already gives: the default back
    (0.6, 1.0, 1.0),     # the corrected sums at 60%, beyond the default: the nearest value above
    (0.3, 0.5, 0.5),
])
def test_a_missing_data_threshold_moves_only_as_far_as_its_workload_needs(fraction, picked, expected):
    values = FAMILIES["pearson"].param("sparse_missing_max").values
    base = {"sparse_missing_max": 0.5, "strip_mb": 16}
    settle = tuner.ThresholdSettle("sparse_missing_max", fraction, values)
    got = settle(dict(base, sparse_missing_max=picked, strip_mb=32), base)
    assert got == {"sparse_missing_max": expected, "strip_mb": 32}
    # the same kernel as the pick at the workload's own fraction
    assert (fraction <= got["sparse_missing_max"]) == (fraction <= picked)


def test_every_missing_data_workload_settles_its_threshold(opencl_backend):
    works = [w for w in tuner._pearson_workloads(opencl_backend) if "missing" in w.label]
    assert len(works) == 4
    base = FAMILIES["pearson"].defaults(opencl_backend.tuning.props, {"rows": 1000})
    values = FAMILIES["pearson"].param("sparse_missing_max").values
    for w in works:
        fraction = w.settle.fraction
        assert abs(fraction - (0.05 if w.label.endswith(" 5% missing") else 0.3)) < 0.01, w.label
        settled = w.settle(dict(base, sparse_missing_max=0.0), base)  # the masked kernel won
        assert settled["sparse_missing_max"] == max(v for v in values if v < fraction), w.label


def test_cpu_cache_defaults_count_only_this_devices_share_of_the_chips_cache():
    """A 2-core VM on a large server chip reports the socket's whole last-level cache (here
    300 MiB): the scratch and strip defaults follow the 2 compute units' share, as on a
    2-core machine whose cache is its own; a device reporting less keeps its own figure."""
    from clnet.opencl.tuning import CACHE_PER_COMPUTE_UNIT, cache_share

    vm = DeviceProperties("cpu", 2, 16, 16, 2 << 20, 4096, 1 << 31, 300 << 20)
    assert cache_share(vm) == 2 * CACHE_PER_COMPUTE_UNIT
    assert cache_share(INTEL) == INTEL.cache
    fnn, pearson = FAMILIES["fnn"], FAMILIES["pearson"]
    assert fnn.defaults(vm, {"batch": 1000})["scratch_mb"] == 8
    assert pearson.defaults(vm, {"rows": 1000})["strip_mb"] == 16
    many_cores = DeviceProperties("cpu", 64, 16, 16, 2 << 20, 4096, 1 << 31, 300 << 20)
    assert fnn.defaults(many_cores, {"batch": 1000})["scratch_mb"] > 8
    assert pearson.defaults(many_cores, {"rows": 1000})["strip_mb"] > 16


def test_a_short_last_tile_counts_for_its_rows_only():
    """8 rows in tiles of 6 make 2 tiles for 2 units, but one holds 2 rows: the default BPTT
    height at a batch of 8 is the one that splits it evenly (4), the taller one where both
    split alike."""
    from clnet.opencl.tuning import tile_balance

    assert tile_balance(8, 6, 2) == pytest.approx(8 / 12) and tile_balance(8, 4, 2) == 1.0
    bptt = FAMILIES["bptt"]
    assert bptt.defaults(POCL, {"kind": "lstm", "batch": 8, "hidden": 256})["rows"] == 4
    assert bptt.defaults(POCL, {"kind": "lstm", "batch": 12, "hidden": 256})["rows"] == 6


def test_every_transfer_limit_computes_the_same_bits(opencl_backend):
    """transfers.small_upload_kib chooses how host arrays reach the device (a buffer made with
    its copy, or a copy command into a kept one; gate rows transposed on the host or on the
    device), never what is computed: under every value the tuner may pick, a group's record
    and backward, one cell's backward_sequence, sequence and step give the same bits, for
    cells whose weights fall below and above each limit. The results also match the float64
    fallback."""
    from clnet.conformance.rnn import make_cell

    be = clnet.get_backend(opencl_backend)
    values = FAMILIES["transfers"].param("small_upload_kib").values
    rng = np.random.default_rng(23)
    T, B, I = 6, 5, 3
    for H in (10, 40, 130):  # gate rows of 4 H x H float32: 1.6, 25 and 270 KiB
        cells = [make_cell("lstm", I, H, True, seed) for seed in (1, 2)]
        weights = [c.state_dict() for c in cells]
        group = clnet.CellGroup(cells)
        # two layers: their backward passes share the small-results workspace, the second
        # layer's results larger (its inputs are H wide, the first's I)
        stacked = clnet.LSTM(I, H, num_layers=2, seed=3)
        xs, grad_hs = rng.normal(size=(T, B, I)), rng.normal(size=(2, T, B, H))
        resets = rng.random((T, B)) < 0.2

        def run(backend):
            for cell, w in zip(cells, weights):  # prepared again under the limit in force
                cell.load_state_dict(w)
            rec = group.record_sequence(xs, None, resets, backend=backend)
            grads = rec.backward(grad_hs)
            single = cells[0].backward_sequence(xs, None, resets, grad_hs[0], backend=backend)
            state = cells[1].initial_state(B, backend=backend)
            hs = cells[1].sequence(xs, state, resets=resets)
            step = cells[1].step(xs[0], state)
            stacked.load_state_dict(stacked.state_dict())  # prepared again, as the cells are
            deep = stacked.backward_sequence(xs, None, resets, grad_hs[1], backend=backend)
            return ([np.asarray(rec.hs)] + [np.asarray(g[k]) for g in grads for k in sorted(g)]
                    + [np.asarray(single[k]) for k in sorted(single)] + [np.asarray(hs), np.asarray(step)]
                    + [np.asarray(deep[k]) for k in sorted(deep) if deep[k] is not None])

        results = {}
        for v in values:
            with be.tuning.overriding("transfers", {"small_upload_kib": v}):
                assert be.small_upload_bytes() == 1024 * v
                results[v] = run(be)
        first = results[values[0]]
        for v in values[1:]:
            for i, (a, b) in enumerate(zip(first, results[v])):
                assert a.tobytes() == b.tobytes(), f"H={H}: output {i} differs between {values[0]} and {v} KiB"
        reference = run("numpy")  # the fallback, float64 by default
        for i, (got, want) in enumerate(zip(first, reference)):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=f"H={H}: output {i}")
