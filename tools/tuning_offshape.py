"""Tuned vs default parameters at shapes no benchmark or tuner workload uses (README, Tuning).

For each shape: the declared defaults, the configuration a format-1 cache file gave (its
nearest entry by batch only; the files in $CLNET_OLD_TUNING_DIR, default
/tmp/issue10/lead-cache) and what the current lookup gives with $CLNET_TUNING_DIR. Each
configuration is timed in alternating rounds (median of 5 medians of 5). Run under
`flock -x /work/bench.lock`. argv: device spec, off|in|own[, family]."""
import sys, os, glob, json, math, time, numpy as np, clnet
from clnet.conformance.rnn import make_cell
from clnet.opencl.tuning import FAMILIES
spec, which = sys.argv[1], sys.argv[2]
fam_only = sys.argv[3] if len(sys.argv) > 3 else None
be = clnet.get_backend(spec)
tun = be.tuning
old = None
for f in glob.glob(os.path.join(os.environ.get("CLNET_OLD_TUNING_DIR", "/tmp/issue10/lead-cache"), "*.json")):
    d = json.load(open(f))
    if d["identity"]["device"] == tun.identity["device"] and d["identity"]["driver"] == tun.identity["driver"]:
        old = d["entries"]
def before(fam, kind, B):
    rows = [r for r in old.get(fam, []) if r["shape"]["kind"] == kind]
    best = min(rows, key=lambda r: abs(math.log(r["shape"]["batch"]) - math.log(B)))
    d = tun.defaults_for(fam, kind=kind, batch=B)
    c = dict(d, **best["params"])
    return c if FAMILIES[fam].allowed(c, tun.props, {"kind": kind, "batch": B}) else d
OFF = [("rnn", "lstm", 13, 50, 100, 100), ("rnn", "lstm", 9, 40, 96, 40), ("rnn", "lstm", 48, 30, 160, 40),
       ("rnn", "lstm", 600, 64, 384, 6), ("rnn", "gru", 48, 30, 160, 40),
       ("bptt", "lstm", 24, 30, 96, 40), ("bptt", "lstm", 300, 40, 160, 12), ("bptt", "gru", 24, 30, 96, 40)]
IN = [("rnn", "lstm", 20, 40, 160, 40), ("rnn", "gru", 200, 40, 240, 10), ("rnn", "lstm", 800, 64, 224, 4),
      ("bptt", "lstm", 20, 30, 120, 40), ("bptt", "gru", 400, 40, 150, 8), ("bptt", "lstm", 100, 40, 150, 16)]
OWN = [("rnn", "lstm", 16, 48, 200, 16), ("rnn", "lstm", 1024, 48, 200, 8), ("rnn", "gru", 256, 48, 200, 16),
       ("bptt", "lstm", 16, 48, 136, 16), ("bptt", "lstm", 512, 48, 136, 16), ("bptt", "gru", 128, 48, 136, 16)]
rng = np.random.default_rng(7)
def work(fam, kind, B, I, H, T):
    cell = make_cell(kind, I, H, True, 3)
    xs = rng.normal(size=(T, B, I)).astype(np.float32) * 0.5
    if fam == "rnn":
        def run():
            st = cell.initial_state(B, backend=be, dtype="float32")
            return np.asarray(cell.sequence(xs, st))
    else:
        g = rng.normal(size=(T, B, H)).astype(np.float32)
        def run():
            return cell.backward_sequence(xs, None, None, g, backend=be, dtype="float32")
    return run
def med(run, n=5):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); run(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))
for case in {"off": OFF, "in": IN, "own": OWN}[which]:
    fam, kind, B, I, H, T = case
    if fam_only and fam != fam_only: continue
    cfgs = {"default": tun.defaults_for(fam, kind=kind, batch=B), "before": before(fam, kind, B),
            "after": tun.lookup(fam, kind=kind, batch=B, hidden=H)}
    run = work(*case)
    uniq = {}
    for name, cfg in cfgs.items():
        uniq.setdefault(tuple(sorted(cfg.items())), []).append(name)
    ts = {k: [] for k in uniq}
    for k in uniq:
        with tun.overriding(fam, dict(k)):
            run(); run()
    for rep in range(5):
        for k in uniq:
            with tun.overriding(fam, dict(k)):
                ts[k].append(med(run))
    res = {n: np.median(ts[k]) * 1e3 for k, names in uniq.items() for n in names}
    diff = lambda c: {a: v for a, v in c.items() if cfgs["default"][a] != v}
    print(f"{spec} {fam} {kind} B={B} I={I} H={H} T={T}: default {res['default']:.2f} before {res['before']:.2f} "
          f"({res['default']/res['before']:.2f}x) after {res['after']:.2f} ({res['default']/res['after']:.2f}x) "
          f"before={diff(cfgs['before'])} after={diff(cfgs['after'])}", flush=True)
