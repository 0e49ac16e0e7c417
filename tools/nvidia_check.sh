#!/usr/bin/env bash
# Tuning, conformance and benchmarks on an NVIDIA GPU through NVIDIA's OpenCL driver, in
# one run of a few minutes: the tuner first (its cache file is kept in OUTDIR/tuning), then
# the conformance suite on the tuned device and under every tunable configuration, then
# every benchmark with the device's untuned and tuned figures.
#
# Usage (from the repository root, on a machine with an NVIDIA GPU):
#   bash tools/nvidia_check.sh [OUTDIR]
# Wheels for a machine without a package index can be put in .whl/ (pyopencl, pytools,
# siphash24, platformdirs, neat-python); otherwise pip installs them as usual.
# If PyOpenCL finds no NVIDIA platform, the driver's libnvidia-opencl.so.1 is searched
# for and registered with the ICD loader through OCL_ICD_VENDORS.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/clnet-nvidia}}
mkdir -p "$OUT"
SITE=/tmp/clnet-site
export PYTHONUNBUFFERED=1

step() { echo; echo "=== $* ($(date +%T))"; }

step "install"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl || exit 1
else
    python3 -m pip install -q --target "$SITE" pyopencl neat-python || exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$SITE" . || exit 1
export PYTHONPATH="$SITE"
cd /tmp  # run from outside the checkout: the installed package, as a user would

step "find NVIDIA's OpenCL driver"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tail -n +1
if ! python3 -c "import pyopencl as cl, sys; sys.exit(0 if any('NVIDIA' in p.name for p in cl.get_platforms()) else 1)" 2>/dev/null; then
    lib=$( (ldconfig -p 2>/dev/null | grep -o '/.*libnvidia-opencl.so.1' ; \
            find /usr/local/nvidia /usr/lib /usr/lib64 /usr/local /lib -name 'libnvidia-opencl.so*' 2>/dev/null) | head -n 1)
    echo "NVIDIA platform not visible; driver library found at: ${lib:-none}"
    if [ -n "$lib" ]; then
        mkdir -p /tmp/clnet-icd && echo "$lib" > /tmp/clnet-icd/nvidia.icd
        export OCL_ICD_VENDORS=/tmp/clnet-icd
    fi
fi
echo "OCL_ICD_VENDORS=${OCL_ICD_VENDORS:-unset}"
python3 -m clnet info 2>&1 | tee "$OUT/info.txt"
SPEC=${SPEC:-opencl:nvidia}

export CLNET_TUNING_DIR="$OUT/tuning"
step "tune $SPEC"
timeout "${TUNE_S:-150}" python3 -m clnet tune --backend "$SPEC" --budget "${TUNE_BUDGET:-120}" --no-progress 2>&1 \
    | tee "$OUT/tune.txt"
python3 -m clnet info 2>&1 | grep "tuning of" | tee -a "$OUT/tune.txt"

step "conformance on $SPEC"
timeout "${CONFORMANCE_S:-120}" python3 -m clnet conformance --backend "$SPEC" --max-examples "${EXAMPLES:-10}" 2>&1 \
    | tee "$OUT/conformance.txt"
step "conformance on $SPEC, every tunable configuration"
timeout "${SWEEP_S:-150}" python3 -m clnet conformance --backend "$SPEC" --sweep --max-examples 2 2>&1 \
    | tail -n 25 | tee "$OUT/conformance_sweep.txt"

step "bench fnn"
timeout "${BENCH_S:-120}" python3 -m clnet bench fnn --backend "$SPEC" --repeat 3 --xor-generations 0 2>&1 | tee "$OUT/bench_fnn.txt"
step "bench rnn"
timeout "${BENCH_S:-120}" python3 -m clnet bench rnn --backend "$SPEC" --repeat 3 2>&1 | tee "$OUT/bench_rnn.txt"
step "bench pearson"
timeout "${BENCH_S:-120}" python3 -m clnet bench pearson --backend "$SPEC" --repeat 3 2>&1 | tee "$OUT/bench_pearson.txt"
step "bench bptt"
timeout "${BENCH_S:-120}" python3 -m clnet bench bptt --backend "$SPEC" --repeat 5 2>&1 | tee "$OUT/bench_bptt.txt"
step "demo memory"
timeout 30 python3 -m clnet demo memory --backend "$SPEC" 2>&1 | tee "$OUT/demo_memory.txt"
step "done"
