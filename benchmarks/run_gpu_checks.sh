#!/usr/bin/env bash
# One short run on a lent GPU: install what the CUDA backend needs, run the
# CUDA test suite directly on the device (no simulator), then the GPU
# benchmark within a time budget. Every step is logged; a failing step does
# not stop the others. Logs and results go to $OUT (or benchmarks/gpu_out).
#
#   bash benchmarks/run_gpu_checks.sh            # BENCH_SECONDS=200 by default
#   BENCH_SECONDS=120 bash benchmarks/run_gpu_checks.sh
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/gpu_out}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_checks.log"
BENCH_SECONDS="${BENCH_SECONDS:-200}"
PY="${PYTHON:-python}"
unset NUMBA_ENABLE_CUDASIM
status=0

step() {  # step NAME COMMAND...: run, log, remember a failure, go on
    local name="$1"; shift
    echo "=== [$(date +%H:%M:%S)] $name: $*" | tee -a "$LOG"
    local t0=$SECONDS
    "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || status=1
    return 0
}

step "gpu" nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step "python" "$PY" -c "import sys, numpy, numba; print(sys.version); print('numpy', numpy.__version__, 'numba', numba.__version__)"
if ! "$PY" -c "import numba_cuda" >/dev/null 2>&1; then
    step "install numba-cuda" "$PY" -m pip install --quiet "numba-cuda[cu12]>=0.20"
fi
# this checkout's evsim first, installed or not
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if "$PY" -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
    echo "torch with CUDA found: cuDNN GRU baseline" | tee -a "$LOG"
else
    echo "torch with CUDA not found: the dense baseline is evsim's kernel at 100 % activity" | tee -a "$LOG"
fi
step "cuda available" "$PY" -c "from numba import cuda; print(cuda.implementation if hasattr(cuda, 'implementation') else ''); cuda.detect(); from evsim.kernels import cuda as kc; kc.require(); print('evsim cuda backend: ok')"
step "cuda tests" "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -x \
    --junitxml="$OUT_DIR/test_cuda.xml"
step "benchmark" timeout $((BENCH_SECONDS + 120)) "$PY" benchmarks/gpu.py \
    --max-seconds "$BENCH_SECONDS" --out "$OUT_DIR/gpu_bench.json"
echo "=== done, overall status $status; log in $LOG" | tee -a "$LOG"
exit $status
